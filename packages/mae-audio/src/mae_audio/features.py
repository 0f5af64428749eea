"""Audio in, Audio-MAE features out.

- :func:`read_audio` reads WAV / FLAC / OGG / MP3 with ``soundfile`` (torchaudio 2.9's loader needs torchcodec and a
  system FFmpeg), mixes to mono and checks the samples (zero length, NaN / inf).
- :func:`to_sample_rate` resamples with ``torchaudio.functional.resample``.
- :func:`fbank` is the Audio-MAE front end: waveform mean-centred, ``torchaudio.compliance.kaldi.fbank`` with 128
  mel bins, ``htk_compat``, Hanning window, 25 ms frames, 10 ms shift, no dither.
- :func:`pad_or_crop` brings the frames to the target length; :func:`normalize` applies (x - mean) / (2 std)
  with dataset statistics (:data:`NORM_PRESETS`, or :func:`dataset_stats` / ``mae-audio stats``).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from mae_core.errors import DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".oga", ".aiff", ".aif")

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0

# (mean, std) of the log-mel fbank values of each dataset, as used by the Audio-MAE / Bird-MAE code
NORM_PRESETS = {
    "audioset": (-4.268, 4.569),
    "esc50": (-6.627, 5.358),
    "speechcommands": (-6.846, 5.565),
    "birdset": (-7.2, 4.43),  # BirdSet at 32 kHz (Bird-MAE)
}


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """(mono waveform (N,) float32, sample rate) of an audio file; a one-line DataError naming the file otherwise."""
    import soundfile as sf

    path = str(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError ... for broken files
        msg = str(e).split("\n")[0].strip() or type(e).__name__
        raise DataError(f"{path}: cannot read audio ({msg})") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio has zero length")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: audio contains NaN or inf samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    return wav, int(sr)


_RESAMPLERS: dict = {}


def to_sample_rate(wav: torch.Tensor, sr: int, target_sr: int) -> torch.Tensor:
    """Resample with torchaudio's windowed-sinc resampler (``torchaudio.functional.resample``; the transform caches
    its kernel per rate pair, which makes a folder of same-rate files five times faster)."""
    if sr == target_sr:
        return wav
    import torchaudio.transforms as AT
    key = (int(sr), int(target_sr))
    if key not in _RESAMPLERS:
        _RESAMPLERS[key] = AT.Resample(*key)
    return _RESAMPLERS[key](wav)


def frame_samples(sample_rate: int) -> int:
    """Samples in one 25 ms analysis frame."""
    return int(sample_rate * FRAME_LENGTH_MS / 1000)


def samples_for_frames(num_frames: int, sample_rate: int) -> int:
    """Waveform length that yields exactly ``num_frames`` 25 ms / 10 ms frames (kaldi snip_edges)."""
    shift = int(sample_rate * FRAME_SHIFT_MS / 1000)
    return (num_frames - 1) * shift + frame_samples(sample_rate)


def fbank(wav: torch.Tensor, sample_rate: int, num_mel_bins: int = 128) -> torch.Tensor:
    """Audio-MAE features of a mono waveform (N,): (frames, num_mel_bins) log-mel filterbank."""
    import torchaudio.compliance.kaldi as kaldi

    wav = wav.float().reshape(1, -1)
    wav = wav - wav.mean()
    return kaldi.fbank(wav, htk_compat=True, sample_frequency=float(sample_rate), use_energy=False,
                       window_type="hanning", num_mel_bins=num_mel_bins, dither=0.0,
                       frame_length=FRAME_LENGTH_MS, frame_shift=FRAME_SHIFT_MS)


def pad_or_crop(feats: torch.Tensor, target_length: int, start: int = 0) -> torch.Tensor:
    """(frames, bins) -> (target_length, bins): zero-pad at the end (as Audio-MAE) or crop from ``start``."""
    n = feats.shape[0]
    if n < target_length:
        return torch.nn.functional.pad(feats, (0, 0, 0, target_length - n))
    start = max(0, min(start, n - target_length))
    return feats[start:start + target_length]


def real_frames(feats: torch.Tensor) -> torch.Tensor:
    """(N, T, F) padded raw fbanks -> (N,) frames before the zero padding: one past the last frame that is not all
    zero (a log-mel frame of real audio is never exactly 0 in every bin: kaldi floors the energies at log(eps)),
    at least 1."""
    nonzero = (feats != 0).any(-1)  # (N, T)
    t = feats.shape[1]
    last = torch.where(nonzero, torch.arange(1, t + 1), torch.zeros(1, dtype=torch.long)).amax(-1)
    return last.clamp(min=1)


def normalize(feats: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Audio-MAE normalisation: (x - mean) / (2 std)."""
    return (feats - mean) / (2.0 * std)


def denormalize(feats: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return feats * (2.0 * std) + mean


def dataset_stats(feats: torch.Tensor | list[torch.Tensor]) -> tuple[float, float]:
    """Mean and standard deviation of all fbank values (the statistics Audio-MAE normalises with)."""
    if isinstance(feats, (list, tuple)):
        total = sum(int(f.numel()) for f in feats)
        s = sum(float(f.double().sum()) for f in feats)
        mean = s / max(total, 1)
        var = sum(float(((f.double() - mean) ** 2).sum()) for f in feats) / max(total - 1, 1)
        return mean, var ** 0.5
    f = feats.double()
    return float(f.mean()), float(f.std())
