"""MemMC-MAE (Tian et al., "Unsupervised anomaly detection in medical images with a memory-augmented
multi-level cross-attentional masked autoencoder"): an image MAE trained on normal images only, where

- every encoder self-attention is memory-augmented: a learnable bank of memory slots (keys and values per block)
  that the tokens also attend to, so normal patterns are stored in the weights
  (mae-core ``Attention(extra_kv=...)``, forwarded by ``Block(**attn_kw)``);
- the decoder cross-attends to several encoder levels (mae-core ``CrossBlock``: decoder block i uses level i);
- anomaly score of an image: the reconstruction error of the masked patches averaged over K random masks; a
  per-pixel anomaly map from the same errors (each pixel averaged over the masks that hid it).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.layers import Block, CrossBlock, PatchEmbed2d, grid_shape, patchify, sincos_pos_embed, unpatchify
from mae_core.losses import masked_mse
from mae_core.masking import gather_tokens, random_masking, restore_tokens
from mae_core.models import MaskedAutoencoder, ModelOutput, TransformerEncoder


@dataclass
class AnomalyMAEConfig:
    img_size: int = field(32, "input image side in pixels")
    patch_size: int = field(4, "patch side in pixels")
    in_chans: int = field(1, "image channels")
    embed_dim: int = field(128, "encoder width")
    depth: int = field(4, "encoder blocks")
    num_heads: int = field(4, "encoder attention heads")
    memory_slots: int = field(16, "learnable memory slots per encoder block")
    levels: int = field(3, "encoder levels the decoder cross-attends to (the last ones); also the decoder depth")
    decoder_embed_dim: int = field(96, "decoder width")
    decoder_num_heads: int = field(4, "decoder attention heads")
    mlp_ratio: float = field(4.0, "MLP hidden width / block width")
    mask_ratio: float = field(0.75, "fraction of patches hidden from the encoder")
    num_masks: int = field(8, "K: random masks averaged for the anomaly score and map")


class MemoryBlock(nn.Module):
    """A pre-norm transformer block whose self-attention also attends to ``num_slots`` learned memory slots."""

    def __init__(self, dim: int, num_heads: int, num_slots: int = 16, **kw):
        super().__init__()
        self.block = Block(dim, num_heads, **kw)
        hd = dim // num_heads
        self.memory_k = nn.Parameter(torch.randn(1, num_heads, num_slots, hd) * 0.02)
        self.memory_v = nn.Parameter(torch.randn(1, num_heads, num_slots, hd) * 0.02)

    def forward(self, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
        b = x.shape[0]
        mem = (self.memory_k.expand(b, -1, -1, -1).to(x.dtype), self.memory_v.expand(b, -1, -1, -1).to(x.dtype))
        return self.block(x, attn_mask=attn_mask, extra_kv=mem)


class AnomalyMAE(MaskedAutoencoder):
    method_name = "anomaly-mae"
    pool = "mean"

    def __init__(self, config: AnomalyMAEConfig):
        super().__init__()
        self.config = c = config
        if not 1 <= c.levels <= c.depth:
            raise ValueError(f"levels must be between 1 and depth ({c.depth}), got {c.levels}")
        self.grid = grid_shape((c.img_size, c.img_size), c.patch_size)
        self.mask_ratio = c.mask_ratio
        self.norm_pix_loss = False
        self.patch_embed = PatchEmbed2d(c.patch_size, c.in_chans, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          block_fn=functools.partial(MemoryBlock, num_slots=c.memory_slots))
        # decoder: mask tokens + positions, one CrossBlock per encoder level (deepest level first)
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.decoder_mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.register_buffer("decoder_pos", sincos_pos_embed(c.decoder_embed_dim, self.grid)[None],
                             persistent=False)
        self.decoder_blocks = nn.ModuleList([CrossBlock(c.decoder_embed_dim, c.decoder_num_heads,
                                                        mlp_ratio=c.mlp_ratio, context_dim=c.embed_dim)
                                             for _ in range(c.levels)])
        self.decoder_level_norms = nn.ModuleList([nn.LayerNorm(c.embed_dim) for _ in range(c.levels)])
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patch_size**2 * c.in_chans)
        self.init_weights()
        nn.init.normal_(self.decoder_mask_token, std=0.02)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def tokenize(self, batch):
        return self.patch_embed(batch["image"]), self.pos_embed

    def target(self, batch):
        return patchify(batch["image"], self.config.patch_size)

    def forward_masked(self, batch: dict, generator=None):
        tokens, pos = self.tokenize(batch)
        mask = self.make_mask(batch, tokens, generator)
        x = gather_tokens(tokens, mask.ids_keep)
        p = gather_tokens(pos.expand(tokens.shape[0], -1, -1), mask.ids_keep)
        latent, hidden = self.encoder(x, p, return_hidden=True)
        levels = hidden[-self.config.levels:][::-1]  # deepest first
        levels[0] = latent  # the normed output for the deepest level
        y = self.decoder_embed(latent)
        y = restore_tokens(y[:, 1:], self.decoder_mask_token, mask.ids_restore) + self.decoder_pos
        for blk, norm, ctx in zip(self.decoder_blocks, self.decoder_level_norms, levels):
            y = blk(y, norm(ctx))
        pred = self.decoder_pred(self.decoder_norm(y))
        return pred, mask

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        pred, mask = self.forward_masked(batch, generator)
        target = self.target(batch)
        return ModelOutput(loss=masked_mse(pred, target, mask.mask), pred=pred, mask=mask.mask, target=target)

    @torch.no_grad()
    def anomaly(self, images: torch.Tensor, num_masks: int | None = None, generator=None):
        """(image scores (B,), per-pixel maps (B, H, W)) from K random masks."""
        self.eval()
        k = num_masks or self.config.num_masks
        batch = {"image": images}
        target = self.target(batch)
        err_sum = torch.zeros_like(target)
        count = torch.zeros_like(target[..., :1])
        scores = torch.zeros(images.shape[0], device=images.device)
        for _ in range(k):
            pred, mask = self.forward_masked(batch, generator)
            e = (pred.float() - target) ** 2
            m = mask.mask[..., None]
            err_sum += e * m
            count += m
            scores += (e.mean(-1) * mask.mask).sum(1) / mask.mask.sum(1)
        per_token = err_sum / count.clamp_min(1)
        c = self.config
        maps = unpatchify(per_token, c.patch_size, self.grid, c.in_chans).mean(1)
        return scores / k, maps

    def layer_id(self, name: str) -> int:
        if name.startswith("decoder_"):
            return self.encoder.depth + 1
        return super().layer_id(name)
