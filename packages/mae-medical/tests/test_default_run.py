"""The no-argument BM-MAE run (embedded synthetic heads) has its own recipe; a user's --data does not inherit it."""
import pytest
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


def test_the_embedded_picture_cuts_through_the_tumour_and_hides_it_in_some_modalities(tiny_bm, tmp_path, monkeypatch):
    # a tumour visible in every modality shows no reconstruction of it, one hidden in every modality can only be
    # guessed: the picture's mask hides most of it while one modality still shows at least half of it
    import mae_medical.viz as viz
    from mae_core.layers import patchify

    ds = SyntheticBrain(SyntheticBrainConfig(image_size=32, num_train=2, num_test=2), split="test")
    sample, tumour = ds[0], ds.tumour(0)
    assert tumour.dtype == torch.bool and 0 < int(tumour.sum()) < tumour.numel() // 4
    weight = patchify(tumour[None, None].float(), tiny_bm.config.patch_size).sum(-1)
    batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor) and v.ndim == 4}

    def hidden(seed):
        mask = tiny_bm(batch, generator=torch.Generator().manual_seed(seed)).mask.reshape(1, 4, -1)
        return (mask * weight[:, None]).sum(-1)[0] / weight.sum()

    best = viz.tumour_mask_seed(tiny_bm, sample, tumour)
    assert 0 <= best < viz.TRIES and float(hidden(best).min()) <= 0.5
    eligible = [float(hidden(s).mean()) for s in range(viz.TRIES) if float(hidden(s).min()) <= 0.5]
    assert float(hidden(best).mean()) == pytest.approx(max(eligible))
    seen = {}
    monkeypatch.setattr(viz, "save_multimodal_reconstruction", lambda *a, **k: seen.update(k))
    viz.visualize_bm_mae(tiny_bm, ds, tmp_path / "p.png")
    assert torch.equal(seen["tumour"], tumour)
    monkeypatch.undo()
    assert viz.save_multimodal_reconstruction(tiny_bm, sample, tmp_path / "q.png", tumour=tumour).exists()
