"""The trainer's hot loop reads nothing back from the device except at log and guard-check steps
(``finite_check_every``), and the delayed guard still stops a non-finite run before anything non-finite is saved."""
import pytest
import torch

from mae_core.checkpoint import list_checkpoints
from mae_core.data import ShapesConfig, SyntheticShapes
from mae_core.errors import NonFiniteLossError
from mae_core.models.image_mae import ImageMAE
from mae_core.rundir import RunDir
from mae_core.testing import tiny_image_cfg
from mae_core.train import Trainer, TrainConfig


def _trainer(tmp_path, **kw):
    torch.manual_seed(0)
    ds = SyntheticShapes(ShapesConfig(image_size=16, num_train=64, num_test=8))
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 8, "progress": False, "warmup_epochs": 0.5, **kw})
    return Trainer(ImageMAE(tiny_image_cfg()), ds, cfg, run_dir=RunDir(tmp_path / "run"))


def _count_reads(monkeypatch):
    """Counts host reads of tensor values (``.item()``, ``float(t)``) made in the trainer module."""
    import sys

    calls = []
    item, flt = torch.Tensor.item, torch.Tensor.__float__

    def counted(fn):
        def read(t):
            if sys._getframe(1).f_code.co_filename.endswith("train/trainer.py"):
                calls.append(fn.__name__)
            return fn(t)
        return read
    monkeypatch.setattr(torch.Tensor, "item", counted(item))
    monkeypatch.setattr(torch.Tensor, "__float__", counted(flt))
    return calls


def test_reads_only_at_log_and_check_steps(tmp_path, monkeypatch):
    calls = _count_reads(monkeypatch)
    t = _trainer(tmp_path / "a", log_every=100, finite_check_every=100, checkpoint_every=100)
    assert t.fit()["steps"] == 16
    # 16 steps: one metric line (the last step), its guard check, the check at the end of fit
    assert len(calls) == 3, calls
    calls.clear()
    t = _trainer(tmp_path / "b", log_every=100, checkpoint_every=100)  # finite_check_every=1: a check per step
    assert t.fit()["steps"] == 16
    assert len(calls) >= 16


@pytest.mark.parametrize("every", [1, 5])
def test_delayed_guard_stops_before_saving(tmp_path, every):
    t = _trainer(tmp_path, lr=1e-3, finite_check_every=every, checkpoint_every=3, log_every=100)
    t.dataset.images[:] = float("nan")  # every loss is non-finite, from step 0 on
    with pytest.raises(NonFiniteLossError, match="loss became nan") as err:
        t.fit()
    saved = [int(p.name.split("-")[1]) for p in list_checkpoints(t.run_dir.checkpoints)]
    if every == 1:
        assert "at step 0 " in str(err.value)
    else:
        assert "between steps 0 and 3" in str(err.value)
    assert saved == []  # step 3 would hold non-finite weights: the check before the save stops it
