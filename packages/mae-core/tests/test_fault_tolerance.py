"""Issue 3: distributed equivalence, exact resume after SIGKILL, atomic checkpoints, safe loading, bad input."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mae_core.checkpoint import list_checkpoints, load_checkpoint
from mae_core.cli import main

TINY = ["--img-size", "16", "--image-size", "16", "--patch-size", "4", "--embed-dim", "32", "--depth", "2",
        "--num-heads", "2", "--decoder-embed-dim", "16", "--decoder-depth", "1", "--decoder-num-heads", "2",
        "--num-train", "96", "--num-test", "16", "--no-progress", "--warmup-epochs", "0.5"]


def _cli(*args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mae_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def test_two_process_ddp_matches_one_process(tmp_path):
    common = [*TINY, "--max-steps", "10", "--epochs", "5", "--seed", "3", "--lr", "1e-3"]
    one = _cli("pretrain", "--out", str(tmp_path / "one"), "--batch-size", "16", *common)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _cli("pretrain", "--out", str(tmp_path / "two"), "--batch-size", "8", "--nproc", "2", *common)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-5, diff
    import yaml
    cfg = yaml.safe_load((tmp_path / "two" / "config.yaml").read_text())
    assert cfg["train"]["batch_size"] == 8


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    common = [*TINY, "--max-steps", "20", "--epochs", "10", "--batch-size", "16", "--checkpoint-every", "5",
              "--keep-last", "10", "--seed", "1"]
    full = _cli("pretrain", "--out", str(tmp_path / "full"), *common)
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "mae_core.cli", "pretrain", "--out", str(run), *common],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-00000010").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.safetensors").exists()  # it really died before the end
    resumed = _cli("pretrain", "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    a, b = _weights(tmp_path / "full"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


SAVER = textwrap.dedent("""
    import sys, torch
    from mae_core.checkpoint import save_checkpoint
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(24)])
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 512)).sum().backward(); opt.step()
    root = sys.argv[1]
    save_checkpoint(f"{root}/step-00000001", model, opt, state={"step": 1})
    print("ready", flush=True)
    step = 2
    while True:
        save_checkpoint(f"{root}/step-{step:08d}", model, opt, state={"step": step})
        step += 1
""")


def test_kill_during_save_leaves_previous_checkpoint_loadable(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = np.random.default_rng(0)
    for trial in range(3):
        root = tmp_path / f"ckpts{trial}"
        proc = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpts = list_checkpoints(root)
        assert ckpts and ckpts[0].name == "step-00000001"
        for c in ckpts:  # every checkpoint that looks complete loads
            state, _ = load_checkpoint(c)
            assert state["step"] == int(c.name.split("-")[1])


def _run_main(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def _npz(path, nan=False, channels=3):
    x = np.random.default_rng(0).uniform(0, 1, (40, 16, 16, channels)).astype(np.float32)
    if nan:
        x[7, 3, 3, 0] = np.nan
    np.savez(path, images=x, labels=np.arange(40) % 4)
    return path


@pytest.fixture
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["pretrain", "--out", str(run), *TINY, "--epochs", "1", "--max-steps", "2", "--batch-size", "16"]) == 0
    return run


def test_bad_input_table(tmp_path, capsys, trained_run):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    (corrupt / "cat").mkdir(parents=True)
    (corrupt / "cat" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("model:\n  embed_dimm: 64\n")
    gray = _npz(tmp_path / "gray.npz", channels=1)
    wrong_shape = tmp_path / "wrong_shape"
    import shutil
    shutil.copytree(trained_run, wrong_shape)
    cfg = (wrong_shape / "config.json").read_text().replace('"embed_dim": 32', '"embed_dim": 48')
    (wrong_shape / "config.json").write_text(cfg)
    rows = [
        (["pretrain", "--data", str(tmp_path / "missing"), "--out", str(out)], "missing: no such file or folder (--data)"),
        (["pretrain", "--data", str(empty), "--out", str(out)], str(empty)),
        (["pretrain", "--data", str(corrupt), "--out", str(out)], "a.png: cannot read image"),
        (["pretrain", "--config", str(bad_cfg), "--out", str(out)], "unknown key 'embed_dimm'"),
        (["pretrain", "--mask-ratio", "lots", "--out", str(out)], "model.mask_ratio: expected a number"),
        (["pretrain", "--data", str(_npz(tmp_path / "nan.npz", nan=True)), "--out", str(out)],
         "nan.npz: array 'images' contains NaN or inf (sample 7)"),
        (["probe", "--run", str(trained_run), "--data", str(gray), "--image-size", "16"], "has 1 channels but the model expects 3"),
        (["probe", "--run", str(wrong_shape)], "has shape"),
    ]
    for args, needle in rows:
        code, err = _run_main(args, capsys)
        assert code == 2, (args, err)
        assert needle in err, (args, err)
        assert len(err.splitlines()) == 1, err
        assert not out.exists(), args


def test_refuse_overwrite_and_unwritable(tmp_path, capsys, trained_run):
    code, err = _run_main(["pretrain", "--out", str(trained_run), *TINY], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _run_main(["pretrain", "--out", str(blocker / "run"), *TINY], capsys)
    assert code == 2 and ("not writable" in err or "not a directory" in err), err
    assert not (blocker / "run").exists()


def test_full_disk_is_an_error_before_training(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "run"
    code, err = _run_main(["pretrain", "--out", str(out), *TINY, "--epochs", "1", "--batch-size", "16"], capsys)
    assert code == 2 and "free on disk" in err
    assert not out.exists()


def test_non_finite_loss_keeps_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run_main(["pretrain", "--out", str(out), *TINY, "--epochs", "30", "--batch-size", "16",
                           "--lr", "1e6", "--checkpoint-every", "1"], capsys)
    assert code == 2 and "loss became" in err and "last good checkpoint" in err
    assert list_checkpoints(out / "checkpoints")
