import math

import pytest
import torch

from safetensors.torch import load_file

from mae_core.checkpoint import list_checkpoints
from mae_core.data import ShapesConfig, SyntheticShapes
from mae_core.errors import MaeError, NonFiniteLossError
from mae_core.eval import Classifier
from mae_core.layers import EMA
from mae_core.models.image_mae import ImageMAE
from mae_core.models.mae import ModelOutput
from mae_core.rundir import RunDir
from mae_core.train import EMACallback, Trainer, TrainConfig, cosine_lr, ema_momentum, param_groups, scaled_lr

from mae_core.testing import tiny_image_cfg as tiny_cfg


def test_lr_schedule_values():
    assert cosine_lr(0, 100, 10, 1.0) == 0.0
    assert cosine_lr(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert cosine_lr(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert cosine_lr(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_weight_decay_groups(tiny_model):
    groups = param_groups(tiny_model, 0.05)
    by_name = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert by_name["encoder.cls_token"] == 0.0
    assert by_name["decoder.mask_token"] == 0.0
    assert by_name["encoder.blocks.0.norm1.weight"] == 0.0
    assert by_name["encoder.blocks.0.attn.qkv.bias"] == 0.0
    assert by_name["encoder.blocks.0.attn.qkv.weight"] == 0.05
    tiny_model.decay_all_params = True  # a method whose reference code decays everything
    try:
        groups = param_groups(tiny_model, 0.05)
    finally:
        del tiny_model.decay_all_params
    assert all(g["weight_decay"] == 0.05 for g in groups)
    assert sum(len(g["names"]) for g in groups) == len(list(tiny_model.parameters()))


def test_layer_decay_groups(tiny_model):
    clf = Classifier(tiny_model, 5)
    groups = param_groups(clf, 0.05, layer_decay=0.5, layer_id=clf.layer_id, num_layers=clf.num_layers())
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    depth = 2  # num_layers = depth + 1 = 3
    assert scale["backbone.patch_embed.proj.weight"] == pytest.approx(0.5 ** 3)  # layer 0
    assert scale["backbone.encoder.cls_token"] == pytest.approx(0.5 ** 3)
    assert scale["backbone.encoder.blocks.0.mlp.fc1.weight"] == pytest.approx(0.5 ** 2)  # layer 1
    assert scale["backbone.encoder.blocks.1.mlp.fc1.weight"] == pytest.approx(0.5 ** 1)  # layer 2
    assert scale["head.weight"] == pytest.approx(1.0)  # last layer
    assert clf.num_layers() == depth + 1


def _trainer(tmp_path, **kw):
    torch.manual_seed(0)
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=64, num_test=8))
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 16, "progress": False, "warmup_epochs": 0.5, "log_every": 1,
                         **kw})
    return Trainer(ImageMAE(tiny_cfg()), ds, cfg, run_dir=RunDir(tmp_path / "run"))


def test_trainer_sets_lr_per_iteration_and_logs(tmp_path):
    t = _trainer(tmp_path, lr=1e-3)
    summary = t.fit()
    assert summary["steps"] == 8
    lrs = [r["lr"] for r in t.history if "loss" in r]
    assert lrs[0] == pytest.approx(0.0) and max(lrs) == pytest.approx(1e-3, rel=1e-6)
    assert lrs[-1] < lrs[3]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_trainer_accumulation_and_lr_rule(tmp_path):
    t = _trainer(tmp_path, accum_steps=2, base_lr=1e-3)
    assert t.effective_batch == 32 and t.lr == pytest.approx(1e-3 * 32 / 256)
    assert t.fit()["steps"] == 4


def test_keep_last_incomplete_batch(tmp_path):
    from mae_core.train.distributed import GlobalBatchSampler

    t = _trainer(tmp_path, batch_size=24, drop_last=False)  # 64 samples: batches of 24, 24, 16
    assert t.steps_per_epoch == 3 and t.fit()["steps"] == 6
    sizes = [len(b["label"]) for b in t._loader()]
    assert sizes == [24, 24, 16]
    sampler = GlobalBatchSampler(10, 4, drop_last=False, seed=1)
    assert sorted(sampler) == list(range(10)) and len(sampler) == 10
    assert len(list(GlobalBatchSampler(10, 4, drop_last=True))) == 8


