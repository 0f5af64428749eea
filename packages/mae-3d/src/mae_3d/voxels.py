"""Point <-> voxel conversion of DiT-3D (``DiT-3D/DiT-3D``, ``modules/voxelization.py`` and the trilinear
devoxelisation of ``modules/functional``), in batched torch without the CUDA extensions.

    voxelize:   centre each cloud, divide by twice its largest norm, + 0.5, x r, clamp to [0, r - 1]: the continuous
                voxel coordinates; each point goes to the voxel of its rounded coordinates and every voxel holds the
                mean of its points' features (``avg_voxelize``), 0 where empty
    devoxelize: trilinear interpolation of a (B, C, r, r, r) grid at those continuous coordinates (the reference's
                ``trilinear_devoxelize``: corners floor / floor + 1, ``F.grid_sample`` with ``align_corners=True``)

DiT-3D voxelises the noisy cloud with the cloud's own coordinates as features, runs the transformer on the grid and
devoxelises its per-voxel output back to one noise prediction per point.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def voxel_coords(points: torch.Tensor, resolution: int, eps: float = 0.0) -> torch.Tensor:
    """(B, N, 3) -> (B, N, 3) continuous voxel coordinates in [0, r - 1] (the reference's ``normalize=True``)."""
    centred = points - points.mean(1, keepdim=True)
    scale = centred.norm(dim=-1).amax(1).clamp_min(1e-12)[:, None, None] * 2.0 + eps
    return ((centred / scale + 0.5) * resolution).clamp(0, resolution - 1)


def voxel_index(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, N) flat index of each point's voxel (rounded coordinates, first axis outermost)."""
    v = torch.round(coords).long()
    return (v[..., 0] * resolution + v[..., 1]) * resolution + v[..., 2]


def voxelize(features: torch.Tensor, coords: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the (B, N, C) point features in each voxel: (grid (B, C, r, r, r), point counts (B, r, r, r))."""
    b, n, c = features.shape
    r3 = resolution ** 3
    idx = voxel_index(coords, resolution)
    sums = features.new_zeros(b, r3, c).scatter_add(1, idx[..., None].expand(-1, -1, c), features)
    counts = features.new_zeros(b, r3).scatter_add(1, idx, features.new_ones(b, n))
    grid = sums / counts.clamp_min(1)[..., None]
    shape = (b, resolution, resolution, resolution)
    return grid.transpose(1, 2).reshape(b, c, *shape[1:]), counts.reshape(shape)


def devoxelize(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of (B, C, r, r, r) at (B, N, 3) continuous voxel coordinates -> (B, N, C)."""
    r = grid.shape[-1]
    g = coords / max(r - 1, 1) * 2 - 1  # grid_sample wants (x, y, z) = (last, middle, first axis)
    out = F.grid_sample(grid, g.flip(-1)[:, :, None, None].to(grid.dtype), mode="bilinear", align_corners=True)
    return out[:, :, :, 0, 0].transpose(1, 2)
