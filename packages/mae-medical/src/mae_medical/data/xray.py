"""2-D medical images for the chest X-ray MAE recipe and the anomaly MAE.

- ``synthetic-chest`` (embedded, no download): procedurally generated chest-radiograph-like images (body, two dark
  lungs, ribs, spine, heart) with three findings as multi-label targets: nodule, effusion, cardiomegaly.
- ``medical-images`` (``--data PATH``): a MedMNIST-style ``.npz`` file (``train_images`` / ``test_images`` /
  ``*_labels``; multi-label when the labels have several columns), or a folder of PNG / JPEG / DICOM images with a
  CSV of labels (first column the file name, then one column per label; a single integer column = classes).
- ``chest-anomaly`` (embedded): normal synthetic chests for training; the test split is half normal, half with
  inserted lesions (label 1), with the lesion mask for per-pixel evaluation.

Augmentation follows the reference code of Xiao et al. (WACV 2023): pre-training ``RandomResizedCrop(scale=(0.5, 1))``
and a horizontal flip; fine-tuning ``RandomResizedCrop(scale=(0.08, 1))``, a horizontal flip and timm's RandAugment
``rand-m6-mstd0.5-inc1``; no mixup. Test images are not augmented (the reference's resize to 1/0.875 and centre crop
is left out: at 28 px it would cut 3 pixels of a whole-organ image).
"""
from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.data import numpy_load_error, to_8bit
from mae_core.errors import DataError

FINDINGS = ["nodule", "effusion", "cardiomegaly"]


def _smooth(rng, size, coarse=6):
    x = torch.from_numpy(rng.uniform(-1, 1, (1, 1, coarse, coarse))).float()
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)[0, 0]


def chest_image(rng: np.random.Generator, size: int, findings=(0, 0, 0)) -> tuple[torch.Tensor, torch.Tensor]:
    """One synthetic radiograph in [0, 1] (size x size) and the mask of its lungs."""
    c = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(c, c, indexing="ij")
    img = 0.12 + 0.05 * _smooth(rng, size, 4)
    body = ((x / rng.uniform(0.85, 0.98)) ** 2 + ((y - 0.05) / rng.uniform(0.95, 1.1)) ** 2) < 1
    img = img + 0.35 * body
    lungs = torch.zeros_like(img, dtype=torch.bool)
    sep = rng.uniform(0.28, 0.36)
    for side in (-1, 1):
        lx, ly = side * sep, rng.uniform(-0.12, -0.02)
        lungs |= (((x - lx) / rng.uniform(0.22, 0.28)) ** 2 + ((y - ly) / rng.uniform(0.55, 0.65)) ** 2) < 1
    img = torch.where(lungs, img - 0.25, img)
    ribs = 0.06 * (torch.sin((y + 0.25 * x.abs()) * rng.uniform(16, 20) + rng.uniform(0, 6.28)) > 0.4).float()
    img = img + ribs * lungs
    img = img + 0.25 * (x.abs() < 0.06).float() * body  # spine
    hr = rng.uniform(0.2, 0.25) * (1.45 if findings[2] else 1.0)  # cardiomegaly: larger heart
    hx, hy = rng.uniform(0.05, 0.12), rng.uniform(0.25, 0.35)
    heart = (((x - hx) / (hr * 1.2)) ** 2 + ((y - hy) / hr) ** 2) < 1
    img = torch.where(heart, img.clamp_min(0.45) + 0.05, img)
    if findings[1]:  # effusion: lower part of one lung opacified with a meniscus
        side = rng.choice([-1, 1])
        level = rng.uniform(0.2, 0.35)
        eff = lungs & (torch.sign(x) == side) & (y > level - 0.15 * (x.abs() - sep).abs() * 3)
        img = torch.where(eff, img + 0.22, img)
    if findings[0]:  # nodule: small bright disk inside a lung
        ys, xs = torch.nonzero(lungs, as_tuple=True)
        j = int(rng.integers(len(ys)))
        r = rng.uniform(0.05, 0.09)
        nod = ((x - c[xs[j]]) ** 2 + (y - c[ys[j]]) ** 2) < r**2
        img = torch.where(nod, img + 0.25, img)
    img = img + 0.04 * _smooth(rng, size, 12) + 0.015 * torch.from_numpy(rng.normal(size=(size, size))).float()
    return img.clamp(0, 1), lungs


PRETRAIN_CROP_SCALE = (0.5, 1.0)  # the reference's --random_resize_range 0.5 1.0
FINETUNE_CROP_SCALE = (0.08, 1.0)  # timm create_transform's default RandomResizedCrop scale


