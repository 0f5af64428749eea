"""An embedded, procedurally generated stand-in for electron-microscopy sections: cells as the Voronoi regions of
random seeds in warped coordinates (so membranes wander instead of running straight), dark membranes between them,
textured cell interiors with dark organelles (distractors that look like membrane locally), blur and noise.

Every sample carries its instance labels (``instances``: the cell id of each pixel) and the boundary map derived
from them (``seg``: 1 where a 4-neighbour belongs to another cell, 0 inside a cell), so a grid probe can score
boundary Dice (:mod:`mae_core.eval.grid`). ``label`` is the number of cells minus the minimum (a counting class for
the classification probes). Deterministic given the seed, generated in memory, no download.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import field
from ..errors import ConfigError


@dataclass
class MembranesConfig:
    image_size: int = field(32, "image side in pixels", ge=8)
    num_train: int = field(2048, "number of training images", ge=1)
    num_test: int = field(256, "number of held-out test images", ge=1)
    min_cells: int = field(5, "fewest cells per image", ge=2)
    max_cells: int = field(10, "most cells per image", ge=2)
    warp: float = field(0.12, "amplitude of the smooth coordinate warp (fraction of the side): wavy membranes", ge=0)
    noise: float = field(0.12, "standard deviation of the pixel noise (intensities in [0, 1])", ge=0)
    seed: int = field(0, "generator seed (train and test use different streams)")

    def validate(self, where: str = "data") -> None:
        if self.max_cells < self.min_cells:
            raise ConfigError(f"{where}.max_cells ({self.max_cells}) must be at least min_cells ({self.min_cells})")


def smooth_field(n: int, size: int, cells: int, g: torch.Generator, channels: int = 1) -> torch.Tensor:
    """(n, channels, size, size) smooth noise in [-1, 1]: a ``cells`` x ``cells`` uniform grid, bicubic upsampling."""
    low = torch.rand(n, channels, cells, cells, generator=g) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def boundaries(instances: torch.Tensor) -> torch.Tensor:
    """(..., H, W) instance ids -> (..., H, W) long, 1 where a 4-neighbour has another id (both sides of a
    membrane), else 0."""
    b = torch.zeros_like(instances, dtype=torch.bool)
    dv = instances[..., 1:, :] != instances[..., :-1, :]
    dh = instances[..., :, 1:] != instances[..., :, :-1]
    b[..., 1:, :] |= dv
    b[..., :-1, :] |= dv
    b[..., :, 1:] |= dh
    b[..., :, :-1] |= dh
    return b.long()


def generate_membranes(n: int, cfg: MembranesConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (n, 1, S, S) in [0, 1], instances (n, S, S) long, cell counts (n,)), deterministic."""
    g = torch.Generator().manual_seed(seed)
    s, k_max = cfg.image_size, cfg.max_cells
    counts = torch.randint(cfg.min_cells, k_max + 1, (n,), generator=g)
    seeds = torch.rand(n, k_max, 2, generator=g)  # (x, y) in [0, 1]
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    warp = cfg.warp * smooth_field(n, s, 4, g, channels=2)  # (n, 2, S, S)
    px, py = xx[None] + warp[:, 0], yy[None] + warp[:, 1]
    d = (px[:, None] - seeds[:, :, 0, None, None]) ** 2 + (py[:, None] - seeds[:, :, 1, None, None]) ** 2
    unused = torch.arange(k_max)[None, :] >= counts[:, None]  # (n, K): seeds beyond the image's count
    d = d.masked_fill(unused[:, :, None, None], float("inf"))
    inst = d.argmin(1)  # (n, S, S)
    # cell interiors: a grey level per cell and a smooth texture
    level = 0.55 + 0.3 * torch.rand(n, k_max, generator=g)
    img = torch.gather(level, 1, inst.flatten(1)).view(n, 1, s, s)
    img = img + 0.08 * smooth_field(n, s, max(2, s // 4), g)
    # organelles: up to three dark disks per image, radius 1-2.5 px, inside cells
    centres = torch.rand(n, 3, 2, generator=g) * s
    radius = 1.0 + 1.5 * torch.rand(n, 3, generator=g)
    present = torch.rand(n, 3, generator=g) < 0.8
    pix = torch.stack([xx, yy], -1) * s  # (S, S, 2) in pixels
    dist = ((pix[None, None] - centres[:, :, None, None]) ** 2).sum(-1).sqrt()  # (n, 3, S, S)
    blob = ((dist < radius[:, :, None, None]) & present[:, :, None, None]).any(1, keepdim=True).float()
    img = img * (1 - blob) + 0.3 * blob
    # membranes: dark, fading in places (darkness varies smoothly along them)
    mem = boundaries(inst)[:, None].float()
    darkness = 0.3 + 0.2 * smooth_field(n, s, 4, g)
    img = img * (1 - mem) + darkness * mem
    img = 0.5 * img + 0.5 * F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1)  # slight blur
    img = img + cfg.noise * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1), inst, counts


class SyntheticMembranes(Dataset):
    """Samples are dicts ``{"image": (1, S, S) normalised to [-1, 1], "seg": (S, S) boundary map, "instances":
    (S, S) cell ids, "label": cell count - min_cells, "index": i}``."""

    mean, std = (0.5,), (0.5,)
    in_chans = 1

    def __init__(self, config: MembranesConfig | None = None, split: str = "train"):
        self.config = config = config or MembranesConfig()
        config.validate()
        n = config.num_train if split == "train" else config.num_test
        images, self.instances, counts = generate_membranes(n, config, config.seed * 2 + (split != "train"))
        self.images = (images - 0.5) / 0.5
        self.seg = boundaries(self.instances)
        self.labels = counts - config.min_cells
        self.num_classes = config.max_cells - config.min_cells + 1

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "seg": self.seg[i], "instances": self.instances[i],
                "label": int(self.labels[i]), "index": i}
