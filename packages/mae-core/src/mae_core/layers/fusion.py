"""Co-attention fusion of two token streams (METER / M3AE's ``BertCrossLayer`` pair; HiCMAE's cross-modal fusion).

One :class:`CoAttentionLayer` holds one :class:`~mae_core.layers.CrossBlock` per stream. Each stream runs
self-attention over itself, cross-attention from its tokens to the *other* stream, then an MLP. Both streams read
the other stream's input to the layer (not its updated output), so the two updates are simultaneous and the layer
is symmetric, as the reference calls ``text_layer(x, y)`` and ``image_layer(y, x)`` on the same ``x, y``.

The two streams may have different widths (``dim_b``) and head counts. Padding masks are ``(B, L)`` bool, True =
a real token; a padded token is never attended to, neither by its own stream nor by the other.

Deviation from the reference layers: the blocks are pre-norm (mae-core's :class:`CrossBlock`), not BERT's post-norm.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .blocks import CrossBlock, LayerNorm


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, L) bool (True = real) -> (B, 1, 1, L), broadcast over heads and queries."""
    return None if mask is None else mask.bool()[:, None, None, :]


class CoAttentionLayer(nn.Module):
    """Two streams ``a`` (B, La, dim) and ``b`` (B, Lb, dim_b) -> updated ``(a, b)`` of the same shapes."""

    def __init__(self, dim: int, num_heads: int, dim_b: int | None = None, num_heads_b: int | None = None,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 init_values: float | None = None, norm_layer: Callable[..., nn.Module] = LayerNorm):
        super().__init__()
        dim_b = dim_b or dim
        num_heads_b = num_heads_b or num_heads
        self.block_a = CrossBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, context_dim=dim_b,
                                  drop_path=drop_path, init_values=init_values, norm_layer=norm_layer)
        self.block_b = CrossBlock(dim_b, num_heads_b, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, context_dim=dim,
                                  drop_path=drop_path, init_values=init_values, norm_layer=norm_layer)

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask_a: torch.Tensor | None = None,
                mask_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ka, kb = _key_mask(mask_a), _key_mask(mask_b)
        a_new = self.block_a(a, b, attn_mask=ka, context_mask=kb)
        b_new = self.block_b(b, a, attn_mask=kb, context_mask=ka)
        return a_new, b_new


class CoAttentionStack(nn.Module):
    """``depth`` :class:`CoAttentionLayer` s in a row. ``forward(..., return_hidden=True)`` also returns the
    ``(a, b)`` pair *entering* every layer and the final pair: ``hidden[i]`` is the input of layer ``i`` (so
    ``hidden[0]`` is the unfused input and ``hidden[depth]`` the output), the indexing M3AE's ``mim_layer`` uses."""

    def __init__(self, depth: int, dim: int, num_heads: int, **kw):
        super().__init__()
        if depth < 1:
            raise ValueError(f"CoAttentionStack needs at least one layer, got depth={depth}")
        self.layers = nn.ModuleList([CoAttentionLayer(dim, num_heads, **kw) for _ in range(depth)])

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, a: torch.Tensor, b: torch.Tensor, mask_a: torch.Tensor | None = None,
                mask_b: torch.Tensor | None = None, return_hidden: bool = False):
        hidden = [(a, b)]
        for layer in self.layers:
            a, b = layer(a, b, mask_a, mask_b)
            hidden.append((a, b))
        return (a, b, hidden) if return_hidden else (a, b)
