"""Bird-MAE (Rauch et al., "Can Masked Autoencoders Also Listen to Birds?", 2025).

Audio-MAE adapted to bird sound: 32 kHz audio, 5 s clips (512 fbank frames, a 32 x 8 patch grid with 16 x 16
patches), BirdSet normalisation statistics (-7.2 / 4.43), 75 % unstructured masking and a plain (global attention)
transformer decoder instead of the local-window one. The frozen encoder is evaluated with the prototypical probe
(``--probe prototypical``, in mae-core) next to the linear probe and fine-tuning.

The model is :class:`~mae_audio.methods.audio_mae.AudioMAE` with these defaults; the ``bird-mae`` preset sets the
paper's clip length and model size, the method's defaults stay small enough to train on a laptop CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from mae_core.config import field

from .audio_mae import DECODER_MODES, MASK_MODES, AudioMAE, AudioMAEConfig


@dataclass
class BirdMAEConfig(AudioMAEConfig):
    mask_ratio: float = field(0.75, "fraction of patches hidden from the encoder (Bird-MAE: 0.75)")
    mask_strategy: str = field("random", "random (unstructured, Bird-MAE), time, frequency or time+frequency",
                               choices=MASK_MODES)
    decoder_mode: str = field("plain", "plain (global attention, Bird-MAE), swin or local", choices=DECODER_MODES)
    roll_mag_aug: bool = field(False, "pretraining: Audio-MAE's roll_mag_aug (off: not part of the Bird-MAE recipe "
                                      "here)")


class BirdMAE(AudioMAE):
    method_name = "bird-mae"

    def __init__(self, config: BirdMAEConfig):
        super().__init__(config)


PRESETS = {
    "bird-mae": ("bird-mae", {"model": dict(target_length=512, embed_dim=768, depth=12, num_heads=12,
                                            decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
                              "data": dict(sample_rate=32000, target_length=512, norm_mean=-7.2, norm_std=4.43)},
                 "Bird-MAE ViT-B: 32 kHz, 5 s clips (512 frames, 32 x 8 patches), BirdSet stats -7.2 / 4.43, "
                 "mask 0.75, plain decoder"),
    "bird-mae-small": ("bird-mae", {"model": dict(target_length=512),
                                    "data": dict(sample_rate=32000, target_length=512, norm_mean=-7.2,
                                                 norm_std=4.43)},
                       "Bird-MAE settings (32 kHz, 5 s, BirdSet stats, mask 0.75, plain decoder) with the small "
                       "default ViT"),
}
