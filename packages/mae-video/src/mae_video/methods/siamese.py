"""The siamese masked autoencoder shared by SiamMAE and CropMAE.

One ViT encoder (2-D patches, fixed sin-cos positions, a cls token) sees the first view unmasked and the second
view with a very high mask ratio. The decoder projects both to its width (one shared ``decoder_embed``); the masked
view gets mask tokens back and decoder positions, the unmasked view (the context, cls included) gets no decoder
position. As the authors' released code (CropMAE repository, ``DecoderBlock``, used for both SiamMAE and CropMAE),
each decoder block is post-norm: cross-attention to the context, then the feed-forward network, then
self-attention, each as ``x = LayerNorm(x + Dropout(sublayer(x)))`` with dropout 0.1 (also on the attention
weights and inside the FFN), GELU, LayerNorm eps 1e-6. ``decoder_block = "prenorm"`` keeps the earlier variant
(pre-norm self-attention -> cross-attention -> MLP, ``mae_core.layers.CrossBlock``, positions on the context too).
The loss is the MSE on the masked patches of the second view (targets normalised per patch). A method only says how the two views are made
(:meth:`SiameseMAE.make_views`): two frames of a video (SiamMAE) or a global and a local crop of one frame
(CropMAE).

Downstream, the encoder runs on each frame alone: ``encode`` concatenates the per-frame features of a clip (so a
linear probe can see the order of frames) and ``frame_features`` gives the dense per-frame patch features used by
label propagation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers import CrossBlock, PatchEmbed2d, grid_shape, patchify, sincos_pos_embed, unpatchify
from mae_core.losses import masked_mse, normalize_patches
from mae_core.masking import uniform_noise, random_masking, restore_tokens
from mae_core.models import MaskedAutoencoder, ModelOutput, TransformerEncoder, ViTConfig


@dataclass
class SiameseConfig(ViTConfig):
    num_frames: int = field(8, "frames per clip, for the probe feature size (follows the data: --data-num-frames)",
                            ge=1)
    img_size: int = field(32, "frame side in pixels (follows the data: set it with --image-size)", ge=1)
    patch_size: int = field(4, "patch side in pixels", ge=1)
    in_chans: int = field(3, "colour channels", ge=1)
    decoder_depth: int = field(2, "decoder blocks (self-attention, cross-attention to the other view, MLP)")
    mask_ratio: float = field(0.95, "mask ratio of the second view (at least one patch stays visible)")
    norm_pix_loss: bool = field(True, "normalise each target patch by its mean and variance")
    decoder_block: str = field("reference", "decoder block: reference (post-norm cross-attention -> FFN -> "
                                            "self-attention, dropout, as the authors' code) or prenorm (pre-norm "
                                            "self -> cross -> MLP, positions on the context)",
                               choices=["reference", "prenorm"])
    decoder_dropout: float = field(0.1, "dropout of the reference decoder block (attention weights, FFN, residuals)",
                                   ge=0, lt=1)
    decoder_ffn_dim: int = field(0, "hidden width of the reference block's FFN (0 = mlp_ratio x decoder width; the "
                                    "authors' code uses 2048 at every width, as the ViT presets)", ge=0)


class PostNormCrossBlock(nn.Module):
    """The reference decoder block: ``x = LN(x + drop(cross(x, context)))``, ``x = LN(x + drop(FFN(x)))``,
    ``x = LN(x + drop(self(x)))`` (the context is used as it comes, not normalised)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float = 0.1, eps: float = 1e-6):
        super().__init__()
        self.cross = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.norm_cross, self.norm_ffn, self.norm_self = (nn.LayerNorm(dim, eps=eps) for _ in range(3))
        self.drop = nn.ModuleList(nn.Dropout(dropout) for _ in range(3))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm_cross(x + self.drop[0](self.cross(x, context, context, need_weights=False)[0]))
        x = self.norm_ffn(x + self.drop[1](self.ffn(x)))
        return self.norm_self(x + self.drop[2](self.attn(x, x, x, need_weights=False)[0]))


