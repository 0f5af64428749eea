"""The image folder reader on awkward files: 16-bit PNGs scaled by their bit depth, truncated JPEGs skipped and
counted (with a warning naming them), a folder of only broken images a one-line error."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mae_core import DataError
from mae_core.data import ImageFolderConfig, ImageFolderDataset, to_8bit


def _folder(tmp_path, n=4):
    for c in ("a", "b"):
        (tmp_path / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise = np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8)  # a long scan
            Image.fromarray(noise).save(tmp_path / c / f"{i}.jpg", quality=95)
    return tmp_path


def test_16bit_png_is_scaled_by_its_bit_depth(tmp_path):
    grey = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode.startswith("I")  # PIL keeps the 16 bits
        assert np.asarray(im.convert("L")).tolist()[1] == [255, 255]  # PIL's own conversion clips to white
        out = np.asarray(to_8bit(im))
    assert out.tolist() == [[0, 64], [128, 255]]  # 16384 / 65535 * 255 = 63.75 -> 64


def test_16bit_png_through_the_dataset_is_not_white(tmp_path):
    root = tmp_path / "d"
    (root / "x").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((16, 16), 1000 * (i + 1), np.uint16)).save(root / "x" / f"{i}.png")
    ds = ImageFolderDataset(ImageFolderConfig(path=str(root), image_size=8, in_chans=1, val_fraction=0.0), "train")
    assert len(ds) == 6
    # pixel 1000 * (i + 1) / 65535 * 255, normalised with mean = std = 0.5
    for i in range(6):
        expected = (round(1000 * (i + 1) / 65535 * 255) / 255 - 0.5) / 0.5
        x = ds[i]["image"]
        assert x.shape == (1, 8, 8) and abs(float(x.mean()) - expected) < 1e-5


def test_truncated_jpeg_is_skipped_and_counted(tmp_path, capsys):
    root = _folder(tmp_path / "d")
    data = (root / "a" / "1.jpg").read_bytes()
    (root / "a" / "1.jpg").write_bytes(data[: len(data) * 3 // 4])  # header intact: PIL's verify() passes it
    with Image.open(root / "a" / "1.jpg") as im:
        im.verify()
    ds = ImageFolderDataset(ImageFolderConfig(path=str(root), image_size=8, val_fraction=0.0), "train")
    assert len(ds) == 7 and all(p.name != "1.jpg" or p.parent.name != "a" for p in
                                (__import__("pathlib").Path(s[0]) for s in ds.samples))
    err = capsys.readouterr().err
    assert "warning: skipped 1 of 8 unreadable images" in err and "1.jpg" in err and len(err.strip().splitlines()) == 1
    for i in range(len(ds)):  # every kept sample loads
        ds[i]


def test_only_broken_images_is_one_line_error(tmp_path):
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        (root / "a" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(DataError) as e:
        ImageFolderDataset(ImageFolderConfig(path=str(root), val_fraction=0.0), "train")
    assert "none of the 3 images can be read" in str(e.value) and "\n" not in str(e.value)
