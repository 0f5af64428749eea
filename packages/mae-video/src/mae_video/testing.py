"""Tiny configs for the tests of mae-video (seconds on a CPU)."""
from __future__ import annotations

from .data.synthetic import MovingShapesConfig
from .methods.cropmae import CropMAEConfig
from .methods.siammae import SiamMAEConfig
from .methods.videomae import VideoMAEConfig


def tiny_videomae_cfg(**kw) -> VideoMAEConfig:
    base = dict(num_frames=8, img_size=16, tubelet_size=2, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    base.update(kw)
    return VideoMAEConfig(**base)


def _siamese(**kw) -> dict:
    base = dict(num_frames=4, img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=32,
                decoder_depth=1, decoder_num_heads=2)
    base.update(kw)
    return base


def tiny_siammae_cfg(**kw) -> SiamMAEConfig:
    return SiamMAEConfig(**_siamese(**kw))


def tiny_cropmae_cfg(**kw) -> CropMAEConfig:
    return CropMAEConfig(**_siamese(**kw))


def tiny_clips_cfg(**kw) -> MovingShapesConfig:
    base = dict(num_frames=8, image_size=16, num_train=64, num_test=32)
    base.update(kw)
    return MovingShapesConfig(**base)
