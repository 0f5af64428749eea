"""SiamMAE (Gupta et al., NeurIPS 2023): two frames of one video, the past frame seen whole, the future frame
masked at 0.95; the decoder reconstructs the future frame by cross-attending to the past one. The frame gap is
sampled per clip from a range (``frame_gap_min`` .. ``frame_gap_max`` frames of the sampled clip)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mae_core.config import field
from mae_core.errors import MaeError

from .siamese import SiameseConfig, SiameseMAE, uniform


@dataclass
class SiamMAEConfig(SiameseConfig):
    mask_ratio: float = field(0.95, "mask ratio of the later frame (at least one patch stays visible)")
    frame_gap_min: int = field(1, "smallest gap between the two frames, in frames of the clip", ge=1)
    frame_gap_max: int = field(4, "largest gap between the two frames (capped at clip length - 1)", ge=1)


class SiamMAE(SiameseMAE):
    def make_views(self, batch, generator=None):
        video = batch["video"]
        b, _, t = video.shape[:3]
        if t < 2:
            raise MaeError(f"SiamMAE needs clips of at least 2 frames, got {t}")
        c = self.config
        gmax = max(1, min(c.frame_gap_max, t - 1))
        gmin = max(1, min(c.frame_gap_min, gmax))
        u = uniform((b, 2), generator, video.device)
        gap = gmin + (u[:, 0] * (gmax - gmin + 1)).long().clamp_max(gmax - gmin)
        first = (u[:, 1] * (t - gap)).long().clamp_max(t - 1 - gap)
        frames = video.transpose(1, 2)  # (B, T, C, H, W)
        rows = torch.arange(b, device=video.device)
        return frames[rows, first], frames[rows, first + gap]


PRESETS = {
    "siammae-tiny": ({}, "SiamMAE for 32 px frames, patch 4 (64 tokens per frame), mask 0.95"),
    "siammae-vit-s8": (dict(img_size=224, patch_size=8, embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=512,
                            decoder_depth=4, decoder_num_heads=16),
                       "ViT-S/8 at 224 px, cross-attention decoder 512 x 4 (the paper's main setting)"),
}
