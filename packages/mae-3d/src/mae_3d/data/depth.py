"""Depth maps of the embedded shapes (``shapes3d-depth``): each cloud of :class:`~mae_3d.data.shapes.Shapes3D`
projected from I2P-MAE's three views (:mod:`mae_3d.project`), the images its 2-D teacher is trained on. Built from
the embedded synthetic shapes only, never from a labelled benchmark the student is evaluated on.

The image methods live in mae-core and read core datasets only, so the default 2-D teacher is trained on these maps
written once to an ``.npz`` (:func:`depth_npz`, the ``image-array`` layout, cached beside the teachers)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import torch
from torch.utils.data import Dataset

from mae_core.config import field, to_dict
from mae_core.teacher import cached_dir

from ..project import VIEWS, depth_input, project_view
from .shapes import Shapes3D, Shapes3DConfig


@dataclass
class ShapesDepthConfig(Shapes3DConfig):
    image_size: int = field(32, "depth-map side in pixels", ge=8)
    splat: int = field(1, "each point drawn on the (2 r + 1)^2 pixels around it (the reference: r = 2 at 224 px)",
                       ge=0)


class ShapesDepth(Dataset):
    """``{"image": (1, S, S), "label": int, "index": i}``: sample i is view ``i % 3`` of shape ``i // 3``."""

    in_chans = 1

    def __init__(self, config: ShapesDepthConfig, split: str = "train"):
        self.config = config
        self.shapes = Shapes3D(config, split)
        self.num_classes = self.shapes.num_classes
        self.labels = self.shapes.labels.repeat_interleave(len(VIEWS))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        pts = self.shapes.points[i // len(VIEWS)][None]
        img, _ = project_view(pts[..., list(VIEWS[i % len(VIEWS)])], self.config.image_size, self.config.splat)
        return {"image": depth_input(img[0]), "label": int(self.labels[i]), "index": i}


def depth_npz(config: ShapesDepthConfig) -> Path:
    """``depth.npz`` (``train_images`` / ``train_labels`` / ``test_images`` / ``test_labels``, images in (0, 1),
    (N, 1, S, S) float32) of both splits, written once per config under the teacher cache."""
    def build(out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for split in ("train", "test"):
            ds = ShapesDepth(config, split)
            imgs = torch.stack([ds[i]["image"] for i in range(len(ds))]) * 0.5 + 0.5  # back to (0, 1)
            arrays[f"{split}_images"] = imgs.numpy().astype(np.float32)
            arrays[f"{split}_labels"] = ds.labels.numpy()
        tmp = out / "depth.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(out / "depth.npz")

    out = cached_dir("depth", "shapes3d", to_dict(config), "depth maps", build, done=("depth.npz",),
                     how="3 views of every embedded shape")
    return out / "depth.npz"
