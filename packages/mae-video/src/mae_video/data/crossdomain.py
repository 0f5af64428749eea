"""Source + target video data for cross-domain few-shot learning (CDFSL-V): the labelled source domain is the
moving-shapes clips (8 motions), the unlabelled target domain stick figures (:mod:`mae_video.data.stickfigures`:
procedural, or MSR Action3D skeletons with ``--skeletons``). The target's training split is the unlabelled target
data; its test split (unseen sequences, for MSR unseen subjects) is where few-shot episodes are drawn.

- ``cdfsl-pretrain`` (stage 1): the source and target training clips together, shuffled by the loader, for
  VideoMAE pretraining on both domains. ``label`` is the source motion (0-7) or 8 + the target action, so a probe
  of a run reads both; ``domain`` is 0 (source) or 1 (target).
- ``cdfsl-paired`` (stage 2): item ``i`` is source clip ``i`` with its label and target clip ``perm(i)`` without
  one (``target_video``), where ``perm`` cycles through a fixed shuffle of the target clips, so an epoch over the
  source sees the target data as the reference's ``cycle(target_loader)``. The test split pairs the source test
  clips with the target test clips.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field

from .stickfigures import StickFigures, StickFiguresConfig
from .synthetic import CLASSES, MovingShapes, MovingShapesConfig


@dataclass
class CrossDomainConfig:
    num_frames: int = field(8, "frames per clip (both domains)", ge=2)
    image_size: int = field(32, "frame side in pixels (both domains)", ge=8)
    num_source: int = field(1024, "labelled source (moving-shapes) training clips", ge=1)
    num_source_test: int = field(256, "source test clips", ge=1)
    skeletons: str = field("", "target domain: MSR Action3D skeleton folder or .tar.gz; empty: procedural stick "
                               "figures")
    num_target: int = field(400, "procedural target training sequences (MSR: the training subjects')", ge=1)
    num_target_test: int = field(300, "procedural target test sequences (MSR: the test subjects')", ge=1)
    target_repeats: int = field(2, "renders of each target training sequence", ge=1)
    seed: int = field(0, "generator seed of both domains")


@dataclass
class CDFSLPretrainConfig(CrossDomainConfig):
    pass


@dataclass
class CDFSLPairedConfig(CrossDomainConfig):
    pass


def source_config(c: CrossDomainConfig) -> MovingShapesConfig:
    return MovingShapesConfig(num_frames=c.num_frames, image_size=c.image_size, num_train=c.num_source,
                              num_test=c.num_source_test, seed=c.seed)


def target_config(c: CrossDomainConfig) -> StickFiguresConfig:
    return StickFiguresConfig(skeletons=c.skeletons, num_frames=c.num_frames, image_size=c.image_size,
                              num_train=c.num_target, num_test=c.num_target_test, repeats=c.target_repeats,
                              seed=c.seed)


_CACHE: dict = {}


def domains(c: CrossDomainConfig, split: str) -> tuple[MovingShapes, StickFigures]:
    """The two domains' splits, built once per process and settings."""
    key = (tuple(sorted(vars(c).items())), split)
    if key not in _CACHE:
        _CACHE.clear()  # one setting at a time: the clips are a few hundred MB at most
        _CACHE[key] = (MovingShapes(source_config(c), split), StickFigures(target_config(c), split))
    return _CACHE[key]


class CDFSLPretrain(Dataset):
    """Source and target clips together (module docstring)."""

    mean, std = MovingShapes.mean, MovingShapes.std

    def __init__(self, config: CrossDomainConfig | None = None, split: str = "train"):
        self.config = c = config or CDFSLPretrainConfig()
        self.source, self.target = domains(c, split)
        self.classes = list(CLASSES) + [f"target: {a}" for a in self.target.classes]
        self.num_classes = len(self.classes)
        self.labels = torch.cat([self.source.labels, self.target.labels + len(CLASSES)])

    def __len__(self):
        return len(self.source) + len(self.target)

    def __getitem__(self, i):
        ns = len(self.source)
        if i < ns:
            return {"video": self.source[i]["video"], "label": int(self.labels[i]), "domain": 0, "index": i}
        return {"video": self.target[i - ns]["video"], "label": int(self.labels[i]), "domain": 1, "index": i}


class CDFSLPaired(Dataset):
    """Labelled source clips paired with unlabelled target clips (module docstring)."""

    mean, std = MovingShapes.mean, MovingShapes.std
    classes = CLASSES

    def __init__(self, config: CrossDomainConfig | None = None, split: str = "train"):
        self.config = c = config or CDFSLPairedConfig()
        self.source, self.target = domains(c, split)
        self.labels = self.source.labels
        self.num_classes = len(CLASSES)
        self.perm = torch.from_numpy(np.random.default_rng([c.seed, 7]).permutation(len(self.target)))

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        j = int(self.perm[i % len(self.perm)])
        return {"video": self.source[i]["video"], "label": int(self.labels[i]),
                "target_video": self.target[j]["video"], "index": i}
