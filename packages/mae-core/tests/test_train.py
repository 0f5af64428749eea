import math

import pytest
import torch

from mae_core.data import ShapesConfig, SyntheticShapes
from mae_core.errors import NonFiniteLossError
from mae_core.eval import Classifier
from mae_core.models.image_mae import ImageMAE
from mae_core.rundir import RunDir
from mae_core.train import Trainer, TrainConfig, cosine_lr, param_groups, scaled_lr

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
