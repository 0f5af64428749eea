"""NIfTI case folders: the bad-input table, NIfTI round trip with the affine kept, imputation, UNETR export."""
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mae_core.errors import DataError, MaeError
from mae_medical.cli import main
from mae_medical.data.brain_folder import BrainFolder, BrainFolderConfig
from mae_medical.data.synthetic_brain import write_cases


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("style", ["brats2021", "brats2023", "brainles"])
def test_naming_styles_and_pipeline(tmp_path, style):
    write_cases(tmp_path / "data", num=2, size=24, style=style)
    ds = BrainFolder(BrainFolderConfig(path=str(tmp_path / "data"), image_size=16, crops_per_case=3), "train")
    s = ds[0]
    assert len(ds) == 3 and set(s) == {"t1", "t1ce", "t2", "flair", "label"}
    assert all(s[m].shape == (1, 16, 16, 16) for m in ds.modalities)
    v = ds.volumes[0]["flair"]
    nz = v[v != 0]  # non-zero channel-wise z-score
    assert abs(float(nz.mean())) < 1e-3 and abs(float(nz.std()) - 1) < 1e-2


def test_foreground_crops_and_flips(tmp_path):
    """Foreground crops (RandCropByPosNegLabeld on the brain mask) hold more brain than uniform crops; a flip mirrors
    every modality of a crop the same way."""
    write_cases(tmp_path / "data", num=1, size=32)
    base = dict(path=str(tmp_path / "data"), image_size=8, crops_per_case=64)

    def brain_fraction(**kw):
        ds = BrainFolder(BrainFolderConfig(**base, **kw), "train")
        return float(np.mean([float((ds[i]["t1"] != 0).float().mean()) for i in range(len(ds))]))

    fg, uniform = brain_fraction(foreground_crops=1.0), brain_fraction()
    assert fg > uniform + 0.3, (fg, uniform)
    with pytest.raises(DataError, match="foreground_crops"):
        BrainFolder(BrainFolderConfig(**base, foreground_crops=1.5), "train")
    # same seed, same crops; with flip_prob=1 every crop is the mirror image of the unflipped one, all modalities
    plain = BrainFolder(BrainFolderConfig(**base, foreground_crops=1.0), "train")
    flipped = BrainFolder(BrainFolderConfig(**base, foreground_crops=1.0, flip_prob=1.0), "train")
    for i in range(4):
        a, b = plain[i], flipped[i]
        assert all(torch.equal(b[m], torch.flip(a[m], dims=[1])) for m in plain.modalities)


def _break(case: Path, kind: str):
    name = case.name
    if kind == "missing file":
        (case / f"{name}_flair.nii.gz").unlink()
        return "flair"
    if kind == "different shapes":
        nib.save(nib.Nifti1Image(np.ones((20, 24, 24), np.float32), np.eye(4)), str(case / f"{name}_t2.nii.gz"))
        return f"{name}_t2.nii.gz"
    if kind == "corrupt":
        (case / f"{name}_t1ce.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 10))
        return f"{name}_t1ce.nii.gz"
    if kind == "not 3-D":
        nib.save(nib.Nifti1Image(np.ones((24, 24), np.float32), np.eye(4)), str(case / f"{name}_t1.nii.gz"))
        return f"{name}_t1.nii.gz"
    if kind == "NaN":
        a = nib.load(str(case / f"{name}_t2.nii.gz"))
        d = a.get_fdata().astype(np.float32)
        d[3, 4, 5] = np.nan
        nib.save(nib.Nifti1Image(d, a.affine), str(case / f"{name}_t2.nii.gz"))
        return f"{name}_t2.nii.gz"
    if kind == "all missing":
        for f in case.iterdir():
            f.unlink()
        (case / "notes.txt").write_text("nothing here")
        return "no modality file"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing file", "different shapes", "corrupt", "not 3-D", "NaN", "all missing"])
def test_bad_input_table(tmp_path, kind, capsys):
    cases = write_cases(tmp_path / "data", num=2, size=24, style="brats2021")
    what = _break(cases[1], kind)
    out = tmp_path / "run"
    rc = main(["pretrain", "--data", str(tmp_path / "data"), "--out", str(out), "--max-steps", "1",
               "--no-progress", "--image-size", "16"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error:") and "\n" not in err, err
    assert "case001" in err and what in err, err
    assert not out.exists()
    # impute on the broken case: the same one-line error, nothing written
    if kind != "missing file":
        rc = main(["impute", "--run", str(tmp_path / "nope"), "--case", str(cases[1]), "--missing", "flair",
                   "--out", str(tmp_path / "x.nii.gz")])
        assert rc == 2 and not (tmp_path / "x.nii.gz").exists()


def test_unknown_modality_name(tmp_path, capsys):
    write_cases(tmp_path / "data", num=1, size=24)
    with pytest.raises(DataError, match="unknown modality 'pd'"):
        BrainFolder(BrainFolderConfig(path=str(tmp_path / "data"), modalities=["t1", "pd"]), "train")
    rc = main(["pretrain", "--data", str(tmp_path / "data"), "--modalities", "t1", "pd", "--out",
               str(tmp_path / "run")])
    assert rc == 2 and "unknown modality 'pd'" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_nifti_round_trip_keeps_affine_and_header(tmp_path):
    from mae_medical.commands import write_nifti_like

    aff = np.array([[-1.5, 0.1, 0, 12.0], [0, -1.5, 0.2, 30.0], [0, 0, 2.5, -7.0], [0, 0, 0, 1]])
    ref = nib.Nifti1Image(np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5), aff)
    ref.header["descrip"] = b"reference case"
    nib.save(ref, str(tmp_path / "ref.nii.gz"))
    data = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
    for name in ("out.nii.gz", "out.nii"):
        write_nifti_like(tmp_path / name, data, tmp_path / "ref.nii.gz")
        back = nib.load(str(tmp_path / name))
        assert np.allclose(back.affine, aff)
        assert np.allclose(back.get_fdata(), data, atol=1e-6)
        assert back.header["descrip"] == ref.header["descrip"]
        assert back.get_data_dtype() == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii", "out.nii.gz", "ref.nii.gz"]  # no temp files
    with pytest.raises(MaeError):
        write_nifti_like(tmp_path / "bad.nii.gz", data[:3], tmp_path / "ref.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


def test_unetr_export_loads_weights_and_shape(tiny_cfg_factory):
    from mae_medical.methods.bm_mae import BMMAE
    from mae_medical.unetr import to_unetr

    torch.manual_seed(0)
    model = BMMAE(tiny_cfg_factory(patch_size=16, embed_dim=48, depth=12, num_heads=4))
    net, report = to_unetr(model, out_channels=3, modalities=["t1", "t2"])
    assert report["blocks_loaded"] == 12
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (1, 3, 32, 32, 32)
        # UNETR's patch embedding = sum of the per-modality projections + the shared sin-cos positions
        ours = model.patch_embed["t1"](x[:, :1]) + model.patch_embed["t2"](x[:, 1:]) + model.pos_embed
        theirs = net.vit.patch_embedding(x)
        assert torch.allclose(ours, theirs, atol=1e-5)
        # block 0 computes the same function in both implementations
        assert torch.allclose(model.encoder.blocks[0](ours), net.vit.blocks[0](theirs), atol=1e-4)
    sd = net.vit.state_dict()
    assert torch.equal(sd["blocks.11.mlp.linear2.weight"], model.encoder.blocks[11].mlp.fc2.weight)
    with pytest.raises(MaeError, match="16"):
        to_unetr(BMMAE(tiny_cfg_factory(patch_size=4)), 3)
