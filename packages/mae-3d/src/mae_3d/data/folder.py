"""Your own shapes: a folder of point clouds or meshes in class sub-folders (ModelNet layout), or a packed ``.npz``.

Folder layouts, checked in this order:

* ``ROOT/<class>/train/*`` and ``ROOT/<class>/test/*`` (ModelNet);
* ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*``;
* ``ROOT/<class>/*``: a deterministic ``val_fraction`` of each class is held out as the test split.

Files: ``.ply .pcd .xyz .pts .npy .txt`` clouds and ``.off .obj .stl`` meshes (sampled by area). Every cloud is
resampled to ``num_points`` and normalised to the unit sphere. A file that cannot be used (unreadable, empty, NaN,
mesh without triangles, too few points) is skipped with one counted warning per split; if none is usable the
dataset raises a one-line error.

``.npz`` (``--data file.npz`` or a folder holding one): arrays ``train_points`` (N, P, 3), ``train_labels``,
``test_points``, ``test_labels`` and optionally ``class_names``, as in the shared ModelNet10 copy.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.data import numpy_load_error
from mae_core.errors import DataError

from ..io import ALL_EXTS, check_points, read_any
from .shapes import normalize_np


@dataclass
class PointFolderConfig:
    path: str | None = field(None, "folder of clouds / meshes in class sub-folders, or an .npz file")
    num_points: int = field(1024, "points per cloud (subsampled at random, or repeated when a cloud has fewer)", ge=1)
    min_points: int = field(32, "clouds with fewer points are skipped", ge=1)
    val_fraction: float = field(0.2, "held-out fraction per class when the folder has no train / test split",
                                ge=0, lt=1)
    seed: int = field(0, "seed of the point subsampling and of the held-out split")


def resample(points: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    if len(points) == num:
        return points
    if len(points) > num:
        return points[np.sort(rng.choice(len(points), num, replace=False))]
    extra = rng.choice(len(points), num - len(points), replace=True)
    return np.concatenate([points, points[extra]], 0)


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in ALL_EXTS)


def list_samples(root: Path, split: str, val_fraction: float, seed: int) -> tuple[list[tuple[Path, int]], list[str]]:
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (give a folder in class sub-folders or an .npz file)")
    want = "train" if split == "train" else "test"
    if (root / "train").is_dir() and ((root / "test").is_dir() or (root / "val").is_dir()):
        base = root / want if (root / want).is_dir() else root / "val"
        classes = sorted(d.name for d in base.iterdir() if d.is_dir())
        samples = [(f, k) for k, c in enumerate(classes) for f in _files(base / c)]
        return samples, classes
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-folders found")
    modelnet = any((root / c / "train").is_dir() for c in classes)
    samples = []
    for k, c in enumerate(classes):
        if modelnet:
            samples += [(f, k) for f in _files(root / c / want)]
        else:
            files = _files(root / c)
            u = np.random.default_rng([seed, k]).random(len(files))
            samples += [(f, k) for f, x in zip(files, u) if (x < val_fraction) == (split != "train")]
    return samples, classes


class PointFolder(Dataset):
    def __init__(self, config: PointFolderConfig, split: str = "train"):
        self.config = c = config
        if not c.path:
            raise DataError("no data path given (use --data PATH)")
        root = Path(c.path)
        samples, self.classes = list_samples(root, split, c.val_fraction, c.seed)
        if not samples:
            raise DataError(f"{root}: no {split} files with extension {', '.join(ALL_EXTS)} found")
        pts, labels, bad = [], [], []
        for i, (f, k) in enumerate(samples):
            rng = np.random.default_rng([c.seed, i])
            try:
                p = read_any(f, num_points=c.num_points, seed=c.seed + i)
                p = check_points(p, f, min_points=c.min_points)
            except DataError as e:
                bad.append(str(e))
                continue
            pts.append(normalize_np(resample(p, c.num_points, rng)))
            labels.append(k)
        if bad:
            print(f"warning: skipped {len(bad)} of {len(samples)} {split} files in {root} (first: {bad[0]})",
                  file=sys.stderr)
        if not pts:
            raise DataError(f"{root}: none of the {len(samples)} {split} files could be used (first: {bad[0]})")
        self.skipped = len(bad)
        self.points = torch.from_numpy(np.stack(pts))
        self.labels = torch.tensor(labels)
        self.num_classes = len(self.classes)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"points": self.points[i], "label": int(self.labels[i]), "index": i}


class PointNpz(Dataset):
    """Clouds packed in an ``.npz`` (``{split}_points``, ``{split}_labels``), each normalised to the unit sphere."""

    def __init__(self, config: PointFolderConfig, split: str = "train"):
        self.config = c = config
        path = Path(c.path or "")
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if not found:
                raise DataError(f"{path}: no .npz file in this folder")
            path = found[0]
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                key = "train" if split == "train" else "test"
                if f"{key}_points" not in z:
                    raise DataError(f"{path}: no array {key}_points (keys: {', '.join(z.files)})")
                pts = z[f"{key}_points"].astype(np.float32)
                labels = z[f"{key}_labels"].astype(np.int64)
                names = [str(n) for n in z["class_names"]] if "class_names" in z else None
        except DataError:
            raise
        except Exception as e:  # corrupt archive, object arrays (pickles are refused)
            raise numpy_load_error(path, e, ".npz file") from None
        if pts.ndim != 3 or pts.shape[-1] != 3:
            raise DataError(f"{path}: {key}_points must be (N, P, 3), got {pts.shape}")
        finite = np.isfinite(pts).all(axis=(1, 2))
        if not finite.all():
            print(f"warning: skipped {int((~finite).sum())} {key} clouds with NaN / inf in {path}", file=sys.stderr)
            pts, labels = pts[finite], labels[finite]
        rng = np.random.default_rng(c.seed)
        pts = np.stack([normalize_np(resample(p, c.num_points, rng)) for p in pts])
        self.points = torch.from_numpy(pts)
        self.labels = torch.from_numpy(labels)
        self.num_classes = len(names) if names else int(labels.max()) + 1
        self.classes = names or [str(i) for i in range(self.num_classes)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"points": self.points[i], "label": int(self.labels[i]), "index": i}


def build_point_data(config: PointFolderConfig, split: str):
    """``--data PATH``: an ``.npz`` file (or a folder that holds only one) or a folder of files."""
    p = Path(config.path or "")
    if p.suffix.lower() == ".npz" or (p.is_dir() and any(p.glob("*.npz")) and not any(d.is_dir() for d in p.iterdir())):
        return PointNpz(config, split)
    return PointFolder(config, split)
