"""Attention maps on request, the frozen teacher inside a trained student, and its reload from a recorded path."""
import hashlib
import json
from dataclasses import asdict, dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

import mae_core.image  # noqa: F401  (registers image-mae for from_pretrained)
from mae_core.checkpoint import list_checkpoints, save_pretrained
from mae_core.data import ShapesConfig, SyntheticShapes
from mae_core.errors import MaeError
from mae_core.layers import Attention, Block
from mae_core.layers import blocks as blocks_mod
from mae_core.models.mae import ModelOutput
from mae_core.registry import build_model
from mae_core.rundir import RunDir
from mae_core.teacher import FrozenTeacher
from mae_core.testing import tiny_image_cfg
from mae_core.train import Trainer, TrainConfig


# ---- attention maps ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("qk_norm", [False, True])
def test_explicit_attention_equals_sdpa_and_respects_masks(qk_norm):
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qk_norm=qk_norm).eval()
    x = torch.randn(3, 7, 32)
    ref = attn(x)
    out, probs = attn(x, return_attention=True)
    assert probs.shape == (3, 4, 7, 7)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 4, 7), atol=1e-6)
    # bool mask (True = may attend): a causal mask leaves exact zeros above the diagonal
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    out_m, probs_m = attn(x, attn_mask=causal, return_attention=True)
    assert torch.allclose(out_m, attn(x, attn_mask=causal), atol=1e-6)
    assert probs_m[..., ~causal].abs().max() == 0
    assert torch.allclose(probs_m[:, :, 0, 0], torch.ones(3, 4))  # the first token can only see itself
    assert torch.allclose(probs_m.sum(-1), torch.ones(3, 4, 7), atol=1e-6)
    # additive float mask, per sample and head
    bias = torch.randn(3, 4, 7, 7)
    bias[..., 2] = float("-inf")
    out_f, probs_f = attn(x, attn_mask=bias, return_attention=True)
    assert torch.allclose(out_f, attn(x, attn_mask=bias), atol=1e-6)
    assert probs_f[..., 2].abs().max() == 0
    # memory slots: the maps cover the extra keys too
    ek, ev = torch.randn(3, 4, 2, 8), torch.randn(3, 4, 2, 8)
    out_e, probs_e = attn(x, extra_kv=(ek, ev), return_attention=True)
    assert probs_e.shape == (3, 4, 7, 9) and torch.allclose(out_e, attn(x, extra_kv=(ek, ev)), atol=1e-6)


def test_attention_probs_hand_computed():
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # (1, 1, 2, 2)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    scale = 2 ** -0.5
    row0 = torch.softmax(torch.tensor([scale, 0.0]), 0)
    row1 = torch.softmax(torch.tensor([0.0, 2 * scale]), 0)
    assert torch.allclose(blocks_mod.attention_probs(q, k)[0, 0], torch.stack([row0, row1]))


def test_default_path_never_computes_explicit_attention(monkeypatch):
    torch.manual_seed(0)
    model = build_model("image-mae", tiny_image_cfg())
    batch = {"image": torch.randn(2, 3, 16, 16)}
    expected = model(batch, generator=torch.Generator().manual_seed(0)).loss

    def boom(*a, **k):
        raise AssertionError("explicit attention computed on the default path")
    monkeypatch.setattr(blocks_mod, "attention_probs", boom)
    assert torch.equal(model(batch, generator=torch.Generator().manual_seed(0)).loss, expected)
    with pytest.raises(AssertionError, match="explicit attention"):
        model.encoder(torch.randn(2, 16, 32), attn_blocks=[0])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_encoder_returns_chosen_attention_maps(checkpointing):
    torch.manual_seed(0)
    model = build_model("image-mae", tiny_image_cfg(depth=3))
    enc = model.encoder
    enc.grad_checkpointing = checkpointing
    x = torch.randn(2, 16, 32, requires_grad=True)
    plain = enc(x)
    seen = {}
    hooks = [blk.attn.register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(j, o)) for j, blk in
             enumerate(enc.blocks)]
    y, taps, attns = enc(x, taps=[1], attn_blocks=[-1, 0])
    for h in hooks:
        h.remove()
    assert torch.allclose(y, plain, atol=1e-6) and len(attns) == 2
    assert isinstance(seen[2], tuple) and isinstance(seen[0], tuple) and not isinstance(seen[1], tuple)
    assert torch.equal(attns[0], seen[2][1]) and torch.equal(attns[1], seen[0][1])
    assert attns[0].shape == (2, 2, 17, 17)
    cls = enc.cls_attention(attns[0])
    assert torch.equal(cls, attns[0][:, :, 0, 1:])
    assert torch.allclose(cls.sum(-1) + attns[0][:, :, 0, 0], torch.ones(2, 2), atol=1e-6)
    y.sum().backward()  # gradients flow through the explicit path (and the checkpointed one)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # Block alone: same output with and without the maps
    blk = Block(32, 2).eval()
    z = torch.randn(2, 5, 32)
    zb, maps = blk(z, return_attention=True)
    assert torch.allclose(zb, blk(z), atol=1e-6) and maps.shape == (2, 2, 5, 5)


# ---- frozen teacher -----------------------------------------------------------------------------------------------
@dataclass
class DistillConfig:
    teacher: str | None = None
    teacher_sha256: str | None = None
    align_weight: float = 1.0


