"""CropMAE (Eymael et al., ECCV 2024): a siamese MAE on still images. Two crops of one image, a global view
(random resized crop of the image) seen whole and a local view (random resized crop inside the global one) masked
at 0.985, so only a handful of patches stay visible; the decoder reconstructs the local view by cross-attending to
the global one. On video data one random frame per clip is the image.

Crops as the authors' released ``GlobalToLocal`` strategy and ImageNet recipe (``train_cropmae_in.sh``): global
RandomResizedCrop of area 0.1-1 of the image, local RandomResizedCrop of area 0.3-0.6 of the global crop, aspect
3/4-4/3 for both, then each view is flipped left-right with probability 0.5, independently of the other."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mae_core.augment import crop_resize, random_boxes
from mae_core.config import field

from .siamese import SiameseConfig, SiameseMAE, uniform


@dataclass
class CropMAEConfig(SiameseConfig):
    mask_ratio: float = field(0.985, "mask ratio of the local crop (at least one patch stays visible)")
    global_scale: list[float] = field([0.1, 1.0], "area range of the global crop, as a fraction of the image")
    local_scale: list[float] = field([0.3, 0.6], "area range of the local crop, as a fraction of the global crop")
    aspect: list[float] = field([0.75, 1.3333333333333333], "aspect-ratio range of both crops (log-uniform)")
    flip: bool = field(True, "flip each view left-right with probability 0.5, independently")


class CropMAE(SiameseMAE):
    def make_views(self, batch, generator=None):
        c = self.config
        if "video" in batch:
            video = batch["video"]
            b, t = video.shape[0], video.shape[2]
            f = (uniform((b,), generator, video.device) * t).long().clamp_max(t - 1)
            images = video.transpose(1, 2)[torch.arange(b, device=video.device), f]
        else:
            images = batch["image"]
            b = images.shape[0]
        u = uniform((b, 10), generator, images.device)
        g = random_boxes(u[:, :4], c.global_scale, c.aspect)
        loc = random_boxes(u[:, 4:8], c.local_scale, c.aspect)
        # the local box lives inside the global one
        local = torch.stack([g[:, 0] + g[:, 2] * loc[:, 0], g[:, 1] + g[:, 3] * loc[:, 1],
                             g[:, 2] * loc[:, 2], g[:, 3] * loc[:, 3]], dim=1)
        size = tuple(images.shape[-2:])
        flip_g, flip_l = ((u[:, 8] < 0.5), (u[:, 9] < 0.5)) if c.flip else (None, None)
        return crop_resize(images, g, size, flip_g), crop_resize(images, local, size, flip_l)


PRESETS = {
    "cropmae-tiny": ({}, "CropMAE for 32 px frames, patch 4 (64 tokens), mask 0.985 (one visible patch)"),
    "cropmae-vit-s16": (dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                             decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8, decoder_ffn_dim=2048),
                        "ViT-S/16 at 224 px (196 patches, 2 visible at 0.985), decoder 256 x 4"),
}
