"""Volumes that used to pass silently: an all-zero modality file is a one-line error naming the case and file;
cases smaller than the crop are counted in one warning line; 16-bit PNG X-rays are scaled, not clipped."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mae_core.errors import DataError
from mae_medical.data.brain_folder import BrainFolder, BrainFolderConfig
from mae_medical.data.synthetic_brain import write_cases


def test_all_zero_volume_is_a_one_line_error(tmp_path):
    write_cases(tmp_path / "data", num=3, size=16)
    case = sorted((tmp_path / "data").iterdir())[1]
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4)), str(case / f"{case.name}_t2.nii.gz"))
    with pytest.raises(DataError) as e:
        BrainFolder(BrainFolderConfig(path=str(tmp_path / "data"), image_size=8), "train")
    msg = str(e.value)
    assert "\n" not in msg and f"case {case.name}" in msg and "_t2.nii.gz is empty (every voxel is 0)" in msg


def test_volumes_smaller_than_the_crop_are_counted(tmp_path, capsys):
    write_cases(tmp_path / "data", num=3, size=16)
    cases = sorted((tmp_path / "data").iterdir())
    rng = np.random.default_rng(0)
    for m in ("t1", "t1ce", "t2", "flair"):  # the first case becomes a 4^3 volume (2^3 at 2 mm)
        for f in cases[0].glob(f"*_{m}.nii.gz"):
            nib.save(nib.Nifti1Image(rng.random((4, 4, 4)).astype(np.float32) + 0.5, np.eye(4)), str(f))
    ds = BrainFolder(BrainFolderConfig(path=str(tmp_path / "data"), image_size=6, crops_per_case=1), "train")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err == (f"warning: brain-folder: 1 of 2 train cases are smaller than the 6^3 crop after resampling to "
                   f"[2.0, 2.0, 2.0] mm and are zero-padded (first: case {cases[0].name}, 2x2x2 voxels)")
    assert ds[0]["t1"].shape == (1, 6, 6, 6) and int((ds[0]["t1"] != 0).sum()) <= 8
    BrainFolder(BrainFolderConfig(path=str(tmp_path / "data"), image_size=2, crops_per_case=1), "train")
    assert capsys.readouterr().err == ""  # no warning when every case covers the crop


def test_16bit_png_xray_is_scaled(tmp_path):
    from mae_medical.data.xray import MedicalImages, MedicalImagesConfig

    root = tmp_path / "png"
    root.mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8), 6553 * i, np.uint16)).save(root / f"{i}.png")
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{i}.png,{i % 2}\n" for i in range(10)))
    ds = MedicalImages(MedicalImagesConfig(path=str(root), labels_csv=str(tmp_path / "labels.csv"), image_size=8,
                                           augment="none", test_fraction=0.0), "train")
    values = sorted(int(v) for v in ds.images.reshape(len(ds.images), -1)[:, 0])
    assert values == sorted(round(6553 * i / 65535 * 255) for i in range(10))  # 0, 25, 51, ..., 229
