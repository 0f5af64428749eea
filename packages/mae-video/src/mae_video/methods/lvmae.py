"""LV-MAE (Naiman et al., ICCV 2025): a masked-embedding autoencoder over the segment embeddings of a long video.

As the authors' code (amazon-science/lv-mae: ``models_mae.py``, ``data/CombinedData.py``, ``main_pretrain.py``,
``test_lp_movie_clip.py``):

- input: one embedding per short segment from a frozen short-clip encoder (here the library's VideoMAE, see
  :mod:`mae_video.data.stories`), L2-normalised; up to ``max_segments`` (256) per video, batches padded, the padding
  hidden from attention by a key-padding mask in the encoder and the decoder;
- a random window of the video per sample (``crop``: ``randint(10 s, 5 s x 256) // 5 s`` segments, at most the
  video, at a random start), positions counted from the window's start;
- mask 50 % of the real segments (``int(n (1 - ratio))`` kept): ``random`` (uniform noise) or ``importance`` (keep
  the segments least similar to their predecessor: cosine similarity, 0 for the first; deterministic given the
  window); the visible ones get their fixed 1-D sin-cos position and go through the encoder with a cls token;
- decoder: mask tokens restored in order, decoder positions, blocks, a linear head back to the embedding size;
- loss on the masked real segments only: MSE (the reference's default) or ``1 - cosine`` (``--loss cosine``,
  the reference's ``--cos_loss``); targets not normalised per segment (``norm_pix_loss`` off, the default there);
- features: the whole video, unmasked, through the encoder, mean of the real segments' outputs (the reference's
  linear probe pools this way; ``pool`` cls / cls+mean also offered).

Deviations: the transformer's width is ``embed_dim`` and a linear map takes the segment embedding to it when the
sizes differ (the reference's width is the embedding size, 1024; an identity here when ``embed_dim`` equals it);
the sizes are a CPU miniature (128 x 4, decoder 96 x 1 against 1024 x 32, decoder 512 x 8); masking runs in the
model from the trainer's generator instead of in the data loader; the masked sequences are dense (kept real
segments, then padding up to the batch's largest kept count, :func:`mae_core.masking.padded_masking`) instead of a
per-sample loop; the probe masks exactly the padding (the reference's ``MovieClipsData`` mask is one position off
and hides the last real segment).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers import sincos_pos_embed
from mae_core.losses import masked_mean, normalize_patches
from mae_core.masking import MaskInfo, gather_tokens, padded_masking, predecessor_similarity, uniform_noise
from mae_core.models import MaskedAutoencoder, ModelOutput, ViTConfig

SEGMENT_SECONDS = 5  # the reference's segment length; its windows are randint(10, 5 * max_segments) seconds


@dataclass
class LVMAEConfig(ViTConfig):
    segment_dim: int = field(2048, "size of a segment embedding (follows the data)", ge=1)
    max_segments: int = field(256, "most segments per video (fixed position table; the reference's num_patches)",
                              ge=2)
    mask_ratio: float = field(0.5, "fraction of a video's real segments masked")
    masking: str = field("random", "which segments stay visible: random, or importance (the segments least similar "
                                   "to their predecessor, the reference's --masking_strategy)",
                         choices=["random", "importance"])
    loss: str = field("mse", "loss on the masked segments: mse (the reference's default) or cosine (1 - cos)",
                      choices=["mse", "cosine"])
    norm_pix_loss: bool = field(False, "standardise each target embedding (the reference's norm_pix_loss, off)")
    crop: bool = field(True, "train on a random window of each video (the reference's random duration and start)")
    min_window: int = field(2, "fewest segments in a training window (the reference's 10 s / 5 s)", ge=2)


class LVMAE(MaskedAutoencoder):
    pool = "mean"  # mean of the real segments' encoder outputs (the reference's linear probe)

    def __init__(self, config: LVMAEConfig):
        super().__init__()
        self.config = c = config
        self.build_mae(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, decoder_dim=c.decoder_embed_dim,
                       decoder_depth=c.decoder_depth, decoder_heads=c.decoder_num_heads, pred_dim=c.segment_dim,
                       decoder_pos=sincos_pos_embed(c.decoder_embed_dim, c.max_segments), mask_ratio=c.mask_ratio,
                       norm_pix_loss=c.norm_pix_loss, mlp_ratio=c.mlp_ratio, drop_path=c.drop_path,
                       num_prefix_tokens=1)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, c.max_segments)[None], persistent=False)
        self.input_proj = nn.Identity() if c.segment_dim == c.embed_dim else nn.Linear(c.segment_dim, c.embed_dim)
        self.init_weights()

    # ---- the padded sequence ----------------------------------------------------------------------------------------
    def sequence(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised segments (B, L, D) with zero padding, real lengths (B,))."""
        x = batch["segments"]
        if x.ndim != 3 or x.shape[-1] != self.config.segment_dim:
            raise MaeError(f"expected segments of shape (B, L, {self.config.segment_dim}), got {tuple(x.shape)}")
        if x.shape[1] > self.config.max_segments:
            raise MaeError(f"{x.shape[1]} segments exceed max_segments {self.config.max_segments} "
                           "(--max-segments)")
        length = batch.get("length")
        length = torch.full((x.shape[0],), x.shape[1]) if length is None else torch.as_tensor(length)
        length = length.to(x.device).long()
        real = torch.arange(x.shape[1], device=x.device)[None] < length[:, None]
        return F.normalize(x.float(), dim=-1) * real[..., None], length

    def random_window(self, x: torch.Tensor, length: torch.Tensor, generator=None):
        """A window per video: ``randint(2 s_min .. max_segments)`` segments capped at the video, random start;
        moved to the front (positions count from the window's start), the rest zeroed."""
        b, n = x.shape[:2]
        u = uniform_noise((b, 2), generator, x.device)
        lo = max(self.config.min_window, math.ceil(1 / (1 - self.mask_ratio)))
        size = (lo + (u[:, 0] * (self.config.max_segments - lo + 1)).floor().long()).clamp(max=length)
        size = torch.maximum(size, torch.minimum(length, torch.full_like(length, lo)))
        start = (u[:, 1] * (length - size + 1)).floor().long()
        idx = (start[:, None] + torch.arange(n, device=x.device)[None]).clamp(max=n - 1)
        real = torch.arange(n, device=x.device)[None] < size[:, None]
        return gather_tokens(x, idx) * real[..., None], size

    @staticmethod
    def key_padding(length: torch.Tensor, n: int) -> torch.Tensor:
        """(B, 1, 1, 1 + n) True = may attend: the cls token and the real segments, never the padding."""
        keys = torch.arange(n + 1, device=length.device)[None] <= length[:, None]
        return keys[:, None, None, :]

    def make_mask(self, batch: dict, tokens: torch.Tensor, generator=None, length: torch.Tensor | None = None
                  ) -> MaskInfo:
        length = torch.full((tokens.shape[0],), tokens.shape[1], device=tokens.device) if length is None else length
        if self.config.masking == "importance":
            scores = predecessor_similarity(tokens)
        else:
            scores = uniform_noise(tokens.shape[:2], generator, tokens.device)
        return padded_masking(scores, length, self.mask_ratio)

    # ---- pretraining ------------------------------------------------------------------------------------------------
    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        x, length = self.sequence(batch)
        if self.config.crop and self.training:
            x, length = self.random_window(x, length, generator)
        b, n, _ = x.shape
        real = (torch.arange(n, device=x.device)[None] < length[:, None]).float()
        enc = self.make_mask(batch, x, generator, length)
        kept_real = (gather_tokens(real[..., None], enc.ids_keep)[..., 0] > 0)  # padding fills the rest
        vis = gather_tokens(self.input_proj(x), enc.ids_keep)
        pos = gather_tokens(self.pos_embed[:, :n].expand(b, -1, -1), enc.ids_keep)
        keys = torch.cat([kept_real.new_ones(b, 1), kept_real], dim=1)[:, None, None, :]
        latent = self.encoder(vis, pos, attn_mask=keys)
        pred = self.decoder(latent, enc.ids_restore, pos=self.decoder.pos_embed[:, :n],
                            attn_mask=self.key_padding(length, n))
        target = normalize_patches(x) if self.norm_pix_loss else x
        loss_mask = enc.mask * real
        if self.config.loss == "cosine":
            per_segment = 1 - F.cosine_similarity(pred.float(), target, dim=-1, eps=1e-6)
        else:
            per_segment = ((pred.float() - target) ** 2).mean(-1)
        loss = masked_mean(per_segment, loss_mask)
        return ModelOutput(loss=loss, pred=pred, mask=loss_mask, target=target,
                           metrics={"visible": float(kept_real.sum() / real.sum())},
                           extra={"length": length, "ids_keep": enc.ids_keep, "kept_real": kept_real})

    # ---- features ---------------------------------------------------------------------------------------------------
    def forward_features(self, batch: dict) -> torch.Tensor:
        """The whole video, unmasked: (B, 1 + L, D) encoder outputs (padding rows meaningless)."""
        x, length = self.sequence(batch)
        n = x.shape[1]
        return self.encoder(self.input_proj(x), self.pos_embed[:, :n], attn_mask=self.key_padding(length, n))

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        pool = pool or self.pool
        feats = self.forward_features(batch)
        _, length = self.sequence(batch)
        real = (torch.arange(feats.shape[1] - 1, device=feats.device)[None] < length[:, None]).float()
        mean = (feats[:, 1:] * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        if pool == "mean":
            return mean
        if pool == "cls":
            return feats[:, 0]
        return torch.cat([feats[:, 0], mean], dim=-1)

    def token_grid(self, batch: dict):
        feats = self.forward_features(batch)[:, 1:]
        return feats, (feats.shape[1],)


def mean_segments(batch: dict) -> torch.Tensor:
    """The mean of a video's L2-normalised real segment embeddings (the mean-pooling baseline)."""
    x = batch["segments"].float()
    length = torch.as_tensor(batch["length"]).long()
    real = (torch.arange(x.shape[1])[None] < length[:, None]).float()
    return (F.normalize(x, dim=-1) * real[..., None]).sum(1) / real.sum(1, keepdim=True)


PRESETS = {
    "lvmae-tiny": ({}, "LV-MAE miniature: 128 x 4 encoder, 96 x 1 decoder over up to 256 segments"),
    "lvmae-reference": (dict(embed_dim=1024, depth=32, num_heads=16, decoder_embed_dim=512, decoder_depth=8,
                             decoder_num_heads=16),
                        "the authors' recommended size: 1024 x 32 encoder (16 heads), 512 x 8 decoder"),
}