def _augment(kind: str, size: int):
    """The reference's training transforms (Xiao et al.): pre-training ``RandomResizedCrop(0.5-1, bicubic)`` +
    horizontal flip; fine-tuning (timm ``create_transform``) ``RandomResizedCrop(0.08-1, bicubic)`` + horizontal
    flip + RandAugment ``rand-m6-mstd0.5-inc1`` (:mod:`mae_medical.data.randaugment`)."""
    from torchvision.transforms import v2

    from .randaugment import RandAugment

    if kind == "none":
        return None
    scale = FINETUNE_CROP_SCALE if kind == "finetune" else PRETRAIN_CROP_SCALE
    ops = [v2.RandomResizedCrop(size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
           v2.RandomHorizontalFlip()]
    if kind == "finetune":
        ops.append(RandAugment(magnitude=6, magnitude_std=0.5))
    return v2.Compose(ops)


class _ImageSet(Dataset):
    """uint8 images (N, 1, S, S) + labels; normalised to mean 0.5 / std 0.5 after augmentation."""

    mean, std = (0.5,), (0.5,)

    def _setup(self, images: torch.Tensor, labels: torch.Tensor, augment: str, split: str):
        self.images = images
        self.multilabel = labels.ndim == 2 and labels.shape[1] > 1
        self.labels = labels.float() if self.multilabel else labels.reshape(-1).long()
        self.num_classes = labels.shape[1] if self.multilabel else int(self.labels.max()) + 1
        self.num_classes = max(self.num_classes, 2)
        self.aug = _augment(augment, images.shape[-1]) if split == "train" else None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]
        if self.aug is not None:
            x = self.aug(x)
        x = (x.float() / 255.0 - 0.5) / 0.5
        y = self.labels[i]
        return {"image": x, "label": y if self.multilabel else int(y)}


@dataclass
class SyntheticChestConfig:
    image_size: int = field(32, "image side in pixels", ge=1)
    num_train: int = field(2048, "training images", ge=1)
    num_test: int = field(512, "test images", ge=1)
    prevalence: float = field(0.3, "probability of each finding", ge=0, le=1)
    augment: str = field("pretrain", "pretrain (random resized crop 0.5-1, h-flip), finetune (crop 0.08-1, h-flip, "
                                     "RandAugment m6 mstd 0.5) or none",
                         choices=["pretrain", "finetune", "none"])
    seed: int = field(0, "generator seed")


class SyntheticChest(_ImageSet):
    classes = FINDINGS

    def __init__(self, config: SyntheticChestConfig | None = None, split: str = "train"):
        self.config = c = config or SyntheticChestConfig()
        n = c.num_train if split == "train" else c.num_test
        rng = np.random.default_rng([c.seed, 0 if split == "train" else 1])
        labels = torch.from_numpy((rng.uniform(size=(n, len(FINDINGS))) < c.prevalence).astype(np.int64))
        imgs = torch.stack([chest_image(rng, c.image_size, labels[i].tolist())[0] for i in range(n)])
        self._setup((imgs[:, None] * 255).round().to(torch.uint8), labels, c.augment, split)


@dataclass
class MedicalImagesConfig:
    path: str | None = field(None, "MedMNIST .npz file, or a folder of PNG / JPEG / DICOM images")
    labels_csv: str | None = field(None, "CSV for a folder: file name, then label column(s)")
    image_size: int = field(28, "images are resized to this side", ge=1)
    augment: str = field("pretrain", "pretrain (random resized crop 0.5-1, h-flip), finetune (crop 0.08-1, h-flip, "
                                     "RandAugment m6 mstd 0.5) or none",
                         choices=["pretrain", "finetune", "none"])
    test_fraction: float = field(0.2, "folder data: fraction of images held out (by a hash of the file name)",
                                 ge=0, lt=1)


