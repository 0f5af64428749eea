"""Hi-End-MAE (Tang et al., "Hi-End-MAE: Hierarchical encoder-driven masked autoencoders are stronger vision
learners for medical image segmentation", 2025; code FengheTan9/Hi-End-MAE, ``hi_end_mae.py``, ``networks/vit.py``).

A 3-D ViT MAE whose decoder reads the encoder at several depths:

- random masking of 75 % of the patches (``int(L x 0.25)`` kept), the encoder (cls token + fixed 3-D sin-cos
  positions) runs on the visible patches only;
- the raw outputs of the encoder blocks at 1/4, 1/2 and 3/4 depth (block indices ``depth // 4``, ``depth // 2``,
  ``3 depth // 4`` counted from 0: 3, 6, 9 of 12 as the reference; un-normed, cls token included) and the final
  (normed) output each get their own linear projection to the decoder width;
- decoder: the projected final output plus mask tokens (and decoder sin-cos positions; none on the cls token)
  through ``decoder_depth`` self-attention blocks, then one block per tap (self-attention -> cross-attention -> MLP,
  mae-core ``CrossBlock``) whose keys / values are the projected taps, **deepest tap first, shallowest last**; as in
  the reference the cross-attention context is the projection itself (no LayerNorm on it);
- loss: MSE on the masked patches against the patches layer-normalised one by one (LayerNorm without affine,
  eps 1e-6, biased variance).

``decoder_kind`` gives the ablations of the benchmark: ``last`` keeps the same decoder (and parameters) but every
cross block attends to the projected final output instead of a tap; ``plain`` is an MAE decoder of self-attention
blocks only, ``decoder_depth + round(4 n / 3)`` of them for n taps (a cross block has 16 d^2 weights, a self-attention
block 12 d^2), i.e. about the same parameter count.

Input: ``batch["image"]`` (B, C, D, H, W) when present, otherwise the modalities of ``modality_names`` stacked as
channels (the embedded synthetic brains). Deviation: tokens stay in grid order (the reference keeps them shuffled,
visible first); attention does not depend on the token order, so this is the same computation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers import (Block, CrossBlock, LayerNorm, PatchEmbed3d, grid_shape, patchify, sincos_pos_embed,
                             unpatchify)
from mae_core.losses import masked_mse
from mae_core.masking import MaskInfo, gather_tokens, restore_tokens
from mae_core.models import MAEDecoder, MaskedAutoencoder, ModelOutput, ViTConfig

from ..inputs import stacked_input

DECODER_KINDS = ("hi-end", "last", "plain")


@dataclass
class HiEndMAEConfig(ViTConfig):
    modality_names: list[str] = field(["t1", "t1ce", "t2", "flair"], "batch keys stacked as input channels when the "
                                      "batch has no 'image' (follows the data's --modalities)")
    img_size: int = field(48, "side of the cubic training crop in voxels (follows the data)")
    patch_size: int = field(8, "side of a cubic 3-D patch in voxels (reference: 16 or 12 at 96^3)")
    embed_dim: int = field(96, "encoder width (reference: 768 / 1536)")
    depth: int = field(12, "encoder blocks (12 as the reference and UNETR: taps at blocks 3, 6, 9)")
    num_heads: int = field(4, "encoder attention heads")
    decoder_embed_dim: int = field(64, "decoder width (reference: 384 for ViT-B)")
    decoder_depth: int = field(2, "self-attention decoder blocks before the cross blocks (reference: 2)")
    decoder_num_heads: int = field(4, "decoder attention heads")
    taps: list[int] = field([], "encoder block indices (from 0) the cross blocks read, shallow to deep (default: "
                            "depth // 4, depth // 2, 3 depth // 4)")
    decoder_kind: str = field("hi-end", "hi-end: cross blocks read the taps, deepest first; last: they all read "
                              "the final output (ablation); plain: MAE self-attention decoder of equal size",
                              choices=list(DECODER_KINDS))


def default_taps(depth: int) -> list[int]:
    return [depth // 4, depth // 2, 3 * depth // 4]


def layernorm_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each (…, P) patch normalised to zero mean and unit (biased) variance: the reference's
    ``nn.LayerNorm(P, eps=1e-6, elementwise_affine=False)``."""
    return F.layer_norm(patches, patches.shape[-1:], eps=eps)


