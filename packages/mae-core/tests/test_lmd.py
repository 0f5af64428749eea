"""Issue 25: the generic mask-ratio schedule (``--mask-schedule``) and LMD (an MAE over the latent grid of a frozen
autoencoder that the library trains first): schedule values against the reference's formula, the schedule driving a
method other than LMD, exact resume with the schedule on, latent targets, the frozen autoencoder kept outside the
weights and checkpoints, the cached default autoencoder, and the CLI."""
import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

import mae_core
from mae_core.data import ShapesConfig, SyntheticShapes
from mae_core.data.utils import collate_dicts
from mae_core.errors import MaeError
from mae_core.eval import Classifier
from mae_core.masking import MaskRatioSchedule, scheduled_mask_ratio
from mae_core.models.image_mae import ImageMAE
from mae_core.models.lmd import LMD, LMDConfig
from mae_core.rundir import RunDir
from mae_core.runconfig import resolve_run_config
from mae_core.testing import single_thread, tiny_image_cfg
from mae_core.train import Trainer, TrainConfig

SMALL = dict(img_size=16, patch_size=2, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
             decoder_num_heads=2, latent_downsample=2, ae_width=4, autoencoder="random")


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def reference_cosine(steps: int, low=0.15, high=0.75, s=0.008) -> list[float]:
    """LMD's ``engine_pretrain.cosine_schedule`` (float64, ``steps + 1`` values), restated."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    x = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
    return (low + (high - low) * (1 - x / x[0])).tolist()


def test_schedule_values_match_the_reference_and_by_hand():
    total = 30  # the reference: cosine over int(30 * 2 / 3) = 20 steps, then 0.75
    ref = reference_cosine(20)
    for step in range(total):
        want = ref[step] if step <= total * 2 / 3 else 0.75
        assert scheduled_mask_ratio(step / total, "cosine") == pytest.approx(want, abs=1e-12)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert scheduled_mask_ratio(1 / 3, "cosine") == pytest.approx(0.15 + 0.6 * (1 - f(0.5) / f(0)))
    assert scheduled_mask_ratio(0.0, "cosine") == 0.15 and scheduled_mask_ratio(0.9, "cosine") == 0.75
    assert scheduled_mask_ratio(0.25, "linear", 0.2, 0.8, 0.5) == pytest.approx(0.5)
    assert scheduled_mask_ratio(0.3, "constant", 0.2, 0.6) == 0.6
    with pytest.raises(MaeError, match="mask schedule must be one of"):
        scheduled_mask_ratio(0.1, "step")


def test_schedule_drives_the_image_mae_and_ends_at_its_ratio(tmp_path):
    torch.manual_seed(0)
    model = ImageMAE(tiny_image_cfg(mask_ratio=0.6))
    seen = []
    make_mask = model.make_mask
    model.make_mask = lambda *a, **k: seen.append(make_mask(*a, **k).mask.mean().item()) or make_mask(*a, **k)
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=64, num_test=8))  # 4 steps per epoch
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, log_every=1, mask_schedule="linear",
                      mask_schedule_start=0.1, mask_schedule_fraction=0.5)
    t = Trainer(model, ds, cfg, RunDir(tmp_path / "r"))
    t.fit()
    want = [scheduled_mask_ratio(k / 8, "linear", 0.1, 0.6, 0.5) for k in range(8)]  # ends at the model's 0.6
    assert [r["mask_ratio"] for r in t.history] == pytest.approx(want)
    assert seen == pytest.approx([1 - int(16 * (1 - r)) / 16 for r in want])  # the masks follow (16 patches)
    assert model.config.mask_ratio == 0.6


def test_schedule_needs_a_ratio_and_finetuning_turns_it_off():
    clf = Classifier(ImageMAE(tiny_image_cfg()), 3)
    with pytest.raises(MaeError, match="train.mask_schedule: Classifier has no mask ratio"):
        MaskRatioSchedule(clf)
    assert resolve_run_config("lmd").train.mask_schedule == "cosine"
    assert resolve_run_config("lmd", base="finetune").train.mask_schedule == "constant"
    assert resolve_run_config("image-mae", overrides={"mask_schedule": "cosine"}).train.mask_schedule == "cosine"


class Interrupt(Exception):
    pass


class InterruptAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            raise Interrupt(trainer.step)


def _run(tmp_path, method, name, interrupt_at=None, resume=False):
    torch.manual_seed(0)
    model = LMD(LMDConfig(**SMALL)) if method == "lmd" else ImageMAE(tiny_image_cfg())
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=48, num_test=8))  # 3 steps per epoch
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, lr=1e-3, warmup_epochs=0.5, checkpoint_every=2,
                      keep_last=10, log_every=1, mask_schedule="cosine")
    t = Trainer(model, ds, cfg, run_dir=RunDir(tmp_path / name, resume=resume),
                callbacks=[InterruptAt(interrupt_at)] if interrupt_at else None)
    if interrupt_at:
        with pytest.raises(Interrupt):
            t.fit()
    else:
        t.fit(resume_from=t.latest_checkpoint() if resume else None)
    return model, t


@pytest.mark.parametrize("method", ["lmd", "image-mae"])
def test_interrupted_and_resumed_run_with_the_schedule_is_bit_identical(tmp_path, method):
    full, t_full = _run(tmp_path, method, "full")
    _run(tmp_path, method, "run", interrupt_at=5)  # dies after step 5; the last checkpoint is step 4
    resumed, t_res = _run(tmp_path, method, "run", resume=True)
    assert [r["mask_ratio"] for r in t_res.history] == [r["mask_ratio"] for r in t_full.history][4:]
    assert len({r["mask_ratio"] for r in t_full.history}) == 5  # the ratio did change (0.75 from step 5 on)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _batch(n=4):
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=n, num_test=2))
    return collate_dicts([ds[i] for i in range(n)])


def test_latent_targets_are_the_frozen_encoder_output_patchified():
    torch.manual_seed(0)
    model = LMD(LMDConfig(**SMALL, norm_pix_loss=False))
    batch = _batch()
    z = model.autoencoder.model.latents(batch["image"])  # (4, 4, 8, 8)
    assert z.shape == (4, 4, 8, 8)
    # the reference's patchify: (N, C, h p, w p) -> nchpwq -> nhwpqc -> (N, h w, p p C)
    want = torch.einsum("nchpwq->nhwpqc", z.reshape(4, 4, 4, 2, 4, 2)).reshape(4, 16, 16)
    assert torch.equal(model.target(batch), want)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    per_patch = ((out.pred - want) ** 2).mean(-1)
    assert out.loss.item() == pytest.approx(((per_patch * out.mask).sum() / out.mask.sum()).item(), rel=1e-6)
    assert out.mask.sum(1).tolist() == [12.0] * 4  # int(16 * 0.25) = 4 of 16 latent patches visible


def test_autoencoder_is_frozen_and_outside_the_weights_and_checkpoints(tmp_path):
    ae_run = mae_core.pretrain("latent-ae", out=str(tmp_path / "ae"), max_steps=1, epochs=1, batch_size=4,
                               image_size=16, num_train=8, num_test=2, width=4, downsample=2, progress=False)
    ae_weights = {k: v.clone() for k, v in ae_run.model.state_dict().items()}
    run = mae_core.pretrain("lmd", out=str(tmp_path / "lmd"), epochs=2, batch_size=4, image_size=16, num_train=8,
                            num_test=2, progress=False, autoencoder=str(tmp_path / "ae"),
                            **{k: v for k, v in SMALL.items() if k not in ("autoencoder", "ae_width")})
    model = run.model
    assert model.config.autoencoder == str(tmp_path / "ae")
    assert len(model.config.autoencoder_sha256) == 64
    names = set(model.state_dict()) | {n for n, _ in model.named_parameters()}
    assert not any("autoencoder" in n for n in names)
    fresh = LMD(dataclasses.replace(model.config, autoencoder="random"))  # the autoencoder never loaded
    assert fresh.state_dict().keys() == model.state_dict().keys()
    ckpt = sorted((tmp_path / "lmd" / "checkpoints").iterdir())[-1]
    for f in ("model.safetensors", "train_state.safetensors"):
        assert not any(k.startswith(("autoencoder", "_autoencoder")) for k in load_file(str(ckpt / f)))
    saved = load_file(str(tmp_path / "lmd" / "model.safetensors"))
    assert saved.keys() == model.state_dict().keys()
    model.train()
    ae = model.autoencoder.model
    assert not ae.training and not any(p.requires_grad for p in ae.parameters())
    trained_ae = model.autoencoder.model.state_dict()  # training did not move the autoencoder
    assert all(torch.equal(trained_ae[k], ae_weights[k]) for k in ae_weights)
    (tmp_path / "ae" / "model.safetensors").write_bytes(b"changed")
    back = mae_core.from_pretrained(tmp_path / "lmd")
    with pytest.raises(MaeError, match="differs from the recorded teacher hash"):
        back.encode(_batch())


def test_reconstruction_decodes_latents_with_the_frozen_decoder():
    torch.manual_seed(0)
    model = LMD(LMDConfig(**SMALL)).eval()
    images = _batch()["image"]
    ceiling = model.autoencoder.model.decode_latents(model.autoencoder.model.latents(images))
    model.mask_ratio = 0.0  # nothing masked: the picture is the decoder on the true latents
    r = model.reconstruct_images(images, torch.Generator().manual_seed(0))
    assert torch.allclose(r["ceiling"], ceiling) and torch.allclose(r["recon"], ceiling, atol=1e-5)
    model.mask_ratio = 0.75
    r = model.reconstruct_images(images, torch.Generator().manual_seed(0))
    assert r["mask"].shape == images.shape and r["mask"].mean().item() == pytest.approx(0.75)
    assert not torch.allclose(r["recon"], ceiling, atol=1e-3)


def test_default_autoencoder_is_trained_once_then_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAE_TEACHER_CACHE", str(tmp_path / "cache"))
    ds = mae_core.create_dataset("shapes", "train", image_size=16, num_train=8, num_test=2)
    data = dict(image_size=16, num_train=8, num_test=2)
    over = {k: v for k, v in SMALL.items() if k != "autoencoder"}
    torch.manual_seed(0)
    first = mae_core.create_model("lmd", dataset=ds, data_config=data, ae_epochs=1, **over)
    assert "training the default latent autoencoder" in capsys.readouterr().out
    torch.manual_seed(0)
    second = mae_core.create_model("lmd", dataset=ds, data_config=data, ae_epochs=1, **over)
    assert "teacher: cached latent autoencoder" in capsys.readouterr().out
    assert first.config.autoencoder == second.config.autoencoder
    assert first.config.autoencoder.startswith(str(tmp_path / "cache"))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_cli_pretrain_probe_and_reconstruct_of_lmd(tmp_path, monkeypatch, capsys):
    from mae_core.cli import main

    monkeypatch.setenv("MAE_TEACHER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    tiny = ["--image-size", "16", "--num-train", "16", "--num-test", "8", "--batch-size", "8", "--embed-dim", "32",
            "--depth", "1", "--num-heads", "2", "--decoder-embed-dim", "16", "--decoder-num-heads", "2",
            "--latent-downsample", "2", "--ae-width", "4", "--ae-epochs", "1", "--no-progress"]
    assert main(["pretrain", "--method", "lmd", "--epochs", "1", "--out", str(run), *tiny]) == 0
    assert (run / "pictures" / "reconstruction.png").exists()
    assert json.loads((run / "config.json").read_text())["config"]["autoencoder_sha256"]
    assert main(["probe", "--run", str(run), "--probe-epochs", "1", "--no-progress"]) == 0
    assert main(["reconstruct", "--run", str(run), "--num", "2"]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--method", "lmd", "--mask-schedule", "step", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mask-schedule" in err[0]


@pytest.mark.slow  # about 30 s: tiny pretrain + probe + scores of the three runs
def test_benchmark_script_runs_and_tabulates(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "core_lmd.py"
    tiny = {"image_size": 16, "num_train": 32, "num_test": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
            "decoder_embed_dim": 16, "decoder_num_heads": 2, "probe_epochs": 1}
    env = {**os.environ, "MAE_TEACHER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--steps", "6", "--batch-size", "8",
                    "--runs", "pixel", "latent-schedule", "--set",
                    json.dumps({**tiny, "latent_downsample": 2, "ae_width": 4, "ae_epochs": 1})],
                   check=True, env=env, capture_output=True)
    text = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--table"], check=True,
                          capture_output=True, text=True).stdout
    assert "| pixel | 6 | 0 |" in text and "| latent-schedule | 2 | 0 |" in text
