"""mae-audio: masked autoencoders for audio on torchaudio — Audio-MAE, Bird-MAE and prototypical probing.

Importing the package registers the methods (``audio-mae``, ``bird-mae``, ``hicmae``), the data sets (``birdcalls``,
``audio-folder``, ``fsdd``, ``talking-faces``, ``av-folder``), the presets and the ``stats`` command with mae-core's
registry.
"""
from __future__ import annotations

import dataclasses

from mae_core.registry import (CommandSpec, DatasetSpec, MethodSpec, PresetSpec, register_command, register_dataset,
                               register_method, register_preset)

from .av_data import AVFolder, AVFolderConfig, TalkingFaces, TalkingFacesConfig
from .av_viz import visualize_av
from .data import FSDD, AudioFolder, AudioFolderConfig, BirdCalls, BirdCallsConfig, FSDDConfig
from .features import NORM_PRESETS, fbank, normalize, read_audio
from .methods import AudioMAE, AudioMAEConfig, BirdMAE, BirdMAEConfig
from .methods.audio_mae import PRESETS as AUDIO_PRESETS
from .methods.hicmae import HiCMAE, HiCMAEConfig, adapt_hicmae
from .methods.bird_mae import PRESETS as BIRD_PRESETS
from .prototypes import add_prototype_arguments, run_prototypes
from .stats import add_stats_arguments, run_stats
from .viz import visualize_audio

__version__ = "0.1.0"


def adapt_audio(model_cfg, data_cfg, dataset):
    """The model's time and frequency sizes and its fbank statistics follow the data's front end (the statistics
    are computed on the training split when the data config has none)."""
    if getattr(data_cfg, "norm_mean", 0.0) is None and dataset is not None:
        getattr(dataset, "config", None)  # builds a lazy dataset, which writes its statistics into data_cfg
    over = {k: getattr(data_cfg, k) for k in ("target_length", "num_mel_bins", "norm_mean", "norm_std")
            if getattr(data_cfg, k, None) is not None}
    return dataclasses.replace(model_cfg, **over)


_TINY = {"model": {"patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
                   "decoder_depth": 1, "decoder_num_heads": 2},
         "data": {"target_length": 64, "num_mel_bins": 64, "num_train": 4, "num_test": 2}}
_TRAIN = {"epochs": 30, "batch_size": 32, "base_lr": 4e-3, "warmup_epochs": 3, "weight_decay": 0.05}
_TINY_HICMAE = {"model": {"embed_dim": 24, "depth": 2, "num_heads": 2, "fusion_depth": 1, "decoder_embed_dim": 16,
                          "decoder_depth": 3, "decoder_num_heads": 2, "taps": [0, 1]},
                "data": {"num_frames": 4, "image_size": 32, "target_length": 64, "num_mel_bins": 32, "num_train": 4,
                         "num_test": 2, "train_subjects": 2, "test_subjects": 1}}
_TRAIN_HICMAE = {"epochs": 20, "batch_size": 32, "base_lr": 4e-3, "warmup_epochs": 2, "weight_decay": 0.05}
_TRAIN_AUDIO_MAE = {**_TRAIN, "weight_decay": 1e-4}  # the reference's AudioSet pretraining (--weight_decay 0.0001)

for _spec in (
    MethodSpec(name="audio-mae", domain="audio", default=True, config_cls=AudioMAEConfig, model_cls=AudioMAE,
               description="Audio-MAE: ViT MAE on log-mel fbank patches, 80 % masking, Swin-window decoder",
               default_dataset="birdcalls", visualize=visualize_audio, train_defaults=dict(_TRAIN_AUDIO_MAE), adapt=adapt_audio,
               tiny=_TINY,
               paper="Huang et al., Masked Autoencoders that Listen, NeurIPS 2022"),
    MethodSpec(name="bird-mae", domain="audio", config_cls=BirdMAEConfig, model_cls=BirdMAE,
               description="Bird-MAE: Audio-MAE for bird sound, 75 % masking, plain decoder, prototypical probing",
               default_dataset="birdcalls", visualize=visualize_audio, train_defaults=dict(_TRAIN), adapt=adapt_audio,
               tiny=_TINY,
               paper="Rauch et al., Can Masked Autoencoders Also Listen to Birds?, 2025"),
    MethodSpec(name="hicmae", domain="audio", config_cls=HiCMAEConfig, model_cls=HiCMAE,
               description="HiCMAE: audio-visual MAE, 90 % tube / 80 % fbank masking, InfoNCE at three encoder taps, "
                           "co-attention fusion, decoders cross-attending to the taps",
               default_dataset="talking-faces", visualize=visualize_av, picture="av_reconstruction",
               train_defaults=dict(_TRAIN_HICMAE), adapt=adapt_hicmae, tiny=_TINY_HICMAE,
               paper="Sun et al., HiCMAE: Hierarchical Contrastive Masked Autoencoder for Self-Supervised "
                     "Audio-Visual Emotion Recognition, Information Fusion 2024"),
):
    register_method(_spec)

register_dataset(DatasetSpec(
    name="birdcalls", domain="audio", config_cls=BirdCallsConfig, build=lambda cfg, split: BirdCalls(cfg, split),
    description="embedded: synthetic bird calls at 32 kHz, 6 species (sweeps, trills, harmonic stacks, pulse trains)"))
register_dataset(DatasetSpec(
    name="audio-folder", domain="audio", config_cls=AudioFolderConfig,
    build=lambda cfg, split: AudioFolder(cfg, split), takes_path=True,
    description="your audio (WAV/FLAC/OGG/MP3) in class sub-folders, or a CSV: path,labels[,split]; --data PATH"))
register_dataset(DatasetSpec(
    name="talking-faces", domain="audio", config_cls=TalkingFacesConfig,
    build=lambda cfg, split: TalkingFaces(cfg, split),
    description="embedded: synthetic talking faces (mouth follows the voice), 4 emotions in face and prosody, "
                "unseen test subjects"))
register_dataset(DatasetSpec(
    name="av-folder", domain="audio", config_cls=AVFolderConfig, build=lambda cfg, split: AVFolder(cfg, split),
    takes_path=False,
    description="your audio-visual clips (MP4...) with labels.csv (path, label[, split]), read with PyAV; "
                "--dataset av-folder --data PATH"))
register_dataset(DatasetSpec(
    name="fsdd", domain="audio", config_cls=FSDDConfig, build=lambda cfg, split: FSDD(cfg, split), takes_path=True,
    description="Free Spoken Digit Dataset folder (--dataset fsdd --data PATH), official split: takes 0-4 = test"))

for _name, (_method, _over, _desc) in {**AUDIO_PRESETS, **BIRD_PRESETS}.items():
    register_preset(PresetSpec(name=_name, domain="audio", method=_method, overrides=_over, description=_desc))

register_command(CommandSpec(
    name="stats", domain="audio", add_arguments=add_stats_arguments, run=run_stats,
    help="mean / std of the fbank values of a data set's training split (the normalisation statistics)"))

register_command(CommandSpec(
    name="prototypes", domain="audio", add_arguments=add_prototype_arguments, run=run_prototypes,
    help="train the prototypical probe on a run and draw where its prototypes fire on test clips"))

__all__ = ["AudioMAE", "AudioMAEConfig", "BirdMAE", "BirdMAEConfig", "BirdCalls", "AudioFolder", "FSDD",
           "HiCMAE", "HiCMAEConfig", "TalkingFaces", "AVFolder",
           "NORM_PRESETS", "fbank", "normalize", "read_audio", "__version__"]
