"""Images from a folder in torchvision ``ImageFolder`` layout (one sub-folder per class).

If the folder has ``train/`` and ``val/`` (or ``test/``) sub-folders they are the splits; otherwise a
deterministic ``val_fraction`` of each class is held out. Unreadable images raise a one-line error naming the file.
"""
from __future__ import annotations

import os
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


def _verify_images(samples) -> None:
    """Check every file's header and structure up front (fast, no decoding of pixels), so a corrupt image is an
    error before the run starts rather than an hour into it."""
    from PIL import Image

    for path, _ in samples:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:
            raise DataError(f"{path}: cannot read image ({type(e).__name__})") from None


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
        self.samples = samples
        _verify_images(samples)
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
                im = im.convert("RGB" if self.config.in_chans == 3 else "L")
        except Exception as e:  # PIL raises many types for broken files
            raise DataError(f"{path}: cannot read image ({type(e).__name__})") from None
        x = self.transform(im)
        if not torch.isfinite(x).all():
            raise DataError(f"{path}: image contains NaN or inf values")
        return {"image": x, "label": label, "index": i}
