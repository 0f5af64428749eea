"""Audio-MAE (Huang et al., "Masked Autoencoders that Listen", NeurIPS 2022).

The recipe: a log-mel fbank (time x frequency, normalised with dataset statistics) is cut into 16 x 16 patches on a
(time, frequency) grid; 80 % of the patches are masked (unstructured random masking; time, frequency and
time + frequency masking are the paper's ablation variants); a ViT encodes the visible patches; a decoder re-inserts
mask tokens and predicts the per-patch normalised fbank values (norm-pix MSE on the masked patches). The decoder is,
by default, the reference's local one (:mod:`.swin_decoder`: Swin-style (4, 4) windows over (time, frequency),
shifted by (2, 0) on every other block, cosine attention with a relative-position bias); ``decoder_mode: plain`` is a
global-attention transformer and ``decoder_mode: local`` the earlier time-only window mask on mae-core's blocks.
Pretraining applies ``roll_mag_aug`` as the reference does (a random roll of the clip along time and a gain of
Beta(10, 10) + 0.5, i.e. + 2 ln(gain) in log-mel), here on the cached fbank.

Fine-tuning (mae-core ``finetune``: mean-pooled tokens, layer-wise lr decay) uses, while the model is in training
mode: SpecAugment (frequency and time masking of the input; the masks hold raw log-mel 0, what the reference
writes before it normalises, i.e. (0 - mean) / (2 std) on the normalised input), mixup of inputs and labels (soft labels: CE for
single-label, BCE for multi-label), and the paper's token dropping (structured time + frequency masking of the
patch tokens) in ``encode``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers import PatchEmbed2d, grid_shape, patchify, sincos_pos_embed, unpatchify
from mae_core.masking import (MaskInfo, mask_from_mask, mask_from_scores, num_keep, random_masking, restore_tokens,
                              uniform_noise)
from mae_core.models import MAEDecoder, MaskedAutoencoder, ModelOutput, ViTConfig

from .swin_decoder import SwinDecoder

MASK_MODES = ["random", "time", "frequency", "time+frequency"]
DECODER_MODES = ["swin", "plain", "local"]


@dataclass
class AudioMAEConfig(ViTConfig):
    __aliases__: ClassVar[dict] = {"mask_mode": "mask_strategy"}
    target_length: int = field(128, "fbank frames per clip (time axis; follows the data)", ge=1)
    num_mel_bins: int = field(128, "mel bins (frequency axis; follows the data)", ge=1)
    patch_size: int = field(16, "patch side (time frames = mel bins per patch)", ge=1)
    embed_dim: int = field(192, "encoder width")
    num_heads: int = field(3, "encoder attention heads")
    decoder_embed_dim: int = field(128, "decoder width")
    decoder_depth: int = field(2, "decoder blocks")
    decoder_mode: str = field("swin", "swin (the reference: (time, frequency) windows, shifted along time on every "
                                      "other block), plain (global attention) or local (time-only windows)",
                              choices=DECODER_MODES)
    decoder_window: int = field(4, "time tokens per decoder window (swin, local); swin shifts by half of it", ge=1)
    decoder_window_freq: int = field(4, "frequency tokens per swin decoder window", ge=1)
    mask_ratio: float = field(0.8, "fraction of patches hidden from the encoder")
    mask_strategy: str = field("random", "random (unstructured), time (whole time columns), frequency (whole "
                                         "frequency rows) or time+frequency", choices=MASK_MODES)
    norm_pix_loss: bool = field(True, "normalise each target patch by its own mean and variance")
    roll_mag_aug: bool = field(True, "pretraining: roll each clip along time by a random number of its frames and "
                                     "scale its gain by Beta(10, 10) + 0.5 (the reference's roll_mag_aug)")
    probe_tokens: str = field("focal", "tokens of the prototypical probe: focal (patch tokens minus the cls token, "
                                       "the Bird-MAE reference config) or patch", choices=["focal", "patch"])
    norm_mean: float | None = field(None, "fbank mean of the data (follows the data): where SpecAugment and "
                                          "roll_mag_aug find raw log-mel 0")
    norm_std: float | None = field(None, "fbank std of the data (follows the data)", gt=0)
    ft_freq_mask: int = field(24, "fine-tuning SpecAugment: max width of the frequency mask (mel bins, 0 = off)", ge=0)
    ft_time_mask: int = field(24, "fine-tuning SpecAugment: max width of the time mask (frames, 0 = off)", ge=0)
    ft_mixup: float = field(0.5, "fine-tuning mixup probability of a batch (lambda ~ Beta(ft_mixup_alpha))")
    ft_mixup_alpha: float = field(10.0, "fine-tuning mixup Beta parameter")
    ft_token_drop_time: float = field(0.2, "fine-tuning token dropping: fraction of time columns dropped")
    ft_token_drop_freq: float = field(0.2, "fine-tuning token dropping: fraction of frequency rows dropped")


# ---- masking variants (vectorised, all through mask_from_scores) -------------------------------------------------------
def time_masking(batch: int, grid: tuple[int, int], ratio: float, generator=None, device="cpu") -> MaskInfo:
    """Mask whole time columns: ``int(T * (1 - ratio))`` columns kept, every frequency patch of a column alike."""
    t, f = grid
    scores = uniform_noise((batch, t, 1), generator, device).expand(batch, t, f).reshape(batch, t * f)
    return mask_from_scores(scores, num_keep(t, ratio) * f)


def frequency_masking(batch: int, grid: tuple[int, int], ratio: float, generator=None, device="cpu") -> MaskInfo:
    """Mask whole frequency rows: ``int(F * (1 - ratio))`` rows kept."""
    t, f = grid
    scores = uniform_noise((batch, 1, f), generator, device).expand(batch, t, f).reshape(batch, t * f)
    return mask_from_scores(scores, t * num_keep(f, ratio))


def time_frequency_masking(batch: int, grid: tuple[int, int], ratio_t: float, ratio_f: float, generator=None,
                           device="cpu") -> MaskInfo:
    """Mask time columns and frequency rows together (a patch is visible if its column and its row are kept):
    exactly ``int(T (1 - ratio_t)) * int(F (1 - ratio_f))`` patches stay visible in every sample."""
    t, f = grid
    col = mask_from_scores(uniform_noise((batch, t), generator, device), num_keep(t, ratio_t)).mask  # (B, T) 1 = masked
    row = mask_from_scores(uniform_noise((batch, f), generator, device), num_keep(f, ratio_f)).mask  # (B, F)
    masked = torch.maximum(col[:, :, None], row[:, None, :]).reshape(batch, t * f)
    return mask_from_mask(masked)


def audio_mask(mode: str, batch: int, grid: tuple[int, int], ratio: float, generator=None, device="cpu") -> MaskInfo:
    if mode == "random":
        return random_masking(batch, grid[0] * grid[1], ratio, generator, device)
    if mode == "time":
        return time_masking(batch, grid, ratio, generator, device)
    if mode == "frequency":
        return frequency_masking(batch, grid, ratio, generator, device)
    if mode == "time+frequency":
        r = 1.0 - math.sqrt(1.0 - ratio)  # per axis, so that about `ratio` of the patches are masked overall
        return time_frequency_masking(batch, grid, r, r, generator, device)
    raise MaeError(f"unknown mask strategy {mode!r}; choose from {MASK_MODES}")


# ---- local-window decoder --------------------------------------------------------------------------------------------------
def window_attn_mask(grid: tuple[int, int], window: int, shift: int, device="cpu") -> torch.Tensor:
    """(L, L) bool, True = may attend: tokens attend within windows of ``window`` time steps (all frequencies),
    the window boundaries moved by ``shift`` time steps (shifted windows; edge windows are partial, which is what
    Swin's cyclic shift with its attention mask computes)."""
    t, f = grid
    tt = torch.arange(t, device=device).repeat_interleave(f)  # time index of each token, row-major (time, freq)
    win = (tt + (window - shift) % window) // window if shift else tt // window
    return win[:, None] == win[None, :]


class LocalWindowDecoder(MAEDecoder):
    """MAE decoder whose blocks attend within time windows; odd blocks use windows shifted by half a window.

    As in the Audio-MAE local decoder, the prefix (cls) token is dropped before the windowed blocks.
    """

    def __init__(self, *args, grid: tuple[int, int], window: int = 4, **kw):
        super().__init__(*args, **kw)
        self.grid = tuple(grid)
        self.window = window
        self._masks: dict = {}

    def masks(self, grid, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(grid), str(device))
        if key not in self._masks:
            w = max(1, min(self.window, grid[0]))
            self._masks[key] = (window_attn_mask(grid, w, 0, device), window_attn_mask(grid, w, w // 2, device))
        return self._masks[key]

    def forward(self, latent, ids_restore, pos=None, select=None, grid=None):
        p = self.num_prefix_tokens
        x = self.embed(latent)
        x = restore_tokens(x[:, p:], self.mask_token, ids_restore)
        pos = self.pos_embed if pos is None else pos
        if pos is not None:
            x = x + pos
        plain, shifted = self.masks(grid or self.grid, x.device)
        for i, blk in enumerate(self.blocks):
            x = blk(x, attn_mask=shifted if i % 2 else plain)
        return self.pred(self.norm(x))


# ---- the model ------------------------------------------------------------------------------------------------------------
class AudioMAE(MaskedAutoencoder):
    method_name = "audio-mae"
    pool = "mean"

    def __init__(self, config: AudioMAEConfig):
        super().__init__()
        self.config = c = config
        self.grid = grid_shape((c.target_length, c.num_mel_bins), c.patch_size)  # (time patches, frequency patches)
        self.patch_embed = PatchEmbed2d(c.patch_size, 1, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        dec_pos = sincos_pos_embed(c.decoder_embed_dim, self.grid)
        self.build_mae(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                       decoder_dim=c.decoder_embed_dim, decoder_depth=c.decoder_depth,
                       decoder_heads=c.decoder_num_heads, pred_dim=c.patch_size ** 2, decoder_pos=dec_pos,
                       mask_ratio=c.mask_ratio, norm_pix_loss=c.norm_pix_loss, mlp_ratio=c.mlp_ratio,
                       drop_path=c.drop_path)
        if c.decoder_mode == "swin":
            w = (c.decoder_window, c.decoder_window_freq)
            self.decoder = SwinDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads,
                                       c.patch_size ** 2, grid=self.grid, window=w, shift=(c.decoder_window // 2, 0),
                                       pos_embed=dec_pos, mlp_ratio=c.mlp_ratio)
        elif c.decoder_mode == "local":
            self.decoder = LocalWindowDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads,
                                              c.patch_size ** 2, pos_embed=dec_pos, mlp_ratio=c.mlp_ratio,
                                              grid=self.grid, window=c.decoder_window)
        self.init_weights()
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    # ---- tokens and targets ----------------------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> tuple[int, int]:
        if x.ndim == 3:
            raise MaeError(f"expected fbank batches of shape (B, 1, time, mel), got {tuple(x.shape)}")
        if x.shape[-1] != self.config.num_mel_bins:
            raise MaeError(f"input has {x.shape[-1]} mel bins but the model expects {self.config.num_mel_bins}")
        return grid_shape(x.shape[-2:], self.config.patch_size)

    def _pos(self, grid, dim, device, base):
        if grid == self.grid:
            return base
        return sincos_pos_embed(dim, grid)[None].to(device)

    def tokenize(self, batch):
        x = batch["x"]
        grid = self._check(x)
        return self.patch_embed(x), self._pos(grid, self.config.embed_dim, x.device, self.pos_embed)

    def target(self, batch):
        return patchify(batch["x"], self.config.patch_size)

    def make_mask(self, batch, tokens, generator=None):
        if batch.get("mask") is not None:
            return mask_from_mask(batch["mask"].to(tokens.device))
        grid = self._check(batch["x"])
        return audio_mask(self.config.mask_strategy, tokens.shape[0], grid, self.mask_ratio, generator, tokens.device)

    def forward_decoder(self, latent, mask, batch):
        grid = self._check(batch["x"])
        pos = None
        if grid != self.grid:
            pos = sincos_pos_embed(self.config.decoder_embed_dim, grid)[None].to(latent.device)
        if isinstance(self.decoder, (LocalWindowDecoder, SwinDecoder)):
            return self.decoder(latent, mask.ids_restore, pos=pos, grid=grid)
        return self.decoder(latent, mask.ids_restore, pos=pos)

    def token_grid(self, batch: dict) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Patch tokens for grid probes, ((B, L, D), (time, frequency) grid): with ``probe_tokens: focal`` the
        last layer's patch tokens minus its cls token (Bird-MAE's ``focal_similarity``)."""
        feats = self.forward_features(batch)
        p = self.encoder.num_prefix_tokens
        patch = feats[:, p:]
        if self.config.probe_tokens == "focal" and p:
            patch = patch - feats[:, :1]
        return patch, self._check(batch["x"])

    def unpatchify(self, tokens: torch.Tensor, grid=None) -> torch.Tensor:
        return unpatchify(tokens, self.config.patch_size, grid or self.grid, 1)

    # ---- augmentations --------------------------------------------------------------------------------------------------
    def raw_zero(self) -> float:
        """The normalised value of raw log-mel 0, (0 - mean) / (2 std); 0.0 when the statistics are not known."""
        c = self.config
        if c.norm_mean is None or c.norm_std is None:
            return 0.0
        return -c.norm_mean / (2.0 * c.norm_std)

    def roll_mag(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The reference's ``roll_mag_aug`` on the cached fbank: each clip's ``frames`` real frames (the zero padding
        after them stays) are rolled along time by s ~ U{0, frames - 1} (out[t] = x[(t - s) mod frames]) and raised by
        2 ln(g), g ~ Beta(10, 10) + 0.5 (a waveform gain g scales the power spectrum by g^2), which is ln(g) / std
        after the normalisation. A new batch dict; the input is not changed."""
        x = batch["x"]
        b, t = x.shape[0], x.shape[2]
        n = batch.get("frames")
        n = torch.full((b,), t, device=x.device) if n is None else n.to(x.device).long().clamp(1, t)
        shift = (uniform_noise((b,), generator, x.device) * n).long().clamp(max=t - 1)
        pos = torch.arange(t, device=x.device)[None]
        real = pos < n[:, None]  # (B, T)
        src = torch.where(real, (pos - shift[:, None]) % n[:, None], pos)
        x = torch.gather(x, 2, src[:, None, :, None].expand_as(x))
        gain = torch.distributions.Beta(10.0, 10.0).sample((b,)).to(x.device) + 0.5
        std = self.config.norm_std or 0.5  # unknown statistics: the input is taken as raw log-mel
        x = x + real[:, None, :, None] * (torch.log(gain) / std).to(x.dtype)[:, None, None, None]
        return {**batch, "x": x}

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        """Pretraining step. In training mode with a ``generator``, the draws that use the global generator (the
        roll_mag_aug gain, the dropout of the Swin decoder's position-bias MLP) run on a global state seeded from
        ``generator``, so the same generator gives the same loss (mae-core's model contract)."""
        if not self.training:
            return super().forward(batch, generator)
        x = batch["x"]
        if generator is None:
            return self._train_forward(batch, None)
        seed = int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            torch.manual_seed(seed)
            return self._train_forward(batch, generator)

    def _train_forward(self, batch: dict, generator: torch.Generator | None) -> ModelOutput:
        if self.config.roll_mag_aug:
            batch = self.roll_mag(batch, generator)
        return super().forward(batch, generator)

    def spec_augment(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment: one frequency mask and one time mask per sample (independent), filled with raw log-mel 0
        (the reference masks before normalising): :meth:`raw_zero` on the normalised input."""
        import torchaudio.functional as AF

        c = self.config
        fill = self.raw_zero()
        if c.ft_freq_mask > 0:
            x = AF.mask_along_axis_iid(x, c.ft_freq_mask, fill, axis=3)
        if c.ft_time_mask > 0:
            x = AF.mask_along_axis_iid(x, c.ft_time_mask, fill, axis=2)
        return x

    def mixup(self, batch: dict) -> dict:
        """Mix each sample with another of the batch: x = l x + (1 - l) x', label = l y + (1 - l) y'.

        Labels become class probabilities: the data sets give single-label samples a one-hot ``onehot`` entry for
        this (the classifier then uses soft-target cross-entropy); multi-label targets are mixed as they are (BCE).
        The batch dict is updated in place, so the classifier's loss sees the mixed labels.
        """
        c = self.config
        y = batch.get("label")
        if y is None or c.ft_mixup <= 0 or float(torch.rand(())) >= c.ft_mixup:
            return batch
        if y.ndim == 1:
            if batch.get("onehot") is None:
                return batch  # no class count known: no mixup for this batch
            y = batch["onehot"]
        x = batch["x"]
        lam = float(torch.distributions.Beta(c.ft_mixup_alpha, c.ft_mixup_alpha).sample())
        perm = torch.randperm(x.shape[0], device=x.device)
        batch["x"] = lam * x + (1 - lam) * x[perm]
        batch["label"] = lam * y.float() + (1 - lam) * y.float()[perm]
        return batch

    def finetune_features(self, batch: dict) -> torch.Tensor:
        """Encoder output for a fine-tuning step: SpecAugment on the fbank, then token dropping (the paper's
        structured time + frequency masking) before the encoder. (B, prefix + kept tokens, D)."""
        c = self.config
        x = self.spec_augment(batch["x"])
        grid = self._check(x)
        tokens = self.patch_embed(x)
        pos = self._pos(grid, c.embed_dim, x.device, self.pos_embed)
        if c.ft_token_drop_time > 0 or c.ft_token_drop_freq > 0:
            m = time_frequency_masking(tokens.shape[0], grid, c.ft_token_drop_time, c.ft_token_drop_freq,
                                       device=tokens.device)
            return self.forward_encoder(tokens, pos, m)
        return self.encoder(tokens, pos)

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """(B, F) features; in training mode (fine-tuning) with mixup, SpecAugment and token dropping."""
        if self.training:
            batch = self.mixup(batch)
            return self.pool_features(self.finetune_features(batch), pool)
        return self.pool_features(self.forward_features(batch), pool)


PRESETS = {
    # name: (method, {"model": ..., "data": ..., "dataset": ...}, description)
    "audioset": ("audio-mae", {"model": dict(target_length=1024, embed_dim=768, depth=12, num_heads=12,
                                             decoder_embed_dim=512, decoder_depth=16, decoder_num_heads=16,
                                             ft_freq_mask=48, ft_time_mask=192, ft_token_drop_time=0.25,
                                             ft_token_drop_freq=0.25),
                               "data": dict(sample_rate=16000, target_length=1024, norm_mean=-4.268,
                                            norm_std=4.569)},
                 "Audio-MAE ViT-B on AudioSet: 16 kHz, 10.24 s (1024 frames), stats -4.268 / 4.569, local decoder"),
    "esc50": ("audio-mae", {"model": dict(target_length=512, ft_freq_mask=24, ft_time_mask=96),
                            "data": dict(sample_rate=16000, target_length=512, norm_mean=-6.627, norm_std=5.358)},
              "ESC-50: 16 kHz, 5 s (512 frames), stats -6.627 / 5.358"),
    "speechcommands": ("audio-mae", {"model": dict(target_length=128, ft_freq_mask=48, ft_time_mask=48),
                                     "data": dict(sample_rate=16000, target_length=128, norm_mean=-6.846,
                                                  norm_std=5.565)},
                       "Speech Commands: 16 kHz, 1 s (128 frames), stats -6.846 / 5.565"),
    "fsdd": ("audio-mae", {"dataset": "fsdd",
                           "model": dict(target_length=128),
                           "data": dict(sample_rate=16000, target_length=128)},
             "Free Spoken Digits (--data PATH): resampled 8 -> 16 kHz, 1.28 s (128 frames), stats from `stats`"),
}
