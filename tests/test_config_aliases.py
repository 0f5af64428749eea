"""The shared ViT config names across the domains (issue 16): the renamed fields' old names still work on a domain's
CLI and in saved runs, and every method's defaults are the ones it had before the rename.

The mechanism itself (from_dict, keyword options, layers, hidden flags) is tested in
packages/mae-core/tests/test_config_aliases.py."""
import dataclasses
import json

import pytest
import torch
import yaml

import mae_core
from mae_core import config as config_mod
from mae_core import registry
from mae_core.models import ViTConfig

RENAMED = {"decoder_dim": "decoder_embed_dim", "decoder_heads": "decoder_num_heads", "mask_type": "mask_strategy",
           "mask_mode": "mask_strategy"}
TINY_3D = ["--preset", "point-mae-tiny", "--num-points", "64", "--num-groups", "8", "--group-size", "16",
           "--train-per-class", "2", "--test-per-class", "1", "--num-classes", "2", "--batch-size", "4",
           "--no-progress"]


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    monkeypatch.setattr(config_mod, "_NOTED", set())


def notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]


@pytest.fixture(scope="module")
def old_flag_run(tmp_path_factory):
    """A tiny Point-MAE run made with the old flags; returns (run dir, stderr)."""
    from mae_3d.cli import main

    run = tmp_path_factory.mktemp("aliases") / "run"
    config_mod._NOTED.clear()
    assert main(["pretrain", *TINY_3D, "--decoder-dim", "32", "--decoder-heads", "2", "--mask-type", "block",
                 "--max-steps", "1", "--out", str(run)]) == 0
    return run


def test_a_cli_run_with_old_flags_records_the_new_names(old_flag_run):
    saved = yaml.safe_load((old_flag_run / "config.yaml").read_text())["model"]
    assert (saved["decoder_embed_dim"], saved["decoder_num_heads"], saved["mask_strategy"]) == (32, 2, "block")
    assert not set(RENAMED) & set(saved)
    model_json = json.loads((old_flag_run / "config.json").read_text())["config"]
    assert model_json["decoder_embed_dim"] == 32 and "decoder_dim" not in model_json


def test_old_flags_print_one_note_each(tmp_path, capsys):
    from mae_3d.cli import main

    assert main(["pretrain", *TINY_3D, "--decoder-dim", "48", "--mask-type", "block", "--max-steps", "1",
                 "--out", str(tmp_path / "r")]) == 0
    assert notes(capsys) == [
        "note: --decoder-dim is deprecated, use --decoder-embed-dim (the old name will be removed in the next release)",
        "note: --mask-type is deprecated, use --mask-strategy (the old name will be removed in the next release)"]
    assert main(["pretrain", "--decoder-dim", "32", "--decoder-embed-dim", "16", "--out", str(tmp_path / "x")]) == 2
    assert "both given" in capsys.readouterr().err and not (tmp_path / "x").exists()


def _rename_to_old(d: dict) -> dict:
    old = {"decoder_embed_dim": "decoder_dim", "decoder_num_heads": "decoder_heads", "mask_strategy": "mask_type"}
    return {old.get(k, k): v for k, v in d.items()}


@pytest.fixture
def old_saved_run(old_flag_run, tmp_path):
    """The run directory as an older release wrote it: config.json and config.yaml with the old model names."""
    import shutil

    run = tmp_path / "old"
    shutil.copytree(old_flag_run, run)
    cj = json.loads((run / "config.json").read_text())
    cj["config"] = _rename_to_old(cj["config"])
    cj["run_config"]["model"] = _rename_to_old(cj["run_config"]["model"])
    (run / "config.json").write_text(json.dumps(cj))
    cy = yaml.safe_load((run / "config.yaml").read_text())
    cy["model"] = _rename_to_old(cy["model"])
    (run / "config.yaml").write_text(yaml.safe_dump(cy, sort_keys=False))
    assert "decoder_dim" in (run / "config.yaml").read_text() and "decoder_dim" in (run / "config.json").read_text()
    return run


def test_a_saved_run_with_old_names_still_loads(old_flag_run, old_saved_run, capsys):
    new, old = mae_core.load_run(old_flag_run), mae_core.load_run(old_saved_run)
    assert old.config.model == new.config.model and old.model.config == new.model.config
    assert old.model.config.decoder_embed_dim == 32 and old.model.config.mask_strategy == "block"
    a, b = new.model.state_dict(), old.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("decoder_dim is deprecated" in n for n in notes(capsys))
    # from_pretrained, with an override under the new name on top of the old saved name
    m = mae_core.from_pretrained(old_saved_run, config_overrides={"mask_strategy": "random"})
    assert m.config.mask_strategy == "random" and m.config.decoder_num_heads == 2
    # probing the run layers the saved (old) config under the flags
    run = mae_core.load_run(old_saved_run, decoder_embed_dim=32)
    assert run.config.model.decoder_embed_dim == 32


