"""End to end through the CLI, tiny: pretrain, stats, probe (linear + prototypical), finetune, reconstruct."""
import json
from pathlib import Path

import pytest

from mae_audio.cli import main
from mae_audio.data import clear_cache

TINY = ["--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--decoder-embed-dim", "32", "--decoder-depth", "2",
        "--decoder-num-heads", "2", "--num-train", "24", "--num-test", "12", "--num-species", "3",
        "--target-length", "64", "--num-mel-bins", "64"]


def test_cli_end_to_end(tmp_path, capsys):
    clear_cache()
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), "--epochs", "2", "--batch-size", "8", "--no-progress",
                 "--seed", "0", *TINY]) == 0
    cfg = (run / "config.yaml").read_text()
    assert "norm_mean" in cfg and "norm_mean: null" not in cfg  # statistics stored with the run
    assert (run / "model.safetensors").exists() and (run / "pictures" / "reconstruction.png").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6
    assert main(["probe", "--run", str(run), "--probe", "linear,prototypical", "--probe-epochs", "3",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    probes = res.get("probe", res)
    assert "acc" in probes["linear"] and "acc" in probes["prototypical"]
    assert main(["finetune", "--run", str(run), "--epochs", "1", "--batch-size", "8", "--no-progress",
                 "--out", str(tmp_path / "ft")]) == 0
    assert "test_acc" in json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert main(["prototypes", "--run", str(run), "--epochs", "2", "--prototypes", "3", "--num", "1",
                 "--out", str(tmp_path / "proto")]) == 0
    assert len(list((tmp_path / "proto").glob("prototypes-*.png"))) == 1
    png = tmp_path / "rec.png"
    assert main(["reconstruct", "--run", str(run), "--out", str(png), "--num", "2"]) == 0
    assert png.stat().st_size > 1000


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert main(["pretrain", "--mask-strategy", "diagonal"]) == 2


def test_stats_command(tmp_path, capsys):
    import numpy as np
    import soundfile as sf
    import yaml

    clear_cache()
    rng = np.random.default_rng(0)
    for cl in ("a", "b"):
        (tmp_path / "d" / cl).mkdir(parents=True)
        for i in range(3):
            sf.write(tmp_path / "d" / cl / f"{i}.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
    out = tmp_path / "stats.yaml"
    assert main(["stats", "--data", str(tmp_path / "d"), "--target-length", "32", "--json", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from mae_audio.data import AudioFolder, AudioFolderConfig
    from mae_audio.features import dataset_stats
    clear_cache()
    ds = AudioFolder(AudioFolderConfig(path=str(tmp_path / "d"), target_length=32, norm_mean=0, norm_std=1), "train")
    mean, std = dataset_stats(ds.raw)
    assert res["norm_mean"] == pytest.approx(mean, abs=1e-3) and res["norm_std"] == pytest.approx(std, abs=1e-3)
    assert yaml.safe_load(out.read_text())["data"]["norm_std"] == res["norm_std"]
