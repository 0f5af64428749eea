"""A decoder block that cross-attends from query tokens to several tapped encoder features.

The taps come from ``TransformerEncoder(..., taps=(i, j, ...))`` (raw block outputs) or from a teacher. Each tap
gets its own LayerNorm (block outputs of different depths have different scales), then the taps become one context:

- ``mix="weighted"``: a learned softmax-weighted sum of the taps (CrossMAE's feature mixing; every tap has the same
  number of tokens), starting from the plain average;
- ``mix="concat"``: the taps side by side along the token axis, each plus a learned level embedding (starting at
  zero) so that attention can tell the levels apart; tap lengths may differ.

The block itself is the core :class:`~mae_core.layers.CrossBlock` (optional self-attention over the queries,
cross-attention to the context, MLP). One block per level with a single tap each gives a hierarchical decoder
(decoder block i reads encoder level i).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from .blocks import CrossBlock, LayerNorm

MIXES = ("weighted", "concat")


class TapCrossBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_taps: int, context_dim: int | None = None,
                 mix: str = "weighted", mlp_ratio: float = 4.0, qkv_bias: bool = True, self_attention: bool = True,
                 drop_path: float = 0.0, init_values: float | None = None,
                 norm_layer: Callable[..., nn.Module] = LayerNorm):
        super().__init__()
        if mix not in MIXES:
            raise ValueError(f"TapCrossBlock mix must be one of {MIXES}, got {mix!r}")
        if num_taps < 1:
            raise ValueError(f"TapCrossBlock needs at least one tap, got num_taps={num_taps}")
        context_dim = context_dim or dim
        self.mix, self.num_taps = mix, num_taps
        self.tap_norms = nn.ModuleList([norm_layer(context_dim) for _ in range(num_taps)])
        if mix == "weighted":
            self.tap_logits = nn.Parameter(torch.zeros(num_taps))
        else:
            self.level_pos_embed = nn.Parameter(torch.zeros(num_taps, context_dim))
        self.block = CrossBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, context_dim=context_dim,
                                drop_path=drop_path, init_values=init_values, norm_layer=norm_layer,
                                self_attention=self_attention)

    def tap_weights(self) -> torch.Tensor:
        """The mixing weights of ``mix="weighted"`` (softmax of the learned logits, summing to 1)."""
        return self.tap_logits.softmax(0)

    def context(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The (B, M, context_dim) tokens the queries attend to."""
        if len(taps) != self.num_taps:
            raise ValueError(f"TapCrossBlock was built for {self.num_taps} taps, got {len(taps)}")
        normed = [norm(t) for norm, t in zip(self.tap_norms, taps)]
        if self.mix == "weighted":
            w = self.tap_weights().to(normed[0].dtype)
            return sum(wi * t for wi, t in zip(w, normed))
        return torch.cat([t + self.level_pos_embed[i].to(t.dtype) for i, t in enumerate(normed)], dim=1)

    def forward(self, x: torch.Tensor, taps: Sequence[torch.Tensor], attn_mask: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Queries (B, N, dim) and taps [(B, M_i, context_dim), ...] -> (B, N, dim)."""
        return self.block(x, self.context(taps), attn_mask=attn_mask, context_mask=context_mask)
