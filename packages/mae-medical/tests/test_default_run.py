"""The no-argument BM-MAE run (embedded synthetic heads) has its own recipe; a user's --data does not inherit it."""
import torch

from mae_core import registry
from mae_core.runconfig import method_model_defaults, method_train_defaults, resolve_run_config
from mae_medical.data.synthetic_brain import SyntheticBrain, SyntheticBrainConfig


def test_the_embedded_run_gets_patch_16_half_visible_and_its_epochs():
    registry.autoload()
    cfg = resolve_run_config("bm-mae", domain="medical")
    assert cfg.dataset.name == "synthetic-brain"
    # patch 8 / 25 % visible / 20 epochs left masked patches at the positional mean (no tumour in the picture)
    assert (cfg.model.patch_size, cfg.model.visible_fraction, cfg.train.epochs) == (16, 0.5, 90)
    assert resolve_run_config("bm-mae", domain="medical", overrides={"patch_size": 8}).model.patch_size == 8
    # a user's MRI folder keeps the method's own (paper-like) patch, budget and schedule
    spec, folder = registry.get_method("bm-mae", "medical"), registry.get_dataset("brain-folder", "medical")
    assert method_model_defaults(spec, folder) == {}
    assert method_train_defaults(spec, folder)["epochs"] == 20
    # a preset's own fields win over the embedded run's
    assert resolve_run_config("bm-mae", domain="medical", preset="bm-mae-tiny").model.patch_size == 8


def test_synthetic_cases_are_cached_and_unchanged_by_callers():
    ds = SyntheticBrain(SyntheticBrainConfig(image_size=16, num_train=2, num_test=1))
    a = ds[1]
    a["t1"] += 1.0  # a caller changing a sample in place does not reach the cache
    b = ds[1]
    assert 1 in ds._cache and torch.equal(b["t1"], ds._cache[1]["t1"]) and not torch.equal(a["t1"], b["t1"])
    fresh = SyntheticBrain(SyntheticBrainConfig(image_size=16, num_train=2, num_test=1, cache=False))
    assert torch.equal(fresh[1]["flair"], b["flair"]) and not fresh._cache
