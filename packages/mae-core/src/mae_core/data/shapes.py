"""An embedded, procedurally generated, labelled image dataset: eight classes of textured shapes on textured
backgrounds. Each class is a shape with its own fill pattern (solid disk, checkered square, striped triangle,
dotted cross, spoked ring, banded bar, speckled star, shaded crescent); no two classes coincide under rotation.

Deterministic given the seed, generated in memory in well under a second, no download. Each image has a random
centre, scale, rotation and aspect, a random foreground colour and a background made of a colour gradient plus
smooth noise, so neither colour nor position gives the class away.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import field

CLASSES = ["disk", "square", "triangle", "cross", "ring", "bar", "star", "crescent"]
FILLS = ["solid", "checker", "stripes", "dots", "spokes", "bands", "speckle", "shading"]
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


@dataclass
class ShapesConfig:
    image_size: int = field(32, "image side in pixels", ge=1)
    num_train: int = field(4096, "number of training images", ge=1)
    num_test: int = field(1024, "number of held-out test images", ge=1)
    seed: int = field(0, "generator seed (train and test use different streams)")


def shape_masks(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Implicit masks of every class at local coordinates, (8, N, S, S) bool."""
    r = torch.sqrt(x**2 + y**2)
    phi = torch.atan2(y, x)
    return torch.stack([
        r < 1.0,
        torch.maximum(x.abs(), y.abs()) < 0.8,
        (y > -0.55) & (y < 0.95 - 1.732 * x.abs()),
        ((x.abs() < 0.3) & (y.abs() < 1.0)) | ((y.abs() < 0.3) & (x.abs() < 1.0)),
        (r < 1.0) & (r > 0.55),
        (x.abs() < 1.0) & (y.abs() < 0.3),
        r < 0.6 + 0.4 * torch.cos(5 * phi),
        (r < 1.0) & (((x - 0.5) ** 2 + y**2).sqrt() > 0.75),
    ])


def _fill_patterns(x: torch.Tensor, y: torch.Tensor, period: torch.Tensor, speckle: torch.Tensor) -> torch.Tensor:
    """Fill pattern of every class at local coordinates, (8, N, S, S) in [0, 1] (1 = full foreground colour)."""
    r = torch.sqrt(x**2 + y**2)
    phi = torch.atan2(y, x)
    p = period[:, None, None]
    fx, fy = torch.remainder(x, p) / p, torch.remainder(y, p) / p
    return torch.stack([
        torch.ones_like(x),
        ((torch.floor(x / p) + torch.floor(y / p)) % 2),
        (fy < 0.5).float(),
        (((fx - 0.5) ** 2 + (fy - 0.5) ** 2) < 0.09).float(),
        (torch.cos(6 * phi) > 0).float(),
        (torch.remainder(r, p) / p < 0.5).float(),
        speckle,
        ((x + 1) / 2).clamp(0, 1),
    ]).float()


def textured_background(n: int, size: int, g: torch.Generator, noise_cells: int = 4) -> torch.Tensor:
    """(n, 3, S, S) backgrounds in [0, 1]: a gradient between two random colours in a random direction (75 %) plus
    smooth noise upsampled from a ``noise_cells`` x ``noise_cells`` grid (25 %). Shared by the video shapes."""
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    bg1 = torch.rand(n, 3, 1, 1, generator=g)
    bg2 = torch.rand(n, 3, 1, 1, generator=g)
    ang = torch.rand(n, 1, 1, generator=g) * 2 * np.pi
    ramp = ((torch.cos(ang) * xx[None] + torch.sin(ang) * yy[None]) * 0.5 + 0.5)[:, None]
    noise = F.interpolate(torch.rand(n, 3, noise_cells, noise_cells, generator=g), size=(size, size),
                          mode="bilinear", align_corners=False)
    return 0.75 * (bg1 + (bg2 - bg1) * ramp) + 0.25 * noise


def contrasting_colour(bg: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(n, 3, 1, 1) random foreground colours; one too close to the background's mean colour is replaced by its
    complement, so the shape always stands out."""
    fgc = torch.rand(bg.shape[0], 3, 1, 1, generator=g)
    bgmean = bg.mean(dim=(2, 3), keepdim=True)
    return torch.where((fgc - bgmean).abs().mean(1, keepdim=True) < 0.3, 1.0 - bgmean, fgc)


def generate_shapes(n: int, size: int = 32, seed: int = 0, return_geometry: bool = False):
    """(images (n, 3, size, size) in [0, 1], labels (n,)), deterministic. ``return_geometry`` also returns
    ``{"mask": (n, S, S) bool shape pixels, "radius": (n, S, S) distance from the shape's centre in its own
    (scaled, rotated) coordinates, "scale": (n,)}`` of the same scenes (the multimodal shapes' depth and classes)."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    labels = torch.from_numpy(rng.integers(0, len(CLASSES), n))
    cx, cy = (torch.from_numpy(rng.uniform(-0.25, 0.25, (2, n))).float())
    scale = torch.from_numpy(rng.uniform(0.45, 0.7, n)).float()
    aspect = torch.from_numpy(rng.uniform(0.8, 1.25, n)).float()
    theta = torch.from_numpy(rng.uniform(0, 2 * np.pi, n)).float()
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    lx = (c * dx + s * dy) / (scale * aspect)[:, None, None]
    ly = (-s * dx + c * dy) / (scale / aspect)[:, None, None]
    masks = shape_masks(lx, ly)  # (8, n, S, S)
    fg = masks[labels, torch.arange(n)].float()[:, None]  # (n, 1, S, S)
    period = torch.from_numpy(rng.uniform(0.45, 0.65, n)).float()
    speckle = (torch.rand(n, size, size, generator=g) < 0.5).float()
    fill = _fill_patterns(lx, ly, period, speckle)[labels, torch.arange(n)][:, None]  # (n, 1, S, S)
    # soften edges slightly so shapes are not aliased
    fg = F.avg_pool2d(F.pad(fg, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 0.5 + fg * 0.5
    bg = textured_background(n, size, g, noise_cells=max(2, size // 8))
    fgc = contrasting_colour(bg, g) * (0.45 + 0.55 * fill)
    img = bg * (1 - fg) + fgc * fg
    img = img + 0.03 * torch.randn(img.shape, generator=g)
    if return_geometry:
        geometry = {"mask": masks[labels, torch.arange(n)], "radius": torch.sqrt(lx**2 + ly**2), "scale": scale}
        return img.clamp(0, 1), labels, geometry
    return img.clamp(0, 1), labels


class SyntheticShapes(Dataset):
    """Samples are dicts ``{"image": (3, S, S) normalised to [-1, 1], "label": int}``."""

    classes = CLASSES
    mean, std = MEAN, STD

    def __init__(self, config: ShapesConfig | None = None, split: str = "train"):
        self.config = config = config or ShapesConfig()
        n = config.num_train if split == "train" else config.num_test
        seed = config.seed * 2 + (0 if split == "train" else 1)
        images, self.labels = generate_shapes(n, config.image_size, seed)
        self.images = (images - 0.5) / 0.5
        self.num_classes = len(CLASSES)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i]), "index": i}