class DistillStudent(nn.Module):
    """A toy MR-MAE-like student: the MAE loss plus aligning its visible tokens with the teacher's last block."""

    method_name = "toy-distill"

    def __init__(self, config: DistillConfig):
        super().__init__()
        self.config = config
        self.mae = build_model("image-mae", tiny_image_cfg())
        self.teacher = FrozenTeacher.from_config(config)
        self.align = nn.Linear(32, 32)
        self.teacher_modes: list[bool] = []

    def forward(self, batch, generator=None):
        out = self.mae(batch, generator=generator)
        t = self.teacher(batch, layers=[-1], attention=[-1])
        self.teacher_modes.append(self.teacher.model.training or any(m.training for m in self.teacher.model.modules()))
        assert not t.features[0].requires_grad and t.cls_attention[0].shape == (batch["image"].shape[0], 2, 16)
        student = self.mae.forward_features(batch)
        loss = out.loss + self.config.align_weight * F.mse_loss(self.align(student), t.features[0])
        return ModelOutput(loss=loss, pred=out.pred, mask=out.mask)


def _teacher_dir(tmp_path):
    torch.manual_seed(1)
    model = build_model("image-mae", tiny_image_cfg())
    return save_pretrained(model, tmp_path / "teacher"), model


def _fit(student, tmp_path, name="run", **kw):
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=32, num_test=8))
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 16, "progress": False, "lr": 1e-3, "warmup_epochs": 0.5,
                         "log_every": 1, "checkpoint_every": 2, **kw})
    trainer = Trainer(student, ds, cfg, run_dir=RunDir(tmp_path / name))
    trainer.fit()
    return trainer


def test_frozen_teacher_survives_training_and_stays_out_of_the_weights(tmp_path):
    tdir, source = _teacher_dir(tmp_path)
    student = DistillStudent(DistillConfig(teacher=str(tdir)))
    teacher = student.teacher
    assert student.config.teacher_sha256 == hashlib.sha256((tdir / "model.safetensors").read_bytes()).hexdigest()
    assert teacher.source == str(tdir.resolve()) and teacher.record()["teacher"] == str(tdir.resolve())
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    t_params = {id(p) for p in teacher.model.parameters()}
    trainer = _fit(student, tmp_path)
    assert trainer.step == 4 and len(student.teacher_modes) == 4 and not any(student.teacher_modes)
    assert student.training and not teacher.training and not teacher.model.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())
    # not in parameters / optimizer / state_dict / checkpoints / save_pretrained, but the student did train
    assert not t_params & {id(p) for p in student.parameters()}
    assert not t_params & {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    own = set(student.state_dict())
    assert own and all(k.startswith(("mae.", "align.")) for k in own)
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert ckpts and all(set(load_file(str(c / "model.safetensors"))) == own for c in ckpts)
    out = save_pretrained(student, tmp_path / "student")
    assert set(load_file(str(out / "model.safetensors"))) == own
    # the saved config pins the teacher; rebuilding the student from it reloads the same teacher
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["teacher"] == str(tdir) and cfg["teacher_sha256"] == teacher.sha256
    again = DistillStudent(DistillConfig(**cfg))
    assert again.teacher.sha256 == teacher.sha256
    assert all(torch.equal(before[k], v) for k, v in again.teacher.model.state_dict().items())


def test_teacher_follows_device_and_dtype_moves(tmp_path):
    tdir, _ = _teacher_dir(tmp_path)
    student = DistillStudent(DistillConfig(teacher=str(tdir)))
    student.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in student.teacher.model.parameters())
    out = student.teacher({"image": torch.randn(2, 3, 16, 16, dtype=torch.float64)}, layers=[0])
    assert out.features[0].dtype == torch.float64
    student.to("meta")
    assert all(p.device.type == "meta" for p in student.teacher.model.parameters())
    assert all(b.device.type == "meta" for b in student.teacher.model.buffers())


def test_teacher_hash_mismatch_and_missing_path_are_one_line_errors(tmp_path):
    tdir, _ = _teacher_dir(tmp_path)
    good = FrozenTeacher.from_path(tdir).sha256
    with pytest.raises(MaeError, match="differs from the recorded teacher hash") as err:
        DistillStudent(DistillConfig(teacher=str(tdir), teacher_sha256="0" * 64))
    assert "\n" not in str(err.value) and str(tdir / "model.safetensors") in str(err.value)
    with pytest.raises(MaeError, match="teacher checkpoint not found") as err:
        FrozenTeacher.from_path(tmp_path / "nowhere", expected_hash=good)
    assert "\n" not in str(err.value)
    assert FrozenTeacher.from_path(tdir / "model.safetensors", expected_hash=good.upper()).sha256 == good


def test_teacher_from_foreign_checkpoint(tmp_path):
    torch.manual_seed(2)
    ref = build_model("image-mae", tiny_image_cfg())
    path = tmp_path / "release.pth"
    torch.save({"model": ref.state_dict()}, path)
    torch.manual_seed(3)
    teacher = FrozenTeacher.from_path(path, model=build_model("image-mae", tiny_image_cfg()))
    assert teacher.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in ref.state_dict().items())
    with pytest.raises(MaeError, match="needs the model"):
        FrozenTeacher.from_path(path)
    batch = {"image": torch.randn(2, 3, 16, 16)}
    ref.eval()
    out = teacher(batch, layers=[0, -1], norm=True)
    with torch.no_grad():
        tokens, pos = ref.tokenize(batch)
        last, taps = ref.encoder(ref.embed_tokens(tokens), pos, taps=[0, -1])
    assert torch.equal(out.last, last) and torch.equal(out.features[1], ref.encoder.norm(taps[1]))
    teacher.model.train()  # even a direct call cannot leave it in training mode for a forward
    teacher(batch)
    assert not teacher.model.training