def test_resume_of_a_run_saved_with_old_names(old_saved_run):
    from mae_3d.cli import main

    assert main(["pretrain", "--out", str(old_saved_run), "--resume", "--max-steps", "2", "--no-progress"]) == 0
    assert json.loads((old_saved_run / "summary.json").read_text())["steps"] == 2
    saved = json.loads((old_saved_run / "config.json").read_text())["config"]  # the model saved at the end
    assert saved["decoder_embed_dim"] == 32 and saved["mask_strategy"] == "block" and "decoder_dim" not in saved


# the defaults before the rename (dataclasses.asdict of each config, old names replaced by the new ones)
DEFAULTS_BEFORE = {
    "point-mae": {"augment": True, "decoder_depth": 4, "decoder_embed_dim": 192, "decoder_num_heads": 3, "depth": 4,
                  "drop_path": 0.1, "embed_dim": 192, "group_size": 32, "loss": "l2", "mask_ratio": 0.6,
                  "mask_strategy": "random", "mlp_ratio": 4.0, "num_groups": 32, "num_heads": 3,
                  "pointnet_dims": [64, 128, 256]},
    "r-mae": {"decoder_depth": 2, "decoder_embed_dim": 96, "decoder_num_heads": 4, "depth": 4, "drop_path": 0.0,
              "embed_dim": 128, "grid": [64, 64, 8], "grid_min": [-25.6, -25.6, -2.2], "mask_ratio": 0.8,
              "mlp_ratio": 4.0, "num_heads": 4, "patch": [4, 4, 8], "pos_weight": 3.0,
              "range_aware": False, "sector_deg": 1.0, "sensor_origin": [0.0, 0.0], "voxel_size": [0.8, 0.8, 0.6]},
    "audio-mae": {"decoder_depth": 2, "decoder_embed_dim": 128, "decoder_mode": "local", "decoder_num_heads": 4,
                  "decoder_window": 4, "depth": 4, "drop_path": 0.0, "embed_dim": 192, "ft_freq_mask": 24,
                  "ft_mixup": 0.5, "ft_mixup_alpha": 10.0, "ft_time_mask": 24, "ft_token_drop_freq": 0.2,
                  "ft_token_drop_time": 0.2, "mask_strategy": "random", "mask_ratio": 0.8, "mlp_ratio": 4.0,
                  "norm_pix_loss": True, "num_heads": 3, "num_mel_bins": 128, "patch_size": 16, "target_length": 128},
    "siammae": {"decoder_depth": 2, "decoder_embed_dim": 96, "decoder_num_heads": 4, "depth": 4, "drop_path": 0.0,
                "embed_dim": 128, "frame_gap_max": 4, "frame_gap_min": 1, "img_size": 32, "in_chans": 3,
                "mask_ratio": 0.95, "mlp_ratio": 4.0, "norm_pix_loss": True, "num_frames": 8, "num_heads": 4,
                "patch_size": 4},
}


# defaults changed on purpose since, to match the authors' code (issues 17 / 18; docs/benchmarks/<domain>.md)
CHANGED_SINCE = {
    "audio-mae": {"decoder_mode": "swin", "decoder_window_freq": 4, "roll_mag_aug": True, "probe_tokens": "focal",
                  "norm_mean": None, "norm_std": None},
    "r-mae": {"range_rule": "bands"},
    "siammae": {"decoder_block": "reference", "decoder_dropout": 0.1, "decoder_ffn_dim": 0, "frame_gap_min": 4,
                "frame_gap_max": 48, "crop_scale": [0.5, 1.0], "aspect": [0.75, 4 / 3], "flip": True},
}


@pytest.mark.parametrize("method", sorted(DEFAULTS_BEFORE))
def test_defaults_are_unchanged(method):
    """Nothing but the renames and the listed fidelity changes moved a default."""
    expected = {**DEFAULTS_BEFORE[method], **CHANGED_SINCE.get(method, {})}
    assert dataclasses.asdict(registry.get_method(method).config_cls()) == expected


def test_no_method_config_keeps_an_old_name_and_vit_methods_share_the_base():
    registry.autoload()
    vit = {m.name for m in registry.methods() if issubclass(m.config_cls, ViTConfig)}
    assert {"image-mae", "xray-mae", "point-mae", "point-cmae", "r-mae", "audio-mae", "bird-mae", "videomae",
            "siammae", "cropmae"} <= vit
    for m in registry.methods():
        assert not set(RENAMED) & {f.name for f in dataclasses.fields(m.config_cls)}, m.name


@pytest.mark.parametrize("method, old, new", [("maskclip-sdi", "decoder_dim", "decoder_embed_dim"),
                                              ("traj-mae", "decoder_heads", "decoder_num_heads")])
def test_configs_saved_before_a_rename_still_load(method, old, new, capsys):
    from mae_core.config import from_dict

    registry.autoload()
    spec = next(m for m in registry.methods() if m.name == method)
    cfg = from_dict(spec.config_cls, {old: 8}, where="model")
    assert getattr(cfg, new) == 8
