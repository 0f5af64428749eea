"""Images from a folder in torchvision ``ImageFolder`` layout (one sub-folder per class).

If the folder has ``train/`` and ``val/`` (or ``test/``) sub-folders they are the splits; otherwise a
deterministic ``val_fraction`` of each class is held out. Every image is decoded once up front (at reduced scale,
so it is quick): unreadable or truncated files are skipped, counted and named in one warning line; a split with no
readable image is a one-line error. 16-bit (and 32-bit integer) grey images are scaled by their bit depth, not
clipped to white.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ..config import field
from ..errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageFolderConfig:
    path: str | None = field(None, "folder of images in class sub-folders (ImageFolder layout)")
    image_size: int = field(32, "side of the square crop fed to the model", ge=1)
    in_chans: int = field(3, "1 for grayscale, 3 for RGB", ge=1, le=4)
    val_fraction: float = field(0.2, "held-out fraction per class when the folder has no train/val split", ge=0, lt=1)
    min_crop_scale: float = field(0.2, "smallest area fraction of RandomResizedCrop during pretraining", gt=0, le=1)
    seed: int = field(0, "seed of the deterministic train / held-out split")


def check_dir(path: str | None, what: str = "data directory") -> str:
    if not path:
        raise DataError(f"no {what} given (use --data PATH)")
    if not os.path.exists(path):
        raise DataError(f"{path}: {what} does not exist")
    if not os.path.isdir(path):
        raise DataError(f"{path}: {what} is not a directory")
    return path


def _decode_check(path: str) -> str | None:
    """None when ``path`` decodes completely, else the reason. JPEGs are decoded at reduced scale (``draft``), which
    still reads every byte, so a truncated file is caught."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(im.mode, (32, 32))
            im.load()
            if im.width < 1 or im.height < 1:
                return "empty image"
    except Exception as e:  # PIL raises many types for broken files
        return f"{type(e).__name__}: {str(e).splitlines()[0][:60]}" if str(e) else type(e).__name__
    return None


def verify_images(samples: list, where: str) -> list:
    """The samples whose image decodes; the others are skipped and counted in one warning line (first few named).
    An empty result is a one-line DataError."""
    kept, bad = [], []
    for s in samples:
        why = _decode_check(s[0])
        if why is None:
            kept.append(s)
        else:
            bad.append(f"{s[0]}: cannot read image ({why})")
    if bad:
        if not kept:
            raise DataError(f"{where}: none of the {len(samples)} images can be read (first: {bad[0]})")
        print(f"warning: skipped {len(bad)} of {len(samples)} unreadable images in {where} (first: "
              + "; ".join(bad[:3]) + ")", file=sys.stderr)
    return kept


def to_8bit(im):
    """A PIL image with more than 8 bits per grey pixel (``I;16*`` from 16-bit PNG / TIFF, ``I``, ``F``) as an 8-bit
    ``L`` image scaled by its bit depth (PIL's own ``convert('L')`` clips everything above 255 to white)."""
    import numpy as np
    from PIL import Image

    if not (im.mode.startswith("I") or im.mode == "F"):
        return im
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        top = 1.0 if a.size and np.nanmax(a) <= 1.0 else max(float(np.nanmax(a)) if a.size else 1.0, 1.0)
    elif im.mode.startswith("I;16") or im.format == "PNG" or (a.size and a.max() <= 65535):
        top = 65535.0
    else:
        top = 2.0 ** 32 - 1
    a = np.clip(np.nan_to_num(a, nan=0.0) / top, 0.0, 1.0)
    return Image.fromarray(np.round(a * 255).astype(np.uint8), "L")


class ImageFolderDataset(Dataset):
    def __init__(self, config: ImageFolderConfig, split: str = "train"):
        from torchvision import transforms as T
        from torchvision.datasets.folder import find_classes, make_dataset

        self.config = c = config
        root = check_dir(c.path)
        sub = None
        for name in (("train",) if split == "train" else ("val", "test")):
            if os.path.isdir(os.path.join(root, name)) and os.path.isdir(os.path.join(root, "train")):
                sub = os.path.join(root, name)
                break
        base = sub or root
        try:
            classes, class_to_idx = find_classes(base)
            samples = make_dataset(base, class_to_idx, extensions=IMG_EXTENSIONS)
        except (FileNotFoundError, RuntimeError):
            raise DataError(f"{base}: no class sub-folders with images (.jpg, .png, ...) found") from None
        if not samples:
            raise DataError(f"{base}: no images found")
        if sub is None:
            g = torch.Generator().manual_seed(c.seed)
            u = torch.rand(len(samples), generator=g)
            held = u < c.val_fraction
            samples = [s for s, h in zip(samples, held.tolist()) if h == (split != "train")]
            if not samples:
                raise DataError(f"{base}: the {split} split is empty (too few images for val_fraction={c.val_fraction})")
        samples = verify_images(samples, f"{base} ({split})")
        self.samples = samples
        self.classes = classes
        self.num_classes = len(classes)
        self.labels = torch.tensor([t for _, t in samples])
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c.in_chans == 3 else ((0.5,), (0.5,))
        self.mean, self.std = mean, std
        if split == "train":
            self.transform = T.Compose([T.RandomResizedCrop(c.image_size, scale=(c.min_crop_scale, 1.0)),
                                        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
        else:
            self.transform = T.Compose([T.Resize(int(c.image_size * 1.14)), T.CenterCrop(c.image_size),
                                        T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                im = to_8bit(im).convert("RGB" if self.config.in_chans == 3 else "L")
        except Exception as e:  # PIL raises many types for broken files
            raise DataError(f"{path}: cannot read image ({type(e).__name__})") from None
        x = self.transform(im)
        if not torch.isfinite(x).all():
            raise DataError(f"{path}: image contains NaN or inf values")
        return {"image": x, "label": label, "index": i}
