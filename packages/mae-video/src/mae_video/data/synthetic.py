"""The embedded default: procedurally generated clips of a moving shape on a textured background, labelled by the
motion, with the object's segmentation mask in every frame (for label propagation).

Eight motion classes: the object moves right, left, down or up at constant speed, rotates clockwise or
counter-clockwise in place, bounces (falls to a floor and comes back up), or zooms (grows). The shape (square,
triangle, cross, bar, star, crescent: none of them looks the same after a small rotation), its colour, size, start
position, speed and the background (colour gradient + smooth noise) are random, so only the motion gives the class
away. Deterministic given the seed; 1024 clips of 8 x 32 x 32 are generated in about a second, no download.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.data.shapes import contrasting_colour, shape_masks, textured_background

CLASSES = ["right", "left", "down", "up", "rotate-cw", "rotate-ccw", "bounce", "zoom"]
MOVING = (0, 1, 2, 3, 6)  # classes whose object travels across the frame
SHAPES = (1, 2, 3, 5, 6, 7)  # mae_core shape indices without rotational symmetry at small angles (no disk / ring)
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


@dataclass
class MovingShapesConfig:
    num_frames: int = field(8, "frames per clip", ge=1)
    image_size: int = field(32, "frame side in pixels", ge=1)
    num_train: int = field(1024, "number of training clips", ge=1)
    num_test: int = field(256, "number of held-out test clips", ge=1)
    speed: float = field(0.11, "mean translation speed per frame, in half-widths of the frame", ge=0)
    seed: int = field(0, "generator seed (train and test use different streams)")


def _trajectories(labels: torch.Tensor, t: int, rng: np.random.Generator, speed: float):
    """Per clip and frame: centre (n, T, 2), angle (n, T), scale (n, T)."""
    n = len(labels)
    lab = labels.numpy()
    ts = np.arange(t, dtype=np.float64)[None]  # (1, T)
    mid = (t - 1) / 2
    speed = rng.uniform(0.75, 1.25, (n, 1)) * speed
    centre0 = rng.uniform(-0.2, 0.2, (n, 2))
    jitter = rng.uniform(-0.015, 0.015, (n, 2))  # a small drift for the classes that do not translate
    cx = centre0[:, :1] + jitter[:, :1] * (ts - mid)
    cy = centre0[:, 1:] + jitter[:, 1:] * (ts - mid)
    direction = {0: (1, 0), 1: (-1, 0), 2: (0, 1), 3: (0, -1)}
    for c, (dx, dy) in direction.items():
        sel = lab == c
        cx[sel] = centre0[sel, :1] + dx * speed[sel] * (ts - mid)
        cy[sel] = centre0[sel, 1:] + dy * speed[sel] * (ts - mid)
    sel = lab == 6  # bounce: falls to a floor at mid-clip and comes back up
    cy[sel] = centre0[sel, 1:] - 0.3 + 1.3 * speed[sel] * (mid - np.abs(ts - mid))
    theta0 = rng.uniform(0, 2 * np.pi, (n, 1))
    omega = np.zeros((n, 1))
    omega[lab == 4] = rng.uniform(0.22, 0.35, ((lab == 4).sum(), 1))
    omega[lab == 5] = -rng.uniform(0.22, 0.35, ((lab == 5).sum(), 1))
    theta = theta0 + omega * ts
    scale0 = rng.uniform(0.4, 0.55, (n, 1))
    scale = np.repeat(scale0, t, axis=1)
    sel = lab == 7
    grow = rng.uniform(0.7, 1.0, (sel.sum(), 1))
    scale[sel] = 0.28 + grow * 0.35 * ts / max(t - 1, 1)
    centre = np.stack([cx, cy], -1)
    return (torch.from_numpy(centre).float(), torch.from_numpy(theta).float(), torch.from_numpy(scale).float())



def generate_clips(n: int, num_frames: int = 8, size: int = 32, seed: int = 0, speed: float = 0.11,
                   chunk: int = 128, labels: torch.Tensor | None = None, scenes: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clips (n, 3, T, S, S) uint8, object masks (n, T, S, S) uint8, labels (n,)), deterministic.

    ``labels`` (n,): the motions to draw instead of random ones. ``scenes`` (n,) ints in [0, n): clips of one scene
    share its shape, aspect, background and colour (the shots of one long video); start, speed and the per-frame
    noise stay per clip."""
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    drawn = torch.from_numpy(rng.integers(0, len(CLASSES), n))
    labels = drawn if labels is None else torch.as_tensor(labels).long()
    shapes = torch.from_numpy(np.asarray(SHAPES)[rng.integers(0, len(SHAPES), n)])
    aspect = torch.from_numpy(rng.uniform(0.8, 1.25, n)).float()
    centre, theta, scale = _trajectories(labels, num_frames, rng, speed)
    if scenes is not None:
        scenes = torch.as_tensor(scenes).long()
        shapes, aspect = shapes[scenes], aspect[scenes]
        scene_bg = textured_background(int(scenes.max()) + 1, size, g, noise_cells=max(2, size // 6))
        scene_fg = contrasting_colour(scene_bg, g)
    coords = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    clips = torch.empty(n, 3, num_frames, size, size, dtype=torch.uint8)
    masks = torch.empty(n, num_frames, size, size, dtype=torch.uint8)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        m, t = e - s, num_frames
        cx, cy = centre[s:e, :, 0].reshape(-1, 1, 1), centre[s:e, :, 1].reshape(-1, 1, 1)
        th = theta[s:e].reshape(-1, 1, 1)
        sc = scale[s:e].reshape(-1, 1, 1)
        asp = aspect[s:e].repeat_interleave(t).reshape(-1, 1, 1)
        dx, dy = xx[None] - cx, yy[None] - cy
        c, si = torch.cos(th), torch.sin(th)
        lx = (c * dx + si * dy) / (sc * asp)
        ly = (-si * dx + c * dy) / (sc / asp)
        all_masks = shape_masks(lx, ly)  # (8, m*T, S, S)
        fg = all_masks[shapes[s:e].repeat_interleave(t), torch.arange(m * t)].float()[:, None]
        soft = F.avg_pool2d(F.pad(fg, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 0.5 + fg * 0.5
        soft = soft.reshape(m, t, 1, size, size).transpose(1, 2)  # (m, 1, T, S, S)
        # static textured background: gradient between two colours plus smooth noise
        if scenes is None:
            bg2d = textured_background(m, size, g, noise_cells=max(2, size // 6))  # (m, 3, S, S)
            fgc = contrasting_colour(bg2d, g)[:, :, None]  # (m, 3, 1, 1, 1)
        else:
            bg2d, fgc = scene_bg[scenes[s:e]], scene_fg[scenes[s:e]][:, :, None]
        bg = bg2d[:, :, None]  # (m, 3, 1, S, S)
        video = bg * (1 - soft) + fgc * soft
        video = video + 0.02 * torch.randn(video.shape, generator=g)
        clips[s:e] = (video.clamp(0, 1) * 255).round().to(torch.uint8)
        masks[s:e] = (fg.reshape(m, t, size, size) > 0.5).to(torch.uint8)
    return clips, masks, labels


class MovingShapes(Dataset):
    """Samples ``{"video": (3, T, S, S) in [-1, 1], "label": int, "masks": (T, S, S) uint8, "index": i}``."""

    classes = CLASSES
    mean, std = MEAN, STD

    def __init__(self, config: MovingShapesConfig | None = None, split: str = "train"):
        self.config = c = config or MovingShapesConfig()
        n = c.num_train if split == "train" else c.num_test
        seed = c.seed * 2 + (0 if split == "train" else 1)
        self.clips, self.masks, self.labels = generate_clips(n, c.num_frames, c.image_size, seed, c.speed)
        self.num_classes = len(CLASSES)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        video = (self.clips[i].float() / 255.0 - 0.5) / 0.5
        return {"video": video, "label": int(self.labels[i]), "masks": self.masks[i], "index": i}
