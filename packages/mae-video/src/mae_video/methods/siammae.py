"""SiamMAE (Gupta et al., NeurIPS 2023): two frames of one video, the past frame seen whole, the future frame
masked at 0.95; the decoder reconstructs the future frame by cross-attending to the past one.

Views as the authors' released data pipeline (the SiamMAE re-implementation in the CropMAE repository,
``SiamMAE_PIPE.py`` / ``sample_frames``): the frame gap is drawn uniformly from ``[min(4, n - 1), min(48, n))``
(an integer in ``randint(lo, hi)``, the upper end excluded) for a clip of ``n`` frames, the first frame uniformly
among those that leave room for the gap; both frames then get the same RandomResizedCrop (area 0.5-1 of the frame,
aspect 3/4-4/3) and the same horizontal flip (probability 0.5). The gap counts frames of the clip the model is given:
on ``video-folder`` data with ``--stride s`` one clip frame is ``s`` raw frames, so raw-frame gaps need stride 1
and clips of at least 49 frames (the embedded 8-frame clips give gaps 4-7).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mae_core.augment import crop_resize, random_boxes
from mae_core.config import field
from mae_core.errors import MaeError

from .siamese import SiameseConfig, SiameseMAE, uniform


@dataclass
class SiamMAEConfig(SiameseConfig):
    mask_ratio: float = field(0.95, "mask ratio of the later frame (at least one patch stays visible)")
    frame_gap_min: int = field(4, "smallest gap between the two frames, in frames of the clip (capped at clip "
                                  "length - 1)", ge=1)
    frame_gap_max: int = field(48, "the gap is drawn below this (exclusive, capped at the clip length)", ge=1)
    crop_scale: list[float] = field([0.5, 1.0], "area range of the RandomResizedCrop shared by both frames "
                                                "([1, 1] with aspect [1, 1]: no crop)")
    aspect: list[float] = field([0.75, 1.3333333333333333], "aspect-ratio range of the shared crop (log-uniform)")
    flip: bool = field(True, "flip both frames left-right together with probability 0.5")


def gap_range(t: int, gmin: int, gmax: int) -> tuple[int, int]:
    """The reference's ``(lo, hi)`` for a clip of ``t`` frames: gaps ``lo .. hi - 1``."""
    lo = min(gmin, t - 1)
    hi = max(lo + 1, min(gmax, t))
    return lo, hi


class SiamMAE(SiameseMAE):
    def make_views(self, batch, generator=None):
        video = batch["video"]
        b, _, t = video.shape[:3]
        if t < 2:
            raise MaeError(f"SiamMAE needs clips of at least 2 frames, got {t}")
        c = self.config
        lo, hi = gap_range(t, c.frame_gap_min, c.frame_gap_max)
        u = uniform((b, 7), generator, video.device)
        gap = lo + (u[:, 0] * (hi - lo)).long().clamp_max(hi - 1 - lo)
        first = (u[:, 1] * (t - gap)).long().clamp_max(t - 1 - gap)
        frames = video.transpose(1, 2)  # (B, T, C, H, W)
        rows = torch.arange(b, device=video.device)
        a, z = frames[rows, first], frames[rows, first + gap]
        if tuple(c.crop_scale) == (1.0, 1.0) and tuple(c.aspect) == (1.0, 1.0) and not c.flip:
            return a, z
        box = random_boxes(u[:, 2:6], c.crop_scale, c.aspect)
        flip = (u[:, 6] < 0.5) if c.flip else None
        size = tuple(a.shape[-2:])
        both = crop_resize(torch.cat([a, z]), box.repeat(2, 1), size, None if flip is None else flip.repeat(2))
        return both[:b], both[b:]


PRESETS = {
    "siammae-tiny": ({}, "SiamMAE for 32 px frames, patch 4 (64 tokens per frame), mask 0.95"),
    "siammae-vit-s8": (dict(img_size=224, patch_size=8, embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=512,
                            decoder_depth=4, decoder_num_heads=16, decoder_ffn_dim=2048),
                       "ViT-S/8 at 224 px, cross-attention decoder 512 x 4 (the paper's main setting)"),
}
