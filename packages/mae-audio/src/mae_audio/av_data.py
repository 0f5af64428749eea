"""Audio-visual data sets: ``{"video": (3, T, S, S), "audio": (1, target_length, num_mel_bins), "label", ...}``.

- ``talking-faces``: the embedded default of HiCMAE, synthetic talking faces with emotion labels
  (:mod:`mae_audio.talking`).
- ``av-folder``: your audio-visual clips (MP4 or anything FFmpeg reads) with a CSV of labels: ``--data PATH`` is the
  folder holding ``labels.csv`` (columns ``path`` (or ``file``), ``label``, optional ``split``) or the CSV itself.
  Both streams are decoded with PyAV: ``num_frames`` frames spread evenly over the first ``clip_seconds``, centre
  cropped to a square and resized to ``image_size``; the audio stream mixed to mono and resampled to
  ``sample_rate`` by FFmpeg, then the package's kaldi fbank front end (:func:`mae_audio.features.fbank`).

Frames are kept as uint8 and normalised per sample with the ImageNet mean and std (the HiCMAE / VideoMAE input);
fbanks are normalised as Audio-MAE's, (x - mean) / (2 std), with statistics of the training split when the config has
none (written back into the config, so the run stores them).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError

from .data import FrontEndConfig, cached_split, say_once
from .features import dataset_stats, fbank, normalize, pad_or_crop, samples_for_frames
from .talking import EMOTIONS, talking_faces

VIDEO_MEAN = (0.485, 0.456, 0.406)
VIDEO_STD = (0.229, 0.224, 0.225)


@dataclass
class AVConfig(FrontEndConfig):
    num_frames: int = field(16, "video frames per clip", ge=1)
    image_size: int = field(64, "frame side in pixels", ge=8)


@dataclass
class TalkingFacesConfig(AVConfig):
    num_train: int = field(320, "training clips (emotions balanced)", ge=1)
    num_test: int = field(160, "test clips, of unseen subjects", ge=1)
    train_subjects: int = field(16, "identities (faces and voices) of the training split", ge=1)
    test_subjects: int = field(8, "other identities of the test split", ge=1)
    seed: int = field(0, "seed of the generator")


@dataclass
class AVFolderConfig(AVConfig):
    path: str | None = field(None, "folder with labels.csv (path, label[, split]) and the clips, or the CSV itself")
    clip_seconds: float | None = field(None, "seconds read from the start of each clip (none: target_length "
                                             "fbank frames)", gt=0)
    val_fraction: float = field(0.2, "held-out fraction when the CSV has no split column", ge=0, lt=1)
    bad_files: str = field("skip", "unreadable clips: skip (counted, named) or error", choices=["skip", "error"])
    seed: int = field(0, "seed of the deterministic train / held-out split")


class AVDataset(Dataset):
    """Cached uint8 frames and normalised fbanks; subclasses give ``_raw(split)`` -> dict(video, fbank, labels,
    classes, names)."""

    def __init__(self, config: AVConfig, split: str = "train"):
        if split not in ("train", "test"):
            raise DataError(f"unknown split {split!r}")
        self.config = c = config
        self.split = split
        raw = self._cached(split)
        if c.norm_mean is None or c.norm_std is None:
            mean, std = dataset_stats((raw if split == "train" else self._cached("train"))["fbank"])
            c.norm_mean, c.norm_std = round(mean, 4), round(std, 4)
            say_once(f"note: {self.name()}: fbank statistics from the training split: mean {c.norm_mean}, "
                     f"std {c.norm_std} (stored in the run config)")
        self.video = raw["video"]
        self.audio = normalize(raw["fbank"], c.norm_mean, c.norm_std).unsqueeze(1).contiguous()
        self.labels, self.classes, self.names = raw["labels"], raw["classes"], raw["names"]
        self.num_classes = len(self.classes)
        self.mean, self.std = VIDEO_MEAN, VIDEO_STD
        self._m = torch.tensor(VIDEO_MEAN)[:, None, None, None]
        self._s = torch.tensor(VIDEO_STD)[:, None, None, None]

    def name(self) -> str:
        raise NotImplementedError

    def key(self) -> tuple:
        raise NotImplementedError

    def _cached(self, split: str) -> dict:
        return cached_split(self, split, self.config.num_frames, self.config.image_size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        video = (self.video[i].float() / 255.0 - self._m) / self._s
        return {"video": video, "audio": self.audio[i], "label": self.labels[i], "index": i}


def _fbanks(waves, cfg: AVConfig) -> torch.Tensor:
    return torch.stack([pad_or_crop(fbank(w, cfg.sample_rate, cfg.num_mel_bins), cfg.target_length) for w in waves])


class TalkingFaces(AVDataset):
    def name(self) -> str:
        return "talking-faces"

    def key(self) -> tuple:
        c = self.config
        return (c.num_train, c.num_test, c.train_subjects, c.test_subjects, c.seed)

    def _raw(self, split: str) -> dict:
        c = self.config
        n = c.num_train if split == "train" else c.num_test
        seconds = samples_for_frames(c.target_length, c.sample_rate) / c.sample_rate
        video, waves, labels, subjects = talking_faces(n, split, c.num_frames, c.image_size, seconds, c.sample_rate,
                                                       (c.train_subjects, c.test_subjects), c.seed)
        return {"video": video, "fbank": _fbanks(waves, c), "labels": labels, "classes": list(EMOTIONS),
                "names": [f"talking-faces/{split}/{i}:subject{int(s)}" for i, s in enumerate(subjects)]}


# ---- your clips ------------------------------------------------------------------------------------------------------------
def read_av(path: str | os.PathLike, num_frames: int, image_size: int, seconds: float, sample_rate: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames uint8 (3, num_frames, S, S), mono waveform (N,) at ``sample_rate``) of the first ``seconds`` of a
    clip, both streams decoded with PyAV; a one-line DataError naming the file otherwise."""
    try:
        import av
    except ImportError:
        raise DataError("reading audio-visual clips needs PyAV: pip install av") from None
    try:
        with av.open(str(path)) as box:
            if not box.streams.video or not box.streams.audio:
                raise DataError(f"{path}: needs a video and an audio stream")
            frames = []
            for f in box.decode(video=0):
                if f.time is not None and f.time >= seconds and frames:
                    break
                frames.append(torch.from_numpy(f.to_ndarray(format="rgb24")))
        with av.open(str(path)) as box:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks = [r.to_ndarray().reshape(-1) for f in box.decode(audio=0) for r in resampler.resample(f)]
            chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    except DataError:
        raise
    except Exception as e:  # PyAV raises its own error classes for broken or unsupported files
        raise DataError(f"{path}: cannot decode ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
                        ) from None
    if not frames or not chunks:
        raise DataError(f"{path}: no video frames or no audio samples")
    wav = torch.from_numpy(np.concatenate(chunks)[: int(seconds * sample_rate)].astype(np.float32))
    if not torch.isfinite(wav).all() or wav.numel() < sample_rate // 40:
        raise DataError(f"{path}: audio is shorter than one 25 ms frame or not finite")
    v = torch.stack(frames)[torch.linspace(0, len(frames) - 1, num_frames).round().long()]  # (T, H, W, 3)
    h, w = v.shape[1:3]
    side = min(h, w)
    v = v[:, (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side].permute(0, 3, 1, 2)
    v = torch.nn.functional.interpolate(v.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                                        align_corners=False)
    return v.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous(), wav


class AVFolder(AVDataset):
    def name(self) -> str:
        return str(self.config.path)

    def key(self) -> tuple:
        c = self.config
        return (os.path.abspath(c.path or ""), c.clip_seconds, c.val_fraction, c.seed, c.bad_files)

    def _rows(self) -> tuple[Path, list[dict]]:
        c = self.config
        if not c.path:
            raise DataError("no clips given (use --data PATH: a folder with labels.csv, or the CSV)")
        p = Path(c.path)
        table = p / "labels.csv" if p.is_dir() else p
        if not table.is_file():
            raise DataError(f"{table}: CSV file not found (a folder needs labels.csv: path, label[, split])")
        try:
            with open(table, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{table}: cannot read CSV ({e})") from None
        cols = {k.strip().lower(): k for k in (rows[0] if rows else {}) if k}
        pcol, lcol = cols.get("path") or cols.get("file"), cols.get("label")
        if not rows or pcol is None or lcol is None:
            raise DataError(f"{table}: CSV needs rows and a 'path' (or 'file') and a 'label' column")
        scol = cols.get("split")
        out = [{"path": table.parent / r[pcol].strip(), "label": r[lcol].strip(),
                "split": (r.get(scol) or "").strip().lower() if scol else ""} for r in rows]
        return table, out

    def _raw(self, split: str) -> dict:
        c = self.config
        table, rows = self._rows()
        classes = sorted({r["label"] for r in rows})
        if any(r["split"] for r in rows):
            want = {"train"} if split == "train" else {"test", "val", "valid", "validation", "eval"}
            rows = [r for r in rows if r["split"] in want]
        else:
            held = torch.rand(len(rows), generator=torch.Generator().manual_seed(c.seed)) < c.val_fraction
            rows = [r for r, h in zip(rows, held.tolist()) if h == (split != "train")]
        seconds = c.clip_seconds or samples_for_frames(c.target_length, c.sample_rate) / c.sample_rate
        videos, waves, kept, bad = [], [], [], []
        for r in rows:
            try:
                v, w = read_av(r["path"], c.num_frames, c.image_size, seconds, c.sample_rate)
            except DataError as e:
                if c.bad_files == "error":
                    raise
                bad.append(str(e))
                continue
            videos.append(v), waves.append(w), kept.append(r)
        if bad:
            say_once(f"warning: {table} ({split}): skipped {len(bad)} bad clip(s): " + "; ".join(bad[:3]))
        if not kept:
            raise DataError(f"{table}: the {split} split has no readable clips" + (f" ({bad[0]})" if bad else ""))
        return {"video": torch.stack(videos), "fbank": _fbanks(waves, c), "classes": classes,
                "labels": torch.tensor([classes.index(r["label"]) for r in kept]),
                "names": [str(r["path"]) for r in kept]}


__all__ = ["AVConfig", "AVDataset", "AVFolder", "AVFolderConfig", "TalkingFaces", "TalkingFacesConfig", "read_av"]
