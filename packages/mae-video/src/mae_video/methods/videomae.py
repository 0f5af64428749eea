"""VideoMAE (Tong et al., NeurIPS 2022) and VideoMAE V2 dual masking (Wang et al., CVPR 2023).

- tokens: 2 x 16 x 16 tubelets (configurable) by a 3-D convolution, fixed sin-cos position embedding over
  (T', H', W'), no cls token (features are the mean of the tokens);
- encoder mask: tube masking at 0.9, one spatial mask repeated over every time slot, ``int(ratio * H'W')`` positions
  masked per time slot as the reference ``TubeMaskingGenerator`` (20 of 196 visible at 0.9); the encoder sees the
  visible tubelets only;
- target: each tubelet's pixels normalised per channel (mean and unbiased std over the tubelet, eps 1e-6);
- dual masking (V2): the decoder keeps only a running-cell subset of the positions (ratio 0.5: in each 2 x 2 cell
  two slots are kept, and the kept slots rotate by one every time slot), drawn independently of the encoder mask.
  As the reference ``modeling_pretrain.py`` (``PretrainVisionTransformer.forward``), the decoder input is every
  encoder-visible token plus a mask token (with its position) at every decoder-kept position, the encoder-visible
  ones included; only the mask tokens are predicted, and the MSE covers those at encoder-masked positions
  (``cal_loss_mask`` of the reference's ``engine_for_pretraining.py``). The decoder thus sees
  ``K + L (1 - ratio)`` tokens. ``decoder_tokens = "masked"`` keeps the earlier variant (mask tokens only at the
  kept positions the encoder did not see, rows padded to the longest). ``decoder_mask_ratio = 0`` is plain VideoMAE
  (mask tokens at every encoder-masked position, loss on all of them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers import PatchEmbed3d, grid_shape, patchify, sincos_pos_embed, unpatchify
from mae_core.losses import masked_mse, normalize_patches
from mae_core.masking import MaskInfo, gather_tokens, mask_from_mask, running_cell_masking, tube_masking
from mae_core.models import MaskedAutoencoder, ModelOutput, ViTConfig


@dataclass
class VideoMAEConfig(ViTConfig):
    num_frames: int = field(8, "frames per clip (follows the data: set it with --data-num-frames)", ge=1)
    img_size: int = field(32, "frame side in pixels (follows the data: set it with --image-size)", ge=1)
    tubelet_size: int = field(2, "frames per tubelet", ge=1)
    patch_size: int = field(8, "tubelet side in pixels", ge=1)
    in_chans: int = field(3, "colour channels", ge=1)
    decoder_depth: int = field(2, "decoder blocks")
    mask_ratio: float = field(0.9, "tube mask ratio of the encoder")
    decoder_mask_ratio: float = field(0.5, "running-cell ratio of tokens dropped from the decoder (VideoMAE V2 "
                                           "dual masking: 0.25, 0.5 or 0.75; 0 = plain VideoMAE)")
    norm_pix_loss: bool = field(True, "normalise each target tubelet per channel (mean, unbiased std)")
    decoder_tokens: str = field("reference", "dual masking's decoder input: reference (visible tokens + a mask token "
                                             "at every decoder-kept position, as VideoMAE V2's code) or masked (mask "
                                             "tokens only at kept positions the encoder did not see)",
                                choices=["reference", "masked"])


class VideoMAE(MaskedAutoencoder):
    # probe features: token means over the four quadrants of each time slot, concatenated (a linear probe can read
    # where things are at each time, hence the motion); "time" = one mean per time slot, "tokens" = every token,
    # "mean" = the mean of every token (the fine-tuning feature).
    pool = "grid"

    def __init__(self, config: VideoMAEConfig):
        super().__init__()
        self.config = c = config
        if c.decoder_mask_ratio and 4 * c.decoder_mask_ratio not in (1.0, 2.0, 3.0):
            raise MaeError(f"decoder_mask_ratio must be 0 (plain VideoMAE), 0.25, 0.5 or 0.75, got "
                           f"{c.decoder_mask_ratio}")
        self.patch = (c.tubelet_size, c.patch_size, c.patch_size)
        self.grid = grid_shape((c.num_frames, c.img_size, c.img_size), self.patch)
        self.patch_embed = PatchEmbed3d(self.patch, c.in_chans, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.build_mae(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, decoder_dim=c.decoder_embed_dim,
                       decoder_depth=c.decoder_depth, decoder_heads=c.decoder_num_heads,
                       pred_dim=math.prod(self.patch) * c.in_chans,
                       decoder_pos=sincos_pos_embed(c.decoder_embed_dim, self.grid), mask_ratio=c.mask_ratio,
                       norm_pix_loss=c.norm_pix_loss, mlp_ratio=c.mlp_ratio, drop_path=c.drop_path,
                       num_prefix_tokens=0)
        self.init_weights()
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    # ---- tokens, positions, target --------------------------------------------------------------------------------
    def video_grid(self, video: torch.Tensor) -> tuple[int, int, int]:
        if video.ndim != 5:
            raise MaeError(f"expected video of shape (B, C, T, H, W), got {tuple(video.shape)}")
        return grid_shape(video.shape[2:], self.patch)

    def _pos(self, grid, dim: int, default: torch.Tensor | None, device) -> torch.Tensor:
        if grid == self.grid and default is not None:
            return default.reshape(1, -1, dim)
        return sincos_pos_embed(dim, grid)[None].to(device)

    def tokenize(self, batch):
        x = batch["video"]
        return self.patch_embed(x), self._pos(self.video_grid(x), self.config.embed_dim, self.pos_embed, x.device)

    def target(self, batch):
        return patchify(batch["video"], self.patch)

    def prepare_target(self, target):
        if not self.norm_pix_loss:
            return target
        return normalize_patches(target, eps=1e-6, channels=self.config.in_chans, per_channel=True)

    def make_mask(self, batch, tokens, generator=None):
        if batch.get("mask") is not None:
            return mask_from_mask(batch["mask"].to(tokens.device))
        return tube_masking(tokens.shape[0], self.video_grid(batch["video"]), self.mask_ratio, generator,
                            tokens.device)

    def unpatchify(self, tokens: torch.Tensor, grid=None) -> torch.Tensor:
        return unpatchify(tokens, self.patch, grid or self.grid, self.config.in_chans)

    # ---- dual masking -----------------------------------------------------------------------------------------------
    @staticmethod
    def decoder_select(enc_mask: torch.Tensor, dec_mask: torch.Tensor) -> torch.Tensor:
        """Positions the decoder processes, (B, K + M): every encoder-visible token, then the encoder-masked
        tokens the running cell keeps (padded to the longest row with encoder-masked, decoder-dropped ones)."""
        # scores: visible 0, masked and kept 1, masked and dropped 2; stable sort keeps position order in a class
        scores = enc_mask * (1 + dec_mask)
        num_vis = int((enc_mask == 0).sum(1)[0])
        m = int((enc_mask * (1 - dec_mask)).sum(1).max())
        return torch.argsort(scores, dim=1, stable=True)[:, :num_vis + m]

    @staticmethod
    def decoder_kept(dec_mask: torch.Tensor) -> torch.Tensor:
        """(B, M) decoder-kept positions in position order (every row keeps the same number)."""
        m = int((dec_mask == 0).sum(1)[0])
        return torch.argsort(dec_mask, dim=1, stable=True)[:, :m]

    def decode_kept(self, latent: torch.Tensor, enc, kept: torch.Tensor, dec_pos: torch.Tensor) -> torch.Tensor:
        """The reference dual-masking decoder: [visible tokens + positions, mask token + positions of ``kept``]
        through the decoder blocks; the predictions of the mask tokens, (B, M, P)."""
        d = self.decoder
        b = latent.shape[0]
        pos = dec_pos.expand(b, -1, -1)
        vis = d.embed(latent) + gather_tokens(pos, enc.ids_keep)
        masked = d.mask_token.to(vis.dtype) + gather_tokens(pos, kept)
        x = torch.cat([vis, masked], dim=1)
        for blk in d.blocks:
            x = blk(x)
        return d.pred(d.norm(x[:, vis.shape[1]:]))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        video = batch["video"]
        tokens, pos = self.tokenize(batch)
        enc = self.make_mask(batch, tokens, generator)
        latent = self.forward_encoder(tokens, pos, enc)
        target = self.prepare_target(self.target(batch))
        return self.decode(latent, enc, target, self.video_grid(video), generator)

    def decode(self, latent: torch.Tensor, enc, target: torch.Tensor, grid, generator=None) -> ModelOutput:
        """Decoder and loss, given the encoder's output for the mask ``enc`` (separate so a benchmark can time
        the decoder alone)."""
        b, length = enc.mask.shape
        dec_pos = self._pos(grid, self.config.decoder_embed_dim, self.decoder.pos_embed, latent.device)
        extra = {"encoder_mask": enc.mask}
        if self.config.decoder_mask_ratio > 0 and self.config.decoder_tokens == "reference":
            dec = running_cell_masking(b, grid, self.config.decoder_mask_ratio, generator, latent.device)
            kept = self.decoder_kept(dec.mask)
            pred_kept = self.decode_kept(latent, enc, kept, dec_pos)
            loss_mask = torch.gather(enc.mask, 1, kept)  # encoder-masked among the decoder-kept
            loss = masked_mse(pred_kept, gather_tokens(target, kept), loss_mask)
            pred = pred_kept.new_zeros(b, length, pred_kept.shape[-1]).scatter(
                1, kept[..., None].expand_as(pred_kept), pred_kept)
            full_mask = loss_mask.new_zeros(b, length).scatter(1, kept, loss_mask)
            extra.update(decoder_mask=dec.mask, kept=kept)
            return ModelOutput(loss=loss, pred=pred, mask=full_mask, target=target,
                               metrics={"decoder_tokens": (enc.num_keep + kept.shape[1]) / length}, extra=extra)
        if self.config.decoder_mask_ratio > 0:
            dec = running_cell_masking(b, grid, self.config.decoder_mask_ratio, generator, latent.device)
            loss_mask = enc.mask * (1 - dec.mask)
            select = self.decoder_select(enc.mask, dec.mask)
            pred_sel = self.decoder(latent, enc.ids_restore, pos=dec_pos, select=select)
            loss = masked_mse(pred_sel, gather_tokens(target, select), torch.gather(loss_mask, 1, select))
            pred = pred_sel.new_zeros(b, length, pred_sel.shape[-1]).scatter(
                1, select[..., None].expand_as(pred_sel), pred_sel)
            extra.update(decoder_mask=dec.mask, select=select)
            decoded = select.shape[1]
        else:
            pred = self.decoder(latent, enc.ids_restore, pos=dec_pos)
            loss_mask = enc.mask
            loss = masked_mse(pred, target, loss_mask)
            decoded = length
        return ModelOutput(loss=loss, pred=pred, mask=loss_mask, target=target,
                           metrics={"decoder_tokens": decoded / length}, extra=extra)

    # ---- downstream features ----------------------------------------------------------------------------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """(B, F) frozen features; ``pool`` is grid (default), time, tokens or mean (see ``VideoMAE.pool``)."""
        pool = pool or self.pool
        feats = self.forward_features(batch)
        if pool == "time":
            t = self.video_grid(batch["video"])[0]
            return feats.reshape(feats.shape[0], t, -1, feats.shape[-1]).mean(2).flatten(1)
        if pool == "grid":  # token means over each quadrant of each time slot
            t, h, w = self.video_grid(batch["video"])
            g = feats.reshape(feats.shape[0], t, h, w, -1).permute(0, 4, 1, 2, 3)
            return F.adaptive_avg_pool3d(g, (t, 2, 2)).flatten(1)
        if pool == "tokens":
            return feats.flatten(1)
        return self.pool_features(feats, pool)

    def feature_dim(self, pool: str | None = None) -> int:
        pool = pool or self.pool
        sizes = {"time": self.grid[0], "grid": self.grid[0] * 4, "tokens": math.prod(self.grid)}
        return self.encoder.embed_dim * sizes.get(pool, 1)

    # ---- pictures and dense features --------------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct_video(self, video: torch.Tensor, generator: torch.Generator | None = None,
                          return_raw: bool = False):
        """(hidden (B, T, H, W) 1 = hidden from the encoder, reconstruction (B, C, T, H, W) in input space): the
        decoder predicts every masked tubelet (no decoder mask), de-normalised with the true tubelet statistics.
        ``return_raw`` adds the prediction as the model gives it (per-tubelet normalised with norm_pix_loss)."""
        grid = self.video_grid(video)
        tokens, pos = self.tokenize({"video": video})
        enc = self.make_mask({"video": video}, tokens, generator)
        latent = self.forward_encoder(tokens, pos, enc)
        dec_pos = self._pos(grid, self.config.decoder_embed_dim, self.decoder.pos_embed, video.device)
        pred = self.decoder(latent, enc.ids_restore, pos=dec_pos).float()
        raw = self.unpatchify(pred, grid)
        target = self.target({"video": video}).float()
        if self.norm_pix_loss:
            _, (mean, scale) = normalize_patches(target, eps=1e-6, channels=self.config.in_chans, per_channel=True,
                                                 return_stats=True)
            pred = pred * scale + mean
        m = enc.mask[..., None]
        recon = self.unpatchify(pred * m + target * (1 - m), grid)
        p = math.prod(self.patch)
        hidden = self.unpatchify(enc.mask[..., None].expand(-1, -1, p * self.config.in_chans).contiguous(), grid)[:, 0]
        return (hidden, recon, raw) if return_raw else (hidden, recon)

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        """Dense features per frame, (B, T, H', W', D): each tubelet's token repeated over its frames."""
        t, h, w = self.video_grid(video)
        feats = self.forward_features({"video": video})  # (B, L, D), no prefix
        feats = feats.reshape(video.shape[0], t, h, w, -1)
        return feats.repeat_interleave(self.config.tubelet_size, dim=1)


PRESETS = {
    "videomae-tiny": ({}, "VideoMAE V2 for 8 x 32 x 32 clips, tubelet 2 x 8 x 8 (2 x 4 x 4 on the embedded "
                          "clips, as the no-argument run)"),
    "videomae-vit-s": (dict(num_frames=16, img_size=224, tubelet_size=2, patch_size=16, embed_dim=384, depth=12,
                            num_heads=6, decoder_embed_dim=192, decoder_depth=4, decoder_num_heads=3),
                       "ViT-S, 16 frames at 224 px, tubelet 2 x 16 x 16 (the paper's setting), decoder 192 x 4"),
    "videomae-vit-b": (dict(num_frames=16, img_size=224, tubelet_size=2, patch_size=16, embed_dim=768, depth=12,
                            num_heads=12, decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6),
                       "ViT-B, 16 frames at 224 px, tubelet 2 x 16 x 16, decoder 384 x 4 (VideoMAE V2)"),
}
