from .audio_mae import AudioMAE, AudioMAEConfig, audio_mask, frequency_masking, time_frequency_masking, time_masking
from .bird_mae import BirdMAE, BirdMAEConfig

__all__ = ["AudioMAE", "AudioMAEConfig", "BirdMAE", "BirdMAEConfig", "audio_mask", "frequency_masking",
           "time_frequency_masking", "time_masking"]
