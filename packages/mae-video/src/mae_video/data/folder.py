"""Your own videos: a folder with one sub-folder per class (video files, or sub-folders of frame images), or a CSV
of ``path,label`` rows (an optional third column ``split`` = train / test).

A folder with ``train/`` and ``test/`` sub-folders uses them as the splits; otherwise a deterministic, class
stratified ``test_fraction`` of the clips is held out. Every file is probed once when the dataset is built: a
corrupt or unreadable file, or a single-frame one, is skipped with a warning that names it, and counted in
``skipped``; clips shorter than a sample's span are counted in one warning (their last frame is repeated).
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError

from .io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_frame_folder, probe_video, read_frames, resize_crop, \
    sample_indices


@dataclass
class VideoFolderConfig:
    path: str = field("", "folder of class sub-folders, or a CSV file of path,label[,split]")
    num_frames: int = field(8, "frames sampled per clip", ge=1)
    stride: int = field(2, "frame stride between sampled frames", ge=1)
    image_size: int = field(32, "crop side in pixels", ge=1)
    short_side: int = field(0, "frames are resized so their short side is this many pixels, then cropped "
                                "(0 = 1.14 x image_size)", ge=0)
    test_fraction: float = field(0.2, "held-out fraction per class when the data has no train/test split", ge=0, lt=1)
    seed: int = field(0, "seed of the split and of the random crops / start frames")


def _scan_folder(root: Path) -> list[tuple[Path, str]]:
    items = []
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for p in sorted(cls_dir.iterdir()):
            if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
                items.append((p, cls_dir.name))
            elif p.is_dir() and is_frame_folder(p):
                items.append((p, cls_dir.name))
    return items


def _read_csv(path: Path) -> list[tuple[Path, str, str | None]]:
    rows = []
    with open(path, newline="") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            if n == 1 and row[0].strip().lower() in ("path", "file", "video"):
                continue  # header
            if len(row) < 2:
                raise DataError(f"{path}:{n}: expected 'path,label', got {','.join(row)!r}")
            p = Path(row[0].strip())
            p = p if p.is_absolute() else path.parent / p
            rows.append((p, row[1].strip(), row[2].strip().lower() if len(row) > 2 and row[2].strip() else None))
    return rows


def _stratified_split(labels: list[int], fraction: float, seed: int) -> set[int]:
    """Indices held out for test: ``fraction`` of each class (at least one when a class has two or more)."""
    g = torch.Generator().manual_seed(seed)
    test = set()
    lab = torch.tensor(labels)
    for c in lab.unique():
        idx = (lab == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(len(idx) * fraction)
        if len(idx) >= 2:
            k = max(1, min(k, len(idx) - 1))
        test.update(idx[:k].tolist())
    return test


class VideoFolderDataset(Dataset):
    """Samples ``{"video": (3, T, S, S) in [-1, 1], "label": int, "index": i}``."""

    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self, config: VideoFolderConfig, split: str = "train"):
        self.config = c = config
        self.split = split
        root = Path(c.path)
        if not c.path:
            raise DataError("give --data PATH: a folder of class sub-folders or a CSV of path,label")
        if not root.exists():
            raise DataError(f"{root}: no such file or folder")
        if root.is_file():
            rows = _read_csv(root)
            items = [(p, lab) for p, lab, _ in rows]
            split_of = [s for _, _, s in rows]
            explicit = any(s is not None for s in split_of)
        elif (root / "train").is_dir() and (root / "test").is_dir():
            items = _scan_folder(root / split)
            split_of, explicit = [split] * len(items), True
        else:
            items = _scan_folder(root)
            split_of, explicit = [None] * len(items), False
        if not items:
            raise DataError(f"{root}: no videos found (expected class sub-folders with "
                            f"{'/'.join(e.lstrip('.') for e in VIDEO_EXTENSIONS)} files or frame folders of "
                            f"{'/'.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)} images)")
        names = sorted({lab for _, lab in items}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
        self.classes = names
        self.num_classes = len(names)
        to_id = {n: i for i, n in enumerate(names)}
        if explicit:
            keep = [i for i, s in enumerate(split_of) if (s or "train") == split]
        else:
            test = _stratified_split([to_id[lab] for _, lab in items], c.test_fraction, c.seed)
            keep = [i for i in range(len(items)) if (i in test) == (split == "test")]
        self.samples, self.lengths, self.skipped = [], [], []
        for i in keep:
            p, lab = items[i]
            try:
                n = probe_video(p)
                if n < 2:  # clamped sampling would repeat it: a still picture posing as a clip
                    raise DataError(f"{p}: a single frame (a still image, not a video)")
            except DataError as e:
                warnings.warn(f"skipped {e}", stacklevel=2)
                self.skipped.append(str(p))
                continue
            self.samples.append((p, to_id[lab]))
            self.lengths.append(n)
        if self.skipped:
            warnings.warn(f"{root}: skipped {len(self.skipped)} unreadable or single-frame file(s) of the {split} "
                          "split", stacklevel=2)
        if not self.samples:
            raise DataError(f"{root}: no readable video of two or more frames in the {split} split "
                            f"(first skipped: {self.skipped[0] if self.skipped else 'none'})")
        span = (c.num_frames - 1) * c.stride + 1
        short = [n for n in self.lengths if n < span]
        if short:  # sampled with the last frame repeated: say how many
            warnings.warn(f"{root}: {len(short)} of {len(self.lengths)} {split} clips have fewer frames than a sample "
                          f"spans ({span} = {c.num_frames} frames x stride {c.stride}; shortest {min(short)}); their "
                          "last frame is repeated", stacklevel=2)
        self.labels = torch.tensor([t for _, t in self.samples], dtype=torch.long)
        self._gen = torch.Generator().manual_seed(c.seed)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        c = self.config
        path, label = self.samples[i]
        train = self.split == "train"
        idx = sample_indices(self.lengths[i], c.num_frames, c.stride,
                             start=None if train else (self.lengths[i] - (c.num_frames - 1) * c.stride - 1) // 2,
                             generator=self._gen)
        frames = read_frames(path, idx)
        short = c.short_side or round(c.image_size * 1.14)
        video = resize_crop(frames, c.image_size, short, random_crop=train, generator=self._gen)
        if not torch.isfinite(video).all():
            raise DataError(f"{path}: decoded frames contain NaN or inf values")
        return {"video": (video - 0.5) / 0.5, "label": label, "index": i}