class CrossDecoder(nn.Module):
    """Decoder of the masked view: project, re-insert mask tokens, add positions, then the blocks (each attends to
    the projected unmasked view), the decoder norm and the pixel head."""

    def __init__(self, embed_dim: int, decoder_dim: int, depth: int, num_heads: int, pred_dim: int,
                 pos_embed: torch.Tensor, mlp_ratio: float = 4.0, block: str = "reference", dropout: float = 0.1,
                 ffn_dim: int = 0):
        super().__init__()
        self.block = block
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", pos_embed.reshape(1, -1, decoder_dim).clone(), persistent=False)
        if block == "reference":
            blocks = [PostNormCrossBlock(decoder_dim, num_heads, ffn_dim or int(decoder_dim * mlp_ratio), dropout)
                      for _ in range(depth)]
        else:
            blocks = [CrossBlock(decoder_dim, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(decoder_dim, eps=1e-6 if block == "reference" else 1e-5)
        self.pred = nn.Linear(decoder_dim, pred_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, context: torch.Tensor,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        """latent (B, 1 + K, D) of the masked view, context (B, 1 + L, D) of the unmasked view -> (B, L, P)."""
        pos = self.pos_embed if pos is None else pos
        x = self.embed(latent)
        x = torch.cat([x[:, :1], restore_tokens(x[:, 1:], self.mask_token, ids_restore) + pos], dim=1)
        ctx = self.embed(context)
        if self.block != "reference":  # the earlier variant also put decoder positions on the context
            ctx = torch.cat([ctx[:, :1], ctx[:, 1:] + pos], dim=1)
        for blk in self.blocks:
            x = blk(x, ctx)
        return self.pred(self.norm(x[:, 1:]))


def uniform(shape, generator, device) -> torch.Tensor:
    """Uniform [0, 1) numbers from the trainer's masking generator (plain or sharded), as the mask draws."""
    return uniform_noise(tuple(shape), generator, device)


class SiameseMAE(MaskedAutoencoder):
    pool = "cls+mean"

    def __init__(self, config: SiameseConfig):
        super().__init__()
        self.config = c = config
        self.grid = grid_shape((c.img_size, c.img_size), c.patch_size)
        self.patch_embed = PatchEmbed2d(c.patch_size, c.in_chans, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.mask_ratio = c.mask_ratio
        self.norm_pix_loss = c.norm_pix_loss
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          drop_path=c.drop_path, num_prefix_tokens=1)
        self.decoder = CrossDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads,
                                    c.patch_size**2 * c.in_chans, sincos_pos_embed(c.decoder_embed_dim, self.grid),
                                    mlp_ratio=c.mlp_ratio, block=c.decoder_block, dropout=c.decoder_dropout,
                                    ffn_dim=c.decoder_ffn_dim)
        self.init_weights()
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    # ---- what SiamMAE / CropMAE supply -------------------------------------------------------------------------------
    def make_views(self, batch: dict, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(unmasked view, masked view), each (B, C, H, W)."""
        raise NotImplementedError

    # ---- shared path -----------------------------------------------------------------------------------------------
    def _pos(self, size, dim: int, default: torch.Tensor, device) -> torch.Tensor:
        grid = grid_shape(size, self.config.patch_size)
        if grid == self.grid:
            return default.reshape(1, -1, dim)
        return sincos_pos_embed(dim, grid)[None].to(device)

    def tokenize(self, batch):
        x = batch["image"]
        return self.patch_embed(x), self._pos(x.shape[-2:], self.config.embed_dim, self.pos_embed, x.device)

    def target(self, batch):
        return patchify(batch["image"], self.config.patch_size)

    def make_mask(self, batch, tokens, generator=None):
        b, length = tokens.shape[:2]
        keep = max(1, int(length * (1 - self.mask_ratio)))
        # the ratio that gives exactly ``keep`` visible tokens under mae_core's int(L * (1 - ratio)) rule
        ratio = max(0.0, 1.0 - (keep + 0.5) / length)
        return random_masking(b, length, ratio, generator, tokens.device)

    def forward_views(self, first: torch.Tensor, second: torch.Tensor, generator=None) -> ModelOutput:
        """Encode ``first`` whole and ``second`` masked; reconstruct ``second``'s masked patches."""
        if first.shape != second.shape:
            raise MaeError(f"the two views must have the same shape, got {tuple(first.shape)} and {tuple(second.shape)}")
        tok1, pos = self.tokenize({"image": first})
        tok2, _ = self.tokenize({"image": second})
        mask = self.make_mask({}, tok2, generator)
        context = self.encoder(tok1, pos)
        latent = self.forward_encoder(tok2, pos, mask)
        dec_pos = self._pos(second.shape[-2:], self.config.decoder_embed_dim, self.decoder.pos_embed, second.device)
        pred = self.decoder(latent, mask.ids_restore, context, pos=dec_pos)
        target = self.prepare_target(self.target({"image": second}))
        loss = masked_mse(pred, target, mask.mask)
        return ModelOutput(loss=loss, pred=pred, mask=mask.mask, target=target,
                           metrics={"visible_patches": float(mask.num_keep)},
                           extra={"first": first, "second": second})

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        first, second = self.make_views(batch, generator)
        return self.forward_views(first, second, generator)

    # ---- downstream: the encoder runs on each frame ---------------------------------------------------------------
    def _frames(self, batch: dict) -> tuple[torch.Tensor, int]:
        if "video" in batch:
            v = batch["video"]
            b, c, t, h, w = v.shape
            return v.transpose(1, 2).reshape(b * t, c, h, w), t
        return batch["image"], 1

    def forward_features(self, batch: dict) -> torch.Tensor:
        frames, _ = self._frames(batch)
        tokens, pos = self.tokenize({"image": frames})
        return self.encoder(tokens, pos)

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """Per-frame features (cls + mean of patches by default), concatenated over the frames: (B, T * F)."""
        frames, t = self._frames(batch)
        f = self.pool_features(self.forward_features({"image": frames}), pool)
        return f.reshape(f.shape[0] // t, t * f.shape[1])

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.num_frames * super().feature_dim(pool)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """Dense per-frame patch features, (B, T, H', W', D)."""
        b, _, t, h, w = video.shape
        feats = self.forward_features({"video": video})[:, 1:]
        gh, gw = grid_shape((h, w), self.config.patch_size)
        return feats.reshape(b, t, gh, gw, -1)

    @torch.no_grad()
    def reconstruct_video(self, video: torch.Tensor, generator=None, return_raw: bool = False):
        """Frame t reconstructed from frame t - 1 (frame 0 is shown as it is): (hidden (B, T, H, W),
        reconstruction (B, C, T, H, W)), de-normalised with the true patch statistics. ``return_raw`` adds the
        prediction as the model gives it (frame 0, which is not predicted, repeats frame 1's prediction)."""
        b, c, t, h, w = video.shape
        p = self.config.patch_size
        grid = grid_shape((h, w), p)
        prev = video[:, :, :-1].transpose(1, 2).reshape(-1, c, h, w)
        cur = video[:, :, 1:].transpose(1, 2).reshape(-1, c, h, w)
        out = self.forward_views(prev, cur, generator)
        pred, target = out.pred.float(), self.target({"image": cur}).float()
        raw = unpatchify(pred, p, grid, c).reshape(b, t - 1, c, h, w).transpose(1, 2)
        raw = torch.cat([raw[:, :, :1], raw], dim=2)
        if self.norm_pix_loss:
            _, (mean, scale) = normalize_patches(target, return_stats=True)
            pred = pred * scale + mean
        m = out.mask[..., None]
        recon = unpatchify(pred * m + target * (1 - m), p, grid, c).reshape(b, t - 1, c, h, w).transpose(1, 2)
        hidden = unpatchify(m.expand(-1, -1, p * p * c).contiguous(), p, grid, c)[:, 0].reshape(b, t - 1, h, w)
        recon = torch.cat([video[:, :, :1], recon], dim=2)
        hidden = torch.cat([hidden.new_zeros(b, 1, h, w), hidden], dim=1)
        return (hidden, recon, raw) if return_raw else (hidden, recon)
