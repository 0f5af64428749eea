"""HiCMAE (Sun et al., "HiCMAE: Hierarchical Contrastive Masked Autoencoder for Self-Supervised Audio-Visual Emotion
Recognition", Information Fusion 2024; reference sunlicai/HiCMAE ``modeling_pretrain_av.py``,
``engine_for_pretraining_av.py``, ``scripts/.../pretrain_base.sh``).

- Video: 2 x p x p tubelets (mae-core's ``PatchEmbed3d``), fixed 1-D sin-cos positions over the flattened tubelet
  index, tube masking at 0.9 (``int(0.9 H W)`` positions masked in every time slot). Audio: the package's kaldi
  fbank, p x p patches, random masking at 0.8. No cls token in either stream.
- Two encoders (the same depth). The outputs of the tapped blocks (reference ``--return_intermediate_features 3 6
  9`` of 10 blocks: the last tap is the last block), normalised by the encoder's final norm, serve twice:
  hierarchical contrast (mean-pooled per stream, symmetric InfoNCE between video and audio of the batch at
  temperature 0.07, summed over the taps, weight 0.0025) and hierarchical skips (decoder block i >= 1 cross-attends
  to the i-th deepest tap, projected by the decoder's input projection plus the visible tokens' positions).
- Cross-modal fusion: 2 co-attention layers on the encoders' outputs (mae-core ``CoAttentionStack``: each stream
  attends to the other's layer input), then one norm per stream.
- Decoders: project (no bias), mask tokens, fixed positions, block 0 self-attention, then ``len(taps)`` cross blocks
  (mae-core ``TapCrossBlock`` with one tap each); a head per token.
- Targets: video tubelets normalised per channel (mean, unbiased std + 1e-6) on the un-normalised frames, then the
  frame-difference target (``--use_frame_diff_as_target``: in every tubelet [f0, f1 - f0, ...]); audio patches
  normalised the same way. Loss = MSE video + MSE audio (masked tokens) + 0.0025 x contrast.

Deviations: mae-core's pre-norm ``CrossBlock`` runs self-attention before cross-attention (the reference
``CSBlock`` runs cross-attention first); ``TapCrossBlock`` adds a LayerNorm on the tap before the block's own.
Options for the ablation arms: ``contrast`` none / top (the last block only) / hierarchical, ``decoder_skips``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.errors import ConfigError, MaeError
from mae_core.layers import (Block, CoAttentionStack, LayerNorm, PatchEmbed2d, PatchEmbed3d, TapCrossBlock,
                             grid_shape, init_weights, patchify, sincos_pos_embed)
from mae_core.contract import PretrainedMixin
from mae_core.losses import info_nce, masked_mse, normalize_patches
from mae_core.masking import MaskInfo, gather_tokens, mask_from_mask, random_masking, restore_tokens, tube_masking
from mae_core.models import ModelOutput, TransformerEncoder

VIDEO_MEAN = (0.485, 0.456, 0.406)
VIDEO_STD = (0.229, 0.224, 0.225)
POOLS = {"av": 4, "video": 1, "audio": 1}  # encode(pool=...): width in units of embed_dim; "mean" / None = "av"


@dataclass
class HiCMAEConfig:
    num_frames: int = field(16, "video frames per clip (follows the data)", ge=1)
    img_size: int = field(64, "frame side in pixels (follows the data)", ge=1)
    tubelet_size: int = field(2, "frames per tubelet", ge=1)
    patch_size: int = field(16, "tubelet side in pixels", ge=1)
    target_length: int = field(128, "fbank frames per clip (follows the data)", ge=1)
    num_mel_bins: int = field(128, "mel bins (follows the data)", ge=1)
    audio_patch_size: int = field(16, "audio patch side (frames = mel bins)", ge=1)
    embed_dim: int = field(96, "width of both encoders and the fusion layers", ge=2)
    depth: int = field(6, "blocks of each encoder", ge=1)
    num_heads: int = field(3, "attention heads of the encoders and the fusion layers", ge=1)
    fusion_depth: int = field(2, "co-attention fusion layers", ge=0)
    decoder_embed_dim: int = field(64, "decoder width", ge=2)
    decoder_depth: int = field(4, "decoder blocks (with decoder_skips: 1 + number of taps)", ge=1)
    decoder_num_heads: int = field(2, "decoder attention heads", ge=1)
    mlp_ratio: float = field(4.0, "MLP hidden width / block width", gt=0)
    video_mask_ratio: float = field(0.9, "tube mask ratio of the video", ge=0, lt=1)
    audio_mask_ratio: float = field(0.8, "random mask ratio of the audio patches", ge=0, lt=1)
    taps: list[int] = field([1, 3, 5], "encoder blocks (from 0) read by the contrast and the decoder skips, shallow "
                                       "to deep (reference 3 6 9 of 10 blocks)")
    contrast: str = field("hierarchical", "inter-modal InfoNCE at the taps: hierarchical (every tap), top (the last "
                                          "encoder block only) or none", choices=["hierarchical", "top", "none"])
    contrast_weight: float = field(0.0025, "weight of the summed contrastive terms", ge=0)
    temperature: float = field(0.07, "InfoNCE temperature", gt=0)
    decoder_skips: bool = field(True, "decoder blocks 1.. cross-attend to the taps, deepest first (off: plain "
                                      "self-attention decoder blocks)")
    frame_diff: bool = field(True, "video target: [f0, f1 - f0] in every tubelet (off: the normalised pixels)")
    drop_path: float = field(0.0, "stochastic depth of the encoders (fine-tuning)", ge=0, lt=1)

    def validate(self, where: str = "config") -> None:
        for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            if getattr(self, width) % getattr(self, heads):
                raise ConfigError(f"{where}: {heads} must divide {width}")
        bad = [t for t in self.taps if not 0 <= int(t) < self.depth]
        if bad or not self.taps:
            raise ConfigError(f"{where}.taps: needs block indices in [0, depth={self.depth}), got {self.taps}")
        if self.decoder_skips and self.decoder_depth != len(self.taps) + 1:
            raise ConfigError(f"{where}.decoder_depth: with decoder_skips it must be 1 + {len(self.taps)} taps, "
                              f"got {self.decoder_depth}")
        if self.num_frames % self.tubelet_size or self.img_size % self.patch_size:
            raise ConfigError(f"{where}: num_frames / img_size must be divisible by tubelet_size / patch_size")


class HierDecoder(nn.Module):
    """Reference ``PretrainVisionTransformerDecoder`` with its input projection, mask token and positions: block 0
    self-attention, block i >= 1 cross-attends to ``taps[-i]`` (with ``num_taps = 0``: plain blocks)."""

    def __init__(self, embed_dim: int, dim: int, depth: int, heads: int, pred_dim: int, length: int, num_taps: int,
                 mlp_ratio: float):
        super().__init__()
        self.proj = nn.Linear(embed_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", sincos_pos_embed(dim, length)[None], persistent=False)
        self.skips = num_taps > 0
        self.blocks = nn.ModuleList([
            TapCrossBlock(dim, heads, 1, mlp_ratio=mlp_ratio) if i and self.skips else Block(dim, heads, mlp_ratio)
            for i in range(depth)])
        self.norm = LayerNorm(dim)
        self.head = nn.Linear(dim, pred_dim)

    def forward(self, latent: torch.Tensor, mask: MaskInfo, taps: list[torch.Tensor]) -> torch.Tensor:
        pos = self.pos.expand(latent.shape[0], -1, -1)
        x = restore_tokens(self.proj(latent), self.mask_token, mask.ids_restore) + pos
        pos_vis = gather_tokens(pos, mask.ids_keep)
        ctx = [self.proj(t) + pos_vis for t in taps] if self.skips else []
        for i, blk in enumerate(self.blocks):
            x = blk(x, [ctx[-i]]) if i and self.skips else blk(x)
        return self.head(self.norm(x))


def frame_diff_target(patches: torch.Tensor, tubelet: int) -> torch.Tensor:
    """(B, L, tubelet * P) normalised tubelets (frame-major) -> [f0, f1 - f0, f2 - f0, ...] in every tubelet."""
    b, n, d = patches.shape
    t = patches.reshape(b, n, tubelet, d // tubelet)
    return torch.cat([t[:, :, :1], t[:, :, 1:] - t[:, :, :1]], dim=2).reshape(b, n, d)


class HiCMAE(PretrainedMixin, nn.Module):
    method_name = "hicmae"
    mask_schedule_refused = "HiCMAE has two mask ratios (video_mask_ratio, audio_mask_ratio)"

    def __init__(self, config: HiCMAEConfig):
        super().__init__()
        self.config = c = config
        c.validate("hicmae")
        d, p = c.embed_dim, c.patch_size
        self.video_grid = (c.num_frames // c.tubelet_size, c.img_size // p, c.img_size // p)
        self.audio_grid = grid_shape((c.target_length, c.num_mel_bins), c.audio_patch_size)
        lv, la = self.video_grid[0] * self.video_grid[1] * self.video_grid[2], self.audio_grid[0] * self.audio_grid[1]
        self.video_embed = PatchEmbed3d((c.tubelet_size, p, p), 3, d)
        self.audio_embed = PatchEmbed2d(c.audio_patch_size, 1, d)
        self.register_buffer("video_pos", sincos_pos_embed(d, lv)[None], persistent=False)
        self.register_buffer("audio_pos", sincos_pos_embed(d, la)[None], persistent=False)
        enc = dict(mlp_ratio=c.mlp_ratio, drop_path=c.drop_path, num_prefix_tokens=0)
        self.video_encoder = TransformerEncoder(d, c.depth, c.num_heads, **enc)
        self.audio_encoder = TransformerEncoder(d, c.depth, c.num_heads, **enc)
        self.fusion = CoAttentionStack(c.fusion_depth, d, c.num_heads, mlp_ratio=c.mlp_ratio) if c.fusion_depth \
            else None
        self.fusion_norm = nn.ModuleDict({"video": LayerNorm(d), "audio": LayerNorm(d)})
        n = len(c.taps) if c.decoder_skips else 0
        dec = (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads)
        self.decoder = nn.ModuleDict({
            "video": HierDecoder(d, *dec, 3 * c.tubelet_size * p * p, lv, n, c.mlp_ratio),
            "audio": HierDecoder(d, *dec, c.audio_patch_size ** 2, la, n, c.mlp_ratio)})
        self.apply(init_weights)
        for m in (self.decoder["video"], self.decoder["audio"]):
            nn.init.trunc_normal_(m.mask_token, std=0.02)
        self.register_buffer("v_mean", torch.tensor(VIDEO_MEAN)[None, :, None, None, None], persistent=False)
        self.register_buffer("v_std", torch.tensor(VIDEO_STD)[None, :, None, None, None], persistent=False)

    # ---- inputs, masks, targets ----------------------------------------------------------------------------------------
    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        v, a = batch.get("video"), batch.get("audio")
        if v is None or a is None:
            raise MaeError("hicmae needs batches with 'video' (B, 3, T, H, W) and 'audio' (B, 1, time, mel)")
        c = self.config
        if tuple(v.shape[1:]) != (3, c.num_frames, c.img_size, c.img_size):
            raise MaeError(f"video of shape {tuple(v.shape)}, expected (B, 3, {c.num_frames}, {c.img_size}, "
                           f"{c.img_size})")
        if tuple(a.shape[1:]) != (1, c.target_length, c.num_mel_bins):
            raise MaeError(f"audio of shape {tuple(a.shape)}, expected (B, 1, {c.target_length}, {c.num_mel_bins})")
        return v, a

    def make_masks(self, batch: dict, generator=None) -> tuple[MaskInfo, MaskInfo]:
        """(video tube mask, audio random mask); ``batch['video_mask']`` / ``['audio_mask']`` (B, L) override."""
        b, dev, c = batch["video"].shape[0], batch["video"].device, self.config
        mv = (mask_from_mask(batch["video_mask"].to(dev)) if batch.get("video_mask") is not None
              else tube_masking(b, self.video_grid, c.video_mask_ratio, generator, dev))
        ma = (mask_from_mask(batch["audio_mask"].to(dev)) if batch.get("audio_mask") is not None
              else random_masking(b, self.audio_grid[0] * self.audio_grid[1], c.audio_mask_ratio, generator, dev))
        return mv, ma

    def video_target(self, video: torch.Tensor) -> torch.Tensor:
        c = self.config
        t = patchify(video * self.v_std + self.v_mean, (c.tubelet_size, c.patch_size, c.patch_size))
        t = normalize_patches(t, channels=3, per_channel=True)
        return frame_diff_target(t, c.tubelet_size) if c.frame_diff else t

    def audio_target(self, audio: torch.Tensor) -> torch.Tensor:
        return normalize_patches(patchify(audio, self.config.audio_patch_size), channels=1, per_channel=True)

    def contrast_taps(self) -> list[int]:
        c = self.config
        return {"hierarchical": list(c.taps), "top": [c.depth - 1], "none": []}[c.contrast]

    # ---- pretraining ----------------------------------------------------------------------------------------------------
    def encode_visible(self, batch: dict, mv: MaskInfo, ma: MaskInfo):
        """Both encoders on their visible tokens: ((video, audio) normed outputs, {block: (video tap, audio tap)})
        with every tap normalised by its encoder's final norm (the reference's intermediate features)."""
        v, a = self._inputs(batch)
        blocks = sorted(set(self.contrast_taps()) | (set(self.config.taps) if self.config.decoder_skips else set()))
        xv, tv = self.video_encoder(gather_tokens(self.video_embed(v) + self.video_pos, mv.ids_keep), taps=blocks)
        xa, ta = self.audio_encoder(gather_tokens(self.audio_embed(a) + self.audio_pos, ma.ids_keep), taps=blocks)
        taps = {i: (self.video_encoder.norm(x), self.audio_encoder.norm(y)) for i, x, y in zip(blocks, tv, ta)}
        return (xv, xa), taps

    def fuse(self, xv: torch.Tensor, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fusion is not None:
            xv, xa = self.fusion(xv, xa)
        return self.fusion_norm["video"](xv), self.fusion_norm["audio"](xa)

    def contrast_terms(self, taps: dict) -> list[torch.Tensor]:
        """One symmetric InfoNCE per contrast tap between the mean-pooled video and audio tokens of the batch."""
        t = self.config.temperature
        return [info_nce(taps[i][0].mean(1), taps[i][1].mean(1), temperature=t, symmetric=True)
                for i in self.contrast_taps()]

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        c = self.config
        v, a = self._inputs(batch)
        mv, ma = self.make_masks(batch, generator)
        (xv, xa), taps = self.encode_visible(batch, mv, ma)
        terms = self.contrast_terms(taps)
        xv, xa = self.fuse(xv, xa)
        skips = [taps[i] for i in c.taps] if c.decoder_skips else []
        pred_v = self.decoder["video"](xv, mv, [s[0] for s in skips])
        pred_a = self.decoder["audio"](xa, ma, [s[1] for s in skips])
        tgt_v, tgt_a = self.video_target(v), self.audio_target(a)
        loss_v, loss_a = masked_mse(pred_v, tgt_v, mv.mask), masked_mse(pred_a, tgt_a, ma.mask)
        contrast = torch.stack(terms).sum() if terms else loss_v.new_zeros(())
        loss = loss_v + loss_a + c.contrast_weight * contrast
        metrics = {"loss_video": float(loss_v.detach()), "loss_audio": float(loss_a.detach()),
                   "contrast": float(contrast.detach())}
        return ModelOutput(loss=loss, pred=pred_v, mask=mv.mask, target=tgt_v, metrics=metrics,
                           extra={"pred_audio": pred_a, "mask_audio": ma.mask, "target_audio": tgt_a,
                                  "contrast_terms": terms})

    # ---- downstream -----------------------------------------------------------------------------------------------------
    def _pool(self, pool: str | None) -> str:
        pool = "av" if pool in (None, "mean") else pool
        if pool not in POOLS:
            raise MaeError(f"hicmae pool {pool!r}: choose from {', '.join(POOLS)} (mean = av)")
        return pool

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """Mean-pooled features of the unmasked clip: ``video`` / ``audio`` (one encoder; the other stream is not
        needed) or ``av`` (default, the reference's fine-tuning feature: video, audio, fused video, fused audio)."""
        pool = self._pool(pool)
        out = {}
        if pool in ("av", "video"):
            out["video"] = self.video_encoder(self.video_embed(batch["video"]) + self.video_pos)
        if pool in ("av", "audio"):
            out["audio"] = self.audio_encoder(self.audio_embed(batch["audio"]) + self.audio_pos)
        if pool != "av":
            return out[pool].mean(1)
        fv, fa = self.fuse(out["video"], out["audio"])
        return torch.cat([out["video"].mean(1), out["audio"].mean(1), fv.mean(1), fa.mean(1)], dim=-1)

    def feature_dim(self, pool: str | None = None) -> int:
        return POOLS[self._pool(pool)] * self.config.embed_dim

    def num_layers(self) -> int:
        return self.config.depth + 1

    def layer_id(self, name: str) -> int:
        """Embeddings 0, block i of either encoder i + 1, fusion / decoders / norms depth + 1."""
        for enc in ("video_encoder.blocks.", "audio_encoder.blocks."):
            if name.startswith(enc):
                return int(name[len(enc):].split(".")[0]) + 1
        return 0 if name.startswith(("video_embed", "audio_embed")) else self.config.depth + 1


def adapt_hicmae(model_cfg: HiCMAEConfig, data_cfg, dataset) -> HiCMAEConfig:
    """The model's clip shape and fbank size follow the data (statistics are computed by the data set)."""
    import dataclasses

    over = {k: getattr(data_cfg, src) for k, src in (("num_frames", "num_frames"), ("img_size", "image_size"),
                                                      ("target_length", "target_length"),
                                                      ("num_mel_bins", "num_mel_bins"))
            if getattr(data_cfg, src, None) is not None}
    return dataclasses.replace(model_cfg, **over)
