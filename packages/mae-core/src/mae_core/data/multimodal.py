"""Aligned RGB, depth and semantic-segmentation data for multimodal MAEs (MultiMAE).

``multishapes`` (embedded): the shapes scenes of :mod:`mae_core.data.shapes` (same generator, same images for the
same seed) with a procedural depth map and a per-pixel class mask of the same scene. Depth: the background is a
tilted plane (random slope and offset); the shape stands in front of it, nearer the larger it is, bulging towards the
camera like a dome (``1 - r^2`` in the shape's own coordinates). The class mask is 0 for the background and
``1 + class`` on the shape's pixels (9 classes).

``multimodal-folder``: your aligned files, ``DIR/rgb/<name>.<png|jpg|...>``, ``DIR/depth/<name>.<png|npy>`` (8- or
16-bit grey PNG, or a float .npy) and ``DIR/mask/<name>.<png|npy>`` (integer class per pixel); ``train/`` and
``test/`` sub-folders of that layout are the splits, else a deterministic ``val_fraction`` is held out. A missing
counterpart, a size mismatch or an unreadable file is a one-line error naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import field
from ..errors import DataError
from .folder import IMG_EXTENSIONS, check_dir
from .shapes import CLASSES, MEAN, STD, generate_shapes


@dataclass
class MultiShapesConfig:
    image_size: int = field(32, "image side in pixels", ge=4)
    num_train: int = field(2048, "number of training scenes", ge=1)
    num_test: int = field(512, "number of held-out test scenes", ge=1)
    seed: int = field(0, "generator seed (train and test use different streams; the RGB images are the shapes "
                         "data set's for the same seed and split)")


def scene_depth(geometry: dict, size: int, seed: int) -> torch.Tensor:
    """(n, 1, S, S) depth in [0, 1] (larger = farther) for the scenes of ``generate_shapes(..., return_geometry=True)``."""
    mask, radius, scale = geometry["mask"], geometry["radius"], geometry["scale"]
    n = mask.shape[0]
    g = torch.Generator().manual_seed(seed + 7919)  # its own stream: the RGB images stay those of ``shapes``
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    slope = (torch.rand(n, 2, generator=g) - 0.5) * 0.3
    base = 0.75 + 0.1 * torch.rand(n, generator=g)
    plane = base[:, None, None] + slope[:, 0, None, None] * xx + slope[:, 1, None, None] * yy
    near = 0.55 - 0.6 * (scale - 0.45)  # larger shapes are nearer
    dome = near[:, None, None] - 0.12 * (1 - radius.clamp(max=1) ** 2)
    depth = torch.where(mask, dome, plane) + 0.005 * torch.randn(mask.shape, generator=g)
    return depth.clamp(0, 1)[:, None]


class MultiShapes(Dataset):
    """Samples ``{"image": (3, S, S) in [-1, 1], "depth": (1, S, S) in [0, 1], "seg": (S, S) long (0 background,
    1 + class), "label": shape class, "index": i}``."""

    classes = CLASSES
    mean, std = MEAN, STD
    seg_classes = len(CLASSES) + 1

    def __init__(self, config: MultiShapesConfig | None = None, split: str = "train"):
        self.config = c = config or MultiShapesConfig()
        n = c.num_train if split == "train" else c.num_test
        seed = c.seed * 2 + (0 if split == "train" else 1)
        images, self.labels, geo = generate_shapes(n, c.image_size, seed, return_geometry=True)
        self.images = (images - 0.5) / 0.5
        self.depth = scene_depth(geo, c.image_size, seed)
        self.seg = torch.where(geo["mask"], self.labels[:, None, None] + 1, 0).long()
        self.num_classes = len(CLASSES)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "depth": self.depth[i], "seg": self.seg[i], "label": int(self.labels[i]),
                "index": i}


# ---- a folder of aligned files -------------------------------------------------------------------------------------
@dataclass
class MultimodalFolderConfig:
    path: str | None = field(None, "folder with rgb/, depth/ and mask/ sub-folders of same-named files (or train/ "
                                   "and test/ sub-folders of that layout)")
    image_size: int = field(32, "side the three maps are resized to (RGB and depth bilinear, mask nearest)", ge=4)
    val_fraction: float = field(0.2, "held-out fraction when the folder has no train/test split", ge=0, lt=1)
    num_classes: int = field(0, "segmentation classes; 0: the largest class index in the masks + 1", ge=0)
    seed: int = field(0, "seed of the deterministic train / held-out split")


def _index(folder: str, exts: tuple) -> dict:
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: missing sub-folder (a multimodal folder has rgb/, depth/ and mask/)")
    out = {}
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        if ext.lower() in exts:
            if stem in out:
                raise DataError(f"{os.path.join(folder, f)}: two files named {stem!r} in {folder}")
            out[stem] = os.path.join(folder, f)
    return out


def _read(path: str, kind: str) -> np.ndarray:
    from PIL import Image

    from .safe_pickle import load_npy
    try:
        if path.lower().endswith(".npy"):
            a = np.asarray(load_npy(path))
            return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
        with Image.open(path) as im:
            if kind == "rgb":
                return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            a = np.asarray(im)
            if kind == "depth":
                a = a.astype(np.float64) / (65535.0 if a.dtype == np.uint16 or a.max(initial=0) > 255 else 255.0)
                return a[..., 0] if a.ndim == 3 else a
            return a[..., 0] if a.ndim == 3 else a
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read {kind} file ({type(e).__name__})") from None


class MultimodalFolder(Dataset):
    """Samples as :class:`MultiShapes` (``label`` 0: a folder has no class labels)."""

    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self, config: MultimodalFolderConfig, split: str = "train"):
        self.config = c = config
        root = check_dir(c.path, "multimodal data folder")
        split_dir = os.path.join(root, "train" if split == "train" else "test")
        has_splits = os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test"))
        base = split_dir if has_splits else root
        rgb = _index(os.path.join(base, "rgb"), IMG_EXTENSIONS)
        depth = _index(os.path.join(base, "depth"), (".png", ".tif", ".tiff", ".npy"))
        mask = _index(os.path.join(base, "mask"), (".png", ".tif", ".tiff", ".npy"))
        if not rgb:
            raise DataError(f"{os.path.join(base, 'rgb')}: no images found")
        for stem, p in rgb.items():
            for what, table in (("depth", depth), ("mask", mask)):
                if stem not in table:
                    raise DataError(f"{p}: no {what} file {os.path.join(base, what, stem)}.* for it")
        for what, table in (("depth", depth), ("mask", mask)):
            extra = sorted(set(table) - set(rgb))
            if extra:
                raise DataError(f"{table[extra[0]]}: no rgb file {os.path.join(base, 'rgb', extra[0])}.* for it")
        stems = sorted(rgb)
        if not has_splits and c.val_fraction > 0:
            perm = np.random.default_rng(c.seed).permutation(len(stems))
            n_test = max(1, int(round(len(stems) * c.val_fraction))) if len(stems) > 1 else 0
            keep = perm[:n_test] if split != "train" else perm[n_test:]
            stems = [stems[i] for i in sorted(keep)]
            if not stems:
                raise DataError(f"{root}: too few files for a {split} split (val_fraction {c.val_fraction})")
        s = c.image_size
        imgs, deps, segs = [], [], []
        for stem in stems:
            a, d, m = _read(rgb[stem], "rgb"), _read(depth[stem], "depth"), _read(mask[stem], "mask")
            if d.shape[:2] != a.shape[:2] or m.shape[:2] != a.shape[:2] or d.ndim != 2 or m.ndim != 2:
                raise DataError(f"{rgb[stem]}: rgb is {a.shape[0]}x{a.shape[1]} but depth is "
                                f"{'x'.join(map(str, d.shape))} and mask {'x'.join(map(str, m.shape))} (not aligned)")
            if not np.issubdtype(m.dtype, np.integer) or m.min(initial=0) < 0:
                raise DataError(f"{mask[stem]}: mask must hold non-negative integer class indices")
            imgs.append(F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float(), size=(s, s),
                                      mode="bilinear", align_corners=False, antialias=True)[0])
            deps.append(F.interpolate(torch.from_numpy(np.nan_to_num(d)).float()[None, None], size=(s, s),
                                      mode="bilinear", align_corners=False)[0])
            segs.append(F.interpolate(torch.from_numpy(m.astype(np.int64))[None, None].float(), size=(s, s),
                                      mode="nearest")[0, 0].long())
        self.images = (torch.stack(imgs).clamp(0, 1) - 0.5) / 0.5
        self.depth, self.seg = torch.stack(deps), torch.stack(segs)
        top = int(self.seg.max()) + 1
        if c.num_classes and top > c.num_classes:
            raise DataError(f"{root}: a mask holds class {top - 1} but --num-classes is {c.num_classes}")
        self.seg_classes = c.num_classes or top
        self.labels = torch.zeros(len(stems), dtype=torch.long)
        self.names = stems

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        return {"image": self.images[i], "depth": self.depth[i], "seg": self.seg[i], "label": 0, "index": i}