def test_non_finite_loss_guard(tmp_path):
    t = _trainer(tmp_path, lr=1e-3)
    t.dataset.images[3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        t.fit()


def test_bf16_autocast_runs(tmp_path):
    t = _trainer(tmp_path, amp="bf16", max_steps=2)
    assert math.isfinite(t.fit()["final_loss"])


# ---- trainer hooks: progress, callbacks, EMA ----------------------------------------------------------------------
class ProgressProbe(torch.nn.Module):
    """A model part that reads the training progress (a mask-ratio schedule would)."""

    def __init__(self):
        super().__init__()
        self.seen: list[float] = []

    def set_progress(self, p: float) -> None:
        self.seen.append(p)


class EMAStudent(torch.nn.Module):
    """Image MAE whose encoder also regresses an EMA copy of itself on all tokens (a data2vec-like toy)."""

    def __init__(self, ema_in_model: bool):
        super().__init__()
        self.mae = ImageMAE(tiny_cfg())
        self.ema = EMA(self.mae.encoder) if ema_in_model else None
        self.probe = ProgressProbe()

    def forward(self, batch, generator=None):
        out = self.mae(batch, generator=generator)
        if self.ema is None:
            return out
        tokens, pos = self.mae.tokenize(batch)
        x = self.mae.embed_tokens(tokens)
        target = self.ema(x, pos)
        return ModelOutput(loss=out.loss + ((self.mae.encoder(x, pos) - target) ** 2).mean(), pred=out.pred,
                           mask=out.mask)


class Interrupt(Exception):
    pass


class InterruptAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            raise Interrupt(trainer.step)


def _ema_run(tmp_path, ema_in_model, interrupt_at=None, resume=False, name="run"):
    torch.manual_seed(0)
    model = EMAStudent(ema_in_model)
    ema = model.ema if ema_in_model else EMA(model.mae.encoder)
    callbacks = [EMACallback(ema, model.mae.encoder, momentum=0.9, schedule="cosine")]
    if interrupt_at:
        callbacks.append(InterruptAt(interrupt_at))
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=48, num_test=8))  # 3 steps per epoch
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, lr=1e-3, warmup_epochs=0.5, checkpoint_every=2,
                      keep_last=10)
    t = Trainer(model, ds, cfg, run_dir=RunDir(tmp_path / name, resume=resume), callbacks=callbacks)
    if interrupt_at:
        with pytest.raises(Interrupt):
            t.fit()
    else:
        t.fit(resume_from=t.latest_checkpoint() if resume else None)
    return model, ema, t


@pytest.mark.parametrize("ema_in_model", [True, False])
def test_ema_run_interrupted_and_resumed_is_bit_identical(tmp_path, ema_in_model):
    full, full_ema, t_full = _ema_run(tmp_path, ema_in_model, name="full")
    assert t_full.step == 6 and full.probe.seen == [k / 6 for k in range(6)]
    _ema_run(tmp_path, ema_in_model, interrupt_at=5)  # dies after step 5; the last checkpoint is step 4
    resumed, res_ema, t_res = _ema_run(tmp_path, ema_in_model, resume=True)
    assert t_res.step == 6 and resumed.probe.seen == [4 / 6, 5 / 6]  # progress restored from the step
    assert t_res.callbacks[0].last_momentum == pytest.approx(1 - 0.1 * (1 + math.cos(math.pi * 5 / 6)) / 2)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = full_ema.state_dict(), res_ema.state_dict()
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    initial = EMAStudent(False).mae.encoder.state_dict()
    assert not torch.equal(ea["module.norm.weight"], full.mae.encoder.state_dict()["norm.weight"])  # lags behind
    assert any(not torch.equal(ea[f"module.{k}"], v) for k, v in initial.items())  # and did move
    saved = load_file(str(t_full.latest_checkpoint() / "train_state.safetensors"))
    again = load_file(str(t_res.latest_checkpoint() / "train_state.safetensors"))
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)  # moments, RNG
    assert any(k.startswith("callback.0.") for k in saved) != ema_in_model  # saved once, in one place


