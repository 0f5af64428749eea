"""The one-layer decoders of the reference text MAEs are Hugging Face ``BertLayer``s: **post-norm** (the residual
sum is normalised, LayerNorm eps 1e-12), exact GELU. :class:`PostNormLayer` composes mae-core's ``CrossAttention``
and ``Mlp`` that way:

    x   = LN1(q + Attention(q, kv, kv))       (kv = q: ordinary self-attention)
    out = LN2(x + MLP(x))

RetroMAE / DupMAE use it as the enhanced decoder (queries and keys / values from different streams, RetroMAE's
``BertLayerForDecoder``); Starbucks as a vanilla one-layer BERT encoder over its decoder input.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from mae_core.layers.blocks import CrossAttention, Mlp

BERT_LN_EPS = 1e-12


class PostNormLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = CrossAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim, eps=BERT_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.norm2 = nn.LayerNorm(dim, eps=BERT_LN_EPS)

    def forward(self, q: torch.Tensor, kv: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``q`` (B, Lq, D), ``kv`` (B, Lk, D) or None (self-attention); ``attn_mask`` bool, True = may attend,
        broadcastable to (B, heads, Lq, Lk)."""
        x = self.norm1(q + self.attn(q, q if kv is None else kv, attn_mask=attn_mask))
        return self.norm2(x + self.mlp(x))
