"""I2P-MAE's multi-view depth projection and its image-to-point back-projection, in batched torch (no scatter
extension, no gradients needed).

A view is a permutation of the axes (the reference's ``proj2img`` on ``pts``, ``cat(z, x, y)``, ``cat(y, z, x)``):
the first two coordinates give the pixel (row, column), the third is the value. Per cloud and view, as the
reference:

    grid = (largest extent of the two plane coordinates) / (S - 3);  pixel = floor((p - min) / grid)
    every point splatted on the (2 r + 1)^2 pixels around it (+1), the splatted box centred in the S x S image
    image = sigmoid(sum of the splatted depths per pixel)  (an empty pixel is sigmoid(0) = 0.5)

Back-projection (the reference's ``I2P``): a point's pixel is ``floor((p - min) / grid) + 1`` plus the same centring
shift, and a (B, C, h, w) map (a ViT's patch features or cls attention) is resized bicubically to S x S and read at
that pixel. ``depth_input`` maps an image to the ViT input: ``(image - 0.5) / 0.5`` on one channel (the reference
feeds three copies normalised by ImageNet statistics to CLIP; the teacher here is trained on these maps).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

VIEWS = ((0, 1, 2), (2, 0, 1), (1, 2, 0))  # axis order per view: (row, column, depth)


@dataclass
class ViewFrame:
    """Where one view put each cloud: plane minimum (B, 1, 2), pixel size (B, 1, 1), centring shift (B, 1, 2)."""
    low: torch.Tensor
    grid: torch.Tensor
    shift: torch.Tensor
    size: int


def splat_offsets(radius: int, device=None) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2).float()  # ((2r+1)^2, 2)


@torch.no_grad()
def project_view(points: torch.Tensor, size: int, radius: int = 1) -> tuple[torch.Tensor, ViewFrame]:
    """(B, N, 3) in view order -> (image (B, 1, S, S) in (0, 1), frame)."""
    b, n, _ = points.shape
    pts = points.float()
    low_all, high_all = pts.amin(1), pts.amax(1)
    grid = ((high_all - low_all)[:, :2].amax(-1) / (size - 3)).clamp_min(1e-12)[:, None, None]  # (B, 1, 1)
    low = low_all[:, None, :2]
    idx = torch.floor((pts[..., :2] - low) / grid)  # (B, N, 2)
    off = splat_offsets(radius, pts.device)
    dense = (idx[:, :, None] + off[None, None]).reshape(b, -1, 2) + 1  # (B, N K, 2)
    centre = torch.floor((dense.amax(1) + dense.amin(1)) / 2)  # (B, 2)
    shift = (size / 2 - centre - 1)[:, None]  # (B, 1, 2)
    dense = (dense + shift).clamp(0, size - 1).long()
    flat = dense[..., 0] * size + dense[..., 1]
    values = pts[..., 2:3].expand(-1, -1, off.shape[0]).reshape(b, -1)
    img = torch.zeros(b, size * size, device=pts.device).scatter_add_(1, flat, values)
    return torch.sigmoid(img).view(b, 1, size, size), ViewFrame(low, grid, shift, size)


def pixels(points: torch.Tensor, frame: ViewFrame) -> torch.Tensor:
    """(B, N, 3) in view order -> (B, N, 2) long (row, column) of each point's own pixel (no splat)."""
    idx = torch.floor((points[..., :2].float() - frame.low) / frame.grid) + 1 + frame.shift
    return idx.clamp(0, frame.size - 1).long()


def read_map(fmap: torch.Tensor, pix: torch.Tensor, size: int) -> torch.Tensor:
    """A (B, C, h, w) map resized bicubically to S x S, read at pixels (B, N, 2) -> (B, N, C)."""
    b, c = fmap.shape[:2]
    if fmap.shape[-2:] != (size, size):
        fmap = F.interpolate(fmap.float(), size=(size, size), mode="bicubic", align_corners=False)
    flat = (pix[..., 0] * size + pix[..., 1])  # (B, N)
    return torch.gather(fmap.reshape(b, c, -1), 2, flat[:, None].expand(-1, c, -1)).transpose(1, 2)


def project_views(points: torch.Tensor, size: int, radius: int = 1):
    """The three views of (B, N, 3): (images (3, B, 1, S, S), [frame per view])."""
    out = [project_view(points[..., list(v)], size, radius) for v in VIEWS]
    return torch.stack([o[0] for o in out]), [o[1] for o in out]


def back_project(points: torch.Tensor, maps: torch.Tensor, frames: list[ViewFrame]) -> torch.Tensor:
    """Read each view's map (3, B, C, h, w) at the pixels of ``points`` (B, N, 3) -> (3, B, N, C)."""
    return torch.stack([read_map(maps[i], pixels(points[..., list(v)], frames[i]), frames[i].size)
                        for i, v in enumerate(VIEWS)])


def depth_input(images: torch.Tensor) -> torch.Tensor:
    """Depth images in (0, 1) -> the 2-D teacher's input (one channel, empty pixels at 0)."""
    return (images - 0.5) / 0.5