class HiEndDecoder(nn.Module):
    """Projections of the taps and the final output, self-attention blocks, then one cross block per tap."""

    def __init__(self, embed_dim: int, dim: int, self_depth: int, num_taps: int, num_heads: int, pred_dim: int,
                 pos_embed: torch.Tensor, mlp_ratio: float = 4.0, kind: str = "hi-end"):
        super().__init__()
        self.kind = kind
        # proj[i] for tap i (shallow -> deep), proj[-1] for the final output (reference: encoder_to_decoder)
        self.proj = nn.ModuleList([nn.Linear(embed_dim, dim) for _ in range(num_taps + 1)])
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", pos_embed.reshape(1, -1, dim).clone(), persistent=False)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio=mlp_ratio) for _ in range(self_depth)])
        self.cross_blocks = nn.ModuleList([CrossBlock(dim, num_heads, mlp_ratio=mlp_ratio, context_dim=dim)
                                           for _ in range(num_taps)])
        for blk in self.cross_blocks:
            blk.norm_ctx = nn.Identity()  # the reference's CrossAttentionBlock norms the queries only
        self.norm = LayerNorm(dim)
        self.pred = nn.Linear(dim, pred_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def contexts(self, latent: torch.Tensor, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        """What the cross blocks attend to, in their order: the projected taps deepest first (``last``: the
        projected final output for every block)."""
        if self.kind == "last":
            return [self.proj[i](latent) for i in reversed(range(len(self.cross_blocks)))]
        return [self.proj[i](t) for i, t in reversed(list(enumerate(taps)))]

    def forward(self, latent: torch.Tensor, taps: list[torch.Tensor], ids_restore: torch.Tensor,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        x = self.proj[-1](latent)
        pos = self.pos_embed if pos is None else pos
        x = torch.cat([x[:, :1], restore_tokens(x[:, 1:], self.mask_token, ids_restore) + pos], dim=1)
        for blk in self.blocks:
            x = blk(x)
        for blk, ctx in zip(self.cross_blocks, self.contexts(latent, taps)):
            x = blk(x, ctx)
        return self.pred(self.norm(x[:, 1:]))


class HiEndMAE(MaskedAutoencoder):
    method_name = "hi-end-mae"
    pool = "mean"

    def __init__(self, config: HiEndMAEConfig):
        super().__init__()
        self.config = c = config
        if not c.modality_names or len(set(c.modality_names)) != len(c.modality_names):
            raise MaeError(f"hi-end-mae: modality names must be unique and non-empty, got {c.modality_names}")
        self.modalities = list(c.modality_names)
        self.in_chans = len(self.modalities)
        self.tap_ids = list(c.taps) if c.taps else default_taps(c.depth)
        if any(not 0 <= t < c.depth for t in self.tap_ids):
            raise MaeError(f"hi-end-mae: taps {self.tap_ids} must lie in [0, depth={c.depth})")
        self.grid = grid_shape((c.img_size,) * 3, c.patch_size)
        self.patch_embed = PatchEmbed3d(c.patch_size, self.in_chans, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        pred_dim = c.patch_size ** 3 * self.in_chans
        dec_pos = sincos_pos_embed(c.decoder_embed_dim, self.grid)
        plain_depth = c.decoder_depth + round(4 * len(self.tap_ids) / 3)
        self.build_mae(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                       decoder_dim=c.decoder_embed_dim, decoder_depth=plain_depth, decoder_heads=c.decoder_num_heads,
                       pred_dim=pred_dim, decoder_pos=dec_pos, mask_ratio=c.mask_ratio, mlp_ratio=c.mlp_ratio,
                       drop_path=c.drop_path)
        if c.decoder_kind != "plain":
            self.decoder = HiEndDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, len(self.tap_ids),
                                        c.decoder_num_heads, pred_dim, dec_pos, c.mlp_ratio, c.decoder_kind)
        self.init_weights()
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    # ---- input --------------------------------------------------------------------------------------------------------
    def volume(self, batch: dict) -> torch.Tensor:
        """(B, C, D, H, W): ``batch["image"]``, or the model's modalities stacked as channels."""
        x = stacked_input(batch, self.modalities, "hi-end-mae")
        self.patch_embed.check_input(x)
        return x

    def _pos(self, x: torch.Tensor, dim: int, cached: torch.Tensor) -> torch.Tensor:
        grid = self.patch_embed.grid(x.shape[-3:])
        return cached if grid == self.grid else sincos_pos_embed(dim, grid)[None].to(x.device)

    def tokenize(self, batch):
        """Raw voxel patches (B, L, p^3 C) in :func:`patchify` order; embedded after masking."""
        x = self.volume(batch)
        return patchify(x, self.config.patch_size), self._pos(x, self.config.embed_dim, self.pos_embed)

    def embed_tokens(self, tokens):
        return self.patch_embed.embed_patches(tokens)

    def target(self, batch):
        return patchify(self.volume(batch), self.config.patch_size)

    def prepare_target(self, target):
        return layernorm_patches(target)

    # ---- pre-training -------------------------------------------------------------------------------------------------
    def forward_encoder_taps(self, tokens, pos, mask: MaskInfo):
        """(normed final output, [raw outputs of the tapped blocks, shallow -> deep]) of the visible tokens."""
        x = self.embed_tokens(gather_tokens(tokens, mask.ids_keep))
        pos = gather_tokens(pos.expand(tokens.shape[0], -1, -1), mask.ids_keep)
        if self.config.decoder_kind == "plain":
            return self.encoder(x, pos), []
        return self.encoder(x, pos, taps=self.tap_ids)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        x = self.volume(batch)
        patches = patchify(x, self.config.patch_size)
        pos = self._pos(x, self.config.embed_dim, self.pos_embed)
        mask = self.make_mask(batch, patches, generator)
        latent, taps = self.forward_encoder_taps(patches, pos, mask)
        dpos = self._pos(x, self.config.decoder_embed_dim, self.decoder.pos_embed)
        if isinstance(self.decoder, MAEDecoder):
            pred = self.decoder(latent, mask.ids_restore, pos=dpos)
        else:
            pred = self.decoder(latent, taps, mask.ids_restore, pos=dpos)
        target = self.prepare_target(patches)
        loss = masked_mse(pred, target, mask.mask)
        return ModelOutput(loss=loss, pred=pred, mask=mask.mask, target=target)

    @torch.no_grad()
    def reconstruct(self, batch: dict, generator=None) -> dict[str, torch.Tensor]:
        """Volumes (B, C, D, H, W): ``input``, ``masked`` (hidden patches zero) and ``reconstruction`` (predicted
        patches brought back to each patch's own mean and spread, visible patches pasted back), as the reference's
        ``return_image``."""
        x = self.volume(batch)
        out = self(batch, generator=generator)
        patches = patchify(x, self.config.patch_size)
        mean = patches.mean(-1, keepdim=True)
        std = (patches.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()
        m = out.mask[..., None]
        grid = self.patch_embed.grid(x.shape[-3:])
        back = lambda t: unpatchify(t, self.config.patch_size, grid, self.in_chans)  # noqa: E731
        return {"input": x, "masked": back(patches * (1 - m)),
                "reconstruction": back((out.pred.float() * std + mean) * m + patches * (1 - m)), "mask": out.mask}

    def layer_id(self, name: str) -> int:
        if name.startswith("decoder"):
            return self.encoder.depth + 1
        return super().layer_id(name)
