"""N-D patch tokens: patchify / unpatchify for 1-D, 2-D, 3-D grids and T x H x W tubelets, and patch embedding.

Token order is row-major over the grid (first spatial axis outermost); inside a token the values are ordered
(*patch axes, channel), as in the MAE reference code (``nchpwq -> nhwpqc``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import MaeError


def _as_tuple(p, n: int) -> tuple[int, ...]:
    if isinstance(p, int):
        return (p,) * n
    p = tuple(int(v) for v in p)
    if len(p) != n:
        raise MaeError(f"patch size {p} has {len(p)} axes but the input has {n} spatial axes")
    return p


def grid_shape(spatial: Sequence[int], patch: Sequence[int] | int) -> tuple[int, ...]:
    """Number of patches along each axis; raises if a size is not divisible by its patch size."""
    patch = _as_tuple(patch, len(spatial))
    for s, p in zip(spatial, patch):
        if s % p:
            raise MaeError(f"input size {tuple(spatial)} is not divisible by patch size {patch}")
    return tuple(s // p for s, p in zip(spatial, patch))


def patchify(x: torch.Tensor, patch: Sequence[int] | int) -> torch.Tensor:
    """(B, C, *S) -> (B, L, prod(patch) * C) for any number of spatial axes (1, 2, 3, or T x H x W)."""
    b, c, *spatial = x.shape
    n = len(spatial)
    patch = _as_tuple(patch, n)
    grid = grid_shape(spatial, patch)
    shape = [b, c]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(shape)
    # axes: 0=B, 1=C, then (g_i, p_i) pairs at 2+2i, 3+2i
    perm = [0] + [2 + 2 * i for i in range(n)] + [3 + 2 * i for i in range(n)] + [1]
    x = x.permute(perm)
    return x.reshape(b, math.prod(grid), math.prod(patch) * c)


def unpatchify(tokens: torch.Tensor, patch: Sequence[int] | int, grid: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, L, prod(patch) * C) -> (B, C, *grid * patch)."""
    b, length, d = tokens.shape
    grid = tuple(grid)
    n = len(grid)
    patch = _as_tuple(patch, n)
    if length != math.prod(grid) or d != math.prod(patch) * channels:
        raise MaeError(
            f"cannot unpatchify tokens of shape {tuple(tokens.shape)} into grid {grid} with patch {patch} "
            f"and {channels} channels"
        )
    x = tokens.reshape(b, *grid, *patch, channels)
    perm = [0, 2 * n + 1]
    for i in range(n):
        perm += [1 + i, 1 + n + i]
    x = x.permute(perm)
    return x.reshape(b, channels, *(g * p for g, p in zip(grid, patch)))


class PatchEmbed(nn.Module):
    """Patch embedding by a convolution with kernel = stride = patch, for 1, 2 or 3 spatial axes.

    Output is (B, L, D) in the same token order as :func:`patchify`.
    """

    def __init__(self, patch_size, in_chans: int, embed_dim: int, ndim: int = 2, bias: bool = True,
                 norm_layer: type[nn.Module] | None = None):
        super().__init__()
        self.ndim = ndim
        self.patch_size = _as_tuple(patch_size, ndim)
        self.in_chans = in_chans
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]
        self.proj = conv(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        # MAE initialises the projection like a linear layer (xavier on the flattened kernel)
        w = self.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def grid(self, spatial: Sequence[int]) -> tuple[int, ...]:
        return grid_shape(spatial, self.patch_size)

    def check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        """Raise a clear error unless ``x`` is (B, in_chans, *S) with S divisible by the patch; return the grid."""
        if x.ndim != self.ndim + 2:
            raise MaeError(f"expected a {self.ndim + 2}-D input (B, C, ...), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise MaeError(f"input has {x.shape[1]} channels but the model expects {self.in_chans}")
        return self.grid(x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2))

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Embed already patchified tokens (B, L, prod(patch) * C) -> (B, L, D) with the same weights as
        :meth:`forward` (the convolution is a linear map per patch). Lets a model embed only the visible patches."""
        w = self.proj.weight  # (D, C, *patch) -> (D, *patch, C), the order of patchify
        w = w.permute(0, *range(2, self.ndim + 2), 1).reshape(w.shape[0], -1)
        return self.norm(torch.nn.functional.linear(patches, w, self.proj.bias))


def PatchEmbed2d(patch_size, in_chans: int, embed_dim: int, **kw) -> PatchEmbed:
    return PatchEmbed(patch_size, in_chans, embed_dim, ndim=2, **kw)


def PatchEmbed3d(patch_size, in_chans: int, embed_dim: int, **kw) -> PatchEmbed:
    """3-D volumes (D, H, W) or video tubelets (T, H, W)."""
    return PatchEmbed(patch_size, in_chans, embed_dim, ndim=3, **kw)