def test_resume_without_saved_callback_state_is_an_error(tmp_path):
    t = _trainer(tmp_path, max_steps=1)
    t.fit()
    ema = EMA(t.raw_model.encoder)
    t2 = Trainer(t.raw_model, t.dataset, t.config, run_dir=t.run_dir, callbacks=[EMACallback(ema, t.raw_model.encoder)])
    with pytest.raises(MaeError, match="no saved state for callback 0 \\(EMACallback\\)"):
        t2.fit(resume_from=t.latest_checkpoint())


def test_set_progress_before_every_forward_with_accumulation(tmp_path):
    torch.manual_seed(0)
    model = ImageMAE(tiny_cfg())
    model.probe = probe = ProgressProbe()
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=64, num_test=8))
    # 64 samples / 16 = 4 micro-batches = 2 optimizer steps per epoch, 4 in all
    t = Trainer(model, ds, TrainConfig(epochs=2, batch_size=16, accum_steps=2, progress=False), RunDir(tmp_path / "r"))
    assert t.progress == 0.0 and t.progress_modules == [probe]
    t.fit()
    assert probe.seen == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75] and t.progress == 1.0


def test_callbacks_run_in_order_after_each_optimizer_step(tmp_path):
    events = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def on_fit_start(self, trainer):
            events.append((self.name, "start", trainer.step))

        def on_step_end(self, trainer):
            w = trainer.raw_model.encoder.blocks[0].attn.qkv.weight
            grads = [p.grad for p in trainer.raw_model.parameters()]
            events.append((self.name, trainer.step, trainer.progress, w.detach().clone(),
                           all(g is None for g in grads)))

    t = _trainer(tmp_path, checkpoint_every=1, keep_last=100, warmup_epochs=0)  # lr > 0 from step 1
    t.callbacks = [Recorder("a"), Recorder("b")]
    w0 = t.raw_model.encoder.blocks[0].attn.qkv.weight.detach().clone()
    t.fit()
    assert events[:2] == [("a", "start", 0), ("b", "start", 0)]
    steps = events[2:]
    assert [(e[0], e[1]) for e in steps] == [(n, s) for s in range(1, 9) for n in "ab"]
    assert [e[2] for e in steps] == [s / 8 for s in range(1, 9) for _ in "ab"]
    assert all(e[4] for e in steps)  # gradients already cleared
    ckpts = {int(c.name.split("-")[1]): c for c in list_checkpoints(t.run_dir.checkpoints)}
    key = "encoder.blocks.0.attn.qkv.weight"
    for s in range(1, 9):
        w = steps[2 * (s - 1)][3]
        assert torch.equal(w, load_file(str(ckpts[s] / "model.safetensors"))[key])  # the updated weights
        before = w0 if s == 1 else load_file(str(ckpts[s - 1] / "model.safetensors"))[key]
        assert not torch.equal(w, before)


def test_ema_update_and_schedule_known_values():
    torch.manual_seed(0)
    src = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout(0.5))
    ema = EMA(src)
    e0 = ema.module[0].weight.clone()
    with torch.no_grad():
        src[0].weight.add_(1.0)
        src[1].running_mean.fill_(3.0)
    ema.update(src, 0.75)
    assert torch.allclose(ema.module[0].weight, 0.75 * e0 + 0.25 * src[0].weight)
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))  # buffers copied
    assert all(not p.requires_grad for p in ema.parameters())
    holder = torch.nn.Module()
    holder.net, holder.ema = src, ema
    names = [n for g in param_groups(holder, 0.05) for n in g["names"]]
    assert names and not any(n.startswith("ema.") for n in names)
    holder.train()
    assert src.training and not ema.training and not ema.module[2].training
    with pytest.raises(ValueError, match="do not match"):
        ema.update(torch.nn.Linear(3, 2), 0.5)
    assert ema_momentum(0.0, 0.996, "cosine") == pytest.approx(0.996)
    assert ema_momentum(0.5, 0.996, "cosine") == pytest.approx(0.998)
    assert ema_momentum(1.0, 0.996, "cosine") == pytest.approx(1.0)
    assert ema_momentum(0.3, 0.99, "constant") == 0.99
