"""Fixed sin-cos position embeddings for 1-D, 2-D and 3-D grids, and resizing to another grid.

Convention (as in the MAE reference code): the embedding of an N-D grid concatenates 1-D embeddings of the
coordinates, last axis first (for 2-D: half of the channels encode the column, half the row). Each 1-D embedding
is ``[sin(pos * omega), cos(pos * omega)]`` with ``omega_i = 1 / 10000 ** (i / (D / 2))``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import MaeError


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) embedding, computed in float64."""
    if dim % 2:
        raise MaeError(f"sin-cos embedding dimension must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed(dim: int, grid: Sequence[int] | int, num_prefix_tokens: int = 0) -> torch.Tensor:
    """Fixed embedding for an N-D grid, (num_prefix + prod(grid), dim) float32; prefix rows (cls) are zero.

    ``dim`` is split evenly between the axes (each part even); leftover channels are zero.
    """
    grid = (grid,) if isinstance(grid, int) else tuple(grid)
    n = len(grid)
    part = (dim // (2 * n)) * 2
    if part == 0:
        raise MaeError(f"embedding dimension {dim} is too small for a {n}-D sin-cos embedding")
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid], indexing="ij")
    parts = [sincos_1d(part, coords[i]) for i in reversed(range(n))]  # last axis first (MAE convention)
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], dim=1)
    if num_prefix_tokens:
        emb = torch.cat([emb.new_zeros(num_prefix_tokens, dim), emb], dim=0)
    return emb.float()


def resize_pos_embed(pos: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                     num_prefix_tokens: int = 0) -> torch.Tensor:
    """Interpolate a (prefix + prod(old_grid), D) or (1, ..., D) embedding to ``new_grid``.

    Bicubic for 2-D grids, trilinear for 3-D, linear for 1-D; prefix rows (cls tokens) are kept as they are.
    """
    squeeze = pos.ndim == 2
    if squeeze:
        pos = pos[None]
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if pos.shape[1] != num_prefix_tokens + int(torch.tensor(old_grid).prod()):
        raise MaeError(f"position embedding has {pos.shape[1]} rows, expected {num_prefix_tokens} + grid {old_grid}")
    prefix, grid_pos = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    if old_grid != new_grid:
        d = pos.shape[-1]
        x = grid_pos.reshape(pos.shape[0], *old_grid, d).movedim(-1, 1).float()
        mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(old_grid)]
        x = F.interpolate(x, size=new_grid, mode=mode, align_corners=False)
        grid_pos = x.movedim(1, -1).reshape(pos.shape[0], -1, d).to(pos.dtype)
    out = torch.cat([prefix, grid_pos], dim=1)
    return out[0] if squeeze else out