def _read_image(path: Path, size: int) -> torch.Tensor:
    if path.suffix.lower() in (".dcm", ".dicom"):
        try:
            import pydicom
        except ImportError:
            raise DataError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
        try:
            arr = pydicom.dcmread(str(path)).pixel_array.astype(np.float32)
        except Exception as e:
            raise DataError(f"{path}: not a readable DICOM file ({str(e)[:60]})") from None
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6) * 255
        t = torch.from_numpy(arr)
    else:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as im:  # 16-bit PNGs scaled by their bit depth, not clipped to white
                t = torch.from_numpy(np.asarray(to_8bit(im).convert("L"), dtype=np.float32))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{path}: not a readable image ({str(e)[:60]})") from None
    t = F.interpolate(t[None, None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return t.round().clamp(0, 255).to(torch.uint8)


class MedicalImages(_ImageSet):
    def __init__(self, config: MedicalImagesConfig, split: str = "train"):
        self.config = c = config
        if not c.path:
            raise DataError("medical-images: give --data PATH (a .npz file or an image folder)")
        p = Path(c.path)
        if not p.exists():
            raise DataError(f"{p}: not found")
        if p.is_file():
            images, labels = self._npz(p, split)
        else:
            images, labels = self._folder(p, split)
        if images.shape[-1] != c.image_size:
            images = F.interpolate(images.float(), size=(c.image_size,) * 2, mode="bilinear", antialias=True,
                                   align_corners=False).round().clamp(0, 255).to(torch.uint8)
        self._setup(images, labels, c.augment, split)

    def _npz(self, p: Path, split: str):
        try:
            z = np.load(p, allow_pickle=False)
            key = "train" if split == "train" else "test"
            x, y = z[f"{key}_images"], z[f"{key}_labels"]
        except KeyError as e:
            raise DataError(f"{p}: not a MedMNIST-style npz with {split}_images / {split}_labels ({e})") from None
        except Exception as e:  # corrupt archive, object arrays (pickles are refused)
            raise numpy_load_error(p, e, "MedMNIST-style .npz file") from None
        if x.ndim == 4:  # RGB MedMNIST: to grey
            x = x.mean(-1)
        if x.ndim != 3:
            raise DataError(f"{p}: images must be (N, H, W), got {x.shape}")
        y = torch.from_numpy(np.asarray(y).astype(np.int64))
        return torch.from_numpy(x.astype(np.uint8))[:, None], (y if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1))

    def _folder(self, p: Path, split: str):
        c = self.config
        if not c.labels_csv:
            raise DataError(f"{p}: an image folder needs --labels-csv (file name, label columns)")
        rows = []
        try:
            with open(c.labels_csv) as fh:
                reader = csv.reader(fh)
                header = next(reader)
                for r in reader:
                    if r:
                        rows.append((r[0], [int(float(v)) for v in r[1:]]))
        except (OSError, ValueError, StopIteration) as e:
            raise DataError(f"{c.labels_csv}: cannot read labels ({e})") from None
        if len(header) < 2:
            raise DataError(f"{c.labels_csv}: needs a file-name column and at least one label column")
        keep = []
        for name, lab in rows:
            test = (zlib.crc32(name.encode()) % 1000) / 1000 < c.test_fraction
            if test == (split != "train"):
                keep.append((name, lab))
        if not keep:
            raise DataError(f"{p}: the {split} split is empty")
        imgs, labs = [], []
        for name, lab in keep:
            f = p / name
            if not f.exists():
                raise DataError(f"{c.labels_csv}: file {name} not found in {p}")
            imgs.append(_read_image(f, c.image_size))
            labs.append(lab)
        y = torch.tensor(labs)
        return torch.stack(imgs), (y if y.shape[1] > 1 else y[:, 0])


@dataclass
class ChestAnomalyConfig:
    image_size: int = field(32, "image side in pixels", ge=1)
    num_train: int = field(2048, "normal training images", ge=1)
    num_test: int = field(256, "test images (half with an inserted lesion)", ge=1)
    lesion_intensity: float = field(0.4, "largest absolute intensity change of an inserted lesion", ge=0)
    seed: int = field(0, "generator seed")


def insert_lesion(rng: np.random.Generator, img: torch.Tensor, lungs: torch.Tensor, strength: float):
    """Add one blob (bright or dark, irregular) inside the lungs; returns (image, lesion mask)."""
    size = img.shape[-1]
    c = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(c, c, indexing="ij")
    ys, xs = torch.nonzero(lungs, as_tuple=True)
    j = int(rng.integers(len(ys)))
    r = rng.uniform(0.15, 0.28)
    d = torch.sqrt((x - c[xs[j]]) ** 2 + ((y - c[ys[j]]) / rng.uniform(0.7, 1.3)) ** 2) / r
    d = d + 0.25 * _smooth(rng, size, 8)
    blob = (d < 1).float()
    sign = rng.choice([-1.0, 1.0])
    amp = sign * rng.uniform(0.5, 1.0) * strength
    out = (img + amp * blob * (1 - 0.3 * d.clamp(0, 1))).clamp(0, 1)
    return out, blob.bool()


class ChestAnomaly(Dataset):
    """Train: normal images only (label 0). Test: half normal, half with a lesion (label 1) and ``lesion`` masks."""

    mean, std = (0.5,), (0.5,)

    def __init__(self, config: ChestAnomalyConfig | None = None, split: str = "train"):
        self.config = c = config or ChestAnomalyConfig()
        n = c.num_train if split == "train" else c.num_test
        rng = np.random.default_rng([c.seed, 10 if split == "train" else 11])
        imgs, labels, masks = [], [], []
        for i in range(n):
            img, lungs = chest_image(rng, c.image_size)
            lab = int(split != "train" and i % 2 == 1)
            m = torch.zeros_like(lungs)
            if lab:
                img, m = insert_lesion(rng, img, lungs, c.lesion_intensity)
            imgs.append(img)
            labels.append(lab)
            masks.append(m)
        self.images = (torch.stack(imgs)[:, None] - 0.5) / 0.5
        self.labels = torch.tensor(labels)
        self.lesions = torch.stack(masks)
        self.num_classes = 2

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i]), "lesion": self.lesions[i]}
