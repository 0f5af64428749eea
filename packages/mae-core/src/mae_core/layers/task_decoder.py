"""One task's decoder of a multi-task, multi-modal MAE (MultiMAE's ``SpatialOutputAdapter``).

The encoder saw the visible tokens of several modalities laid out modality after modality (``tasks``, each a grid
of ``L`` tokens) plus prefix (global) tokens. The decoder

1. projects the encoder tokens to its own width,
2. re-inserts its mask token at every hidden position (``ids_restore``) and adds a learned embedding per modality
   plus the fixed 2-D sin-cos position of each token,
3. takes as queries the tokens of its own modality (visible ones carry the encoder's output, hidden ones the mask
   token) or, when that modality was not an input, mask token + position + task embedding,
4. lets the queries cross-attend to the visible tokens of every modality and the global tokens (no residual around
   the cross-attention, as in the reference), then ``x + MLP(LN(x))``, then ``depth`` self-attention blocks,
5. predicts ``out_dim`` values per token with a linear head.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..masking import gather_tokens, restore_tokens
from .blocks import Block, CrossAttention, LayerNorm, Mlp
from .pos_embed import sincos_pos_embed


class SpatialTaskDecoder(nn.Module):
    def __init__(self, encoder_dim: int, dim: int, depth: int, num_heads: int, out_dim: int, grid: Sequence[int],
                 tasks: Sequence[str], query_task: str, mlp_ratio: float = 4.0, num_prefix_tokens: int = 1):
        super().__init__()
        self.query_task, self.num_prefix_tokens = query_task, num_prefix_tokens
        self.proj_context = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.task_embed = nn.ParameterDict({t: nn.Parameter(torch.zeros(1, 1, dim)) for t in tasks})
        self.register_buffer("pos_embed", sincos_pos_embed(dim, grid)[None], persistent=False)
        self.query_norm, self.context_norm, self.out_norm = LayerNorm(dim), LayerNorm(dim), LayerNorm(dim)
        self.cross = CrossAttention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.head = nn.Linear(dim, out_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for p in self.task_embed.values():
            nn.init.trunc_normal_(p, std=0.02)

    def queries_and_context(self, latent: torch.Tensor, ids_keep: torch.Tensor, ids_restore: torch.Tensor,
                            tasks: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries (B, L, dim), context (B, K + prefix, dim)) for encoder output ``latent`` (B, prefix + K, D)."""
        p = self.num_prefix_tokens
        ctx = self.proj_context(latent)
        prefix, full = ctx[:, :p], restore_tokens(ctx[:, p:], self.mask_token, ids_restore)
        length = self.pos_embed.shape[1]
        if full.shape[1] != length * len(tasks):
            raise ValueError(f"decoder: {full.shape[1]} tokens for {len(tasks)} modalities of {length} tokens")
        full = full + torch.cat([self.task_embed[t] + self.pos_embed for t in tasks], dim=1).to(full.dtype)
        if self.query_task in tasks:
            i = list(tasks).index(self.query_task)
            queries = full[:, i * length:(i + 1) * length]
        else:
            q = self.mask_token + self.pos_embed + self.task_embed[self.query_task]
            queries = q.to(full.dtype).expand(full.shape[0], -1, -1)
        return queries, torch.cat([gather_tokens(full, ids_keep), prefix], dim=1)

    def forward(self, latent: torch.Tensor, ids_keep: torch.Tensor, ids_restore: torch.Tensor,
                tasks: Sequence[str]) -> torch.Tensor:
        """(B, L, out_dim) predictions for every token of this decoder's modality."""
        queries, context = self.queries_and_context(latent, ids_keep, ids_restore, tasks)
        x = self.cross(self.query_norm(queries), self.context_norm(context))
        x = x + self.mlp(self.out_norm(x))
        for blk in self.blocks:
            x = blk(x)
        return self.head(x)
