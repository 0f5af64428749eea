"""Audio data sets returning ``{"x": (1, target_length, num_mel_bins) normalised fbank, "label": ...}``.

- ``birdcalls``: the embedded default, synthetic bird calls at 32 kHz (:mod:`mae_audio.synth`), no download.
- ``audio-folder``: your audio files in class sub-folders, or a CSV with a path column and one or several labels
  per row (multi-label); ``--data PATH``.
- ``fsdd``: the Free Spoken Digit Dataset layout (``recordings/{digit}_{speaker}_{take}.wav``, takes 0-4 are the
  official test split); ``--dataset fsdd --data PATH``.

Features are computed once per (data set, split, front-end settings) and cached in memory, so epochs after the first
cost nothing. The normalisation statistics come from the config (``norm_mean`` / ``norm_std``, a preset or
``mae-audio stats``); when they are not set they are computed on the training split and written back into the
config, so the run directory's ``config.yaml`` stores them.

Bad files (unreadable or truncated, zero length, NaN / inf samples, shorter than one 25 ms frame) are skipped,
counted and named in one line (``bad_files: error`` stops at the first one instead). Silent clips are kept and
reported; audio at another sample rate is resampled, and that is said once.
"""
from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError

from .features import (AUDIO_EXTENSIONS, dataset_stats, fbank, frame_samples, normalize, pad_or_crop, read_audio,
                       real_frames, samples_for_frames, to_sample_rate)
from .synth import make_clip

_CACHE: dict[tuple, dict] = {}
_SAID: set[str] = set()


def say_once(msg: str) -> None:
    if msg not in _SAID:
        _SAID.add(msg)
        print(msg, file=sys.stderr)


def clear_cache() -> None:
    _CACHE.clear()
    _SAID.clear()


def cached_split(ds, split: str, *extra) -> dict:
    """``ds._raw(split)`` computed once per process for the same data and front end (one cache for every audio
    dataset, emptied by :func:`clear_cache`); ``extra``: the dataset's own fields that change the raw arrays."""
    c = ds.config
    k = (type(ds).__name__, ds.key(), split, c.sample_rate, c.target_length, c.num_mel_bins, *extra)
    if k not in _CACHE:
        _CACHE[k] = ds._raw(split)
    return _CACHE[k]


@dataclass
class FrontEndConfig:
    sample_rate: int = field(16000, "sample rate of the features (other rates are resampled)", ge=1)
    target_length: int = field(128, "fbank frames per clip (10 ms each); clips are zero-padded or cropped", ge=1)
    num_mel_bins: int = field(128, "mel filterbank bins", ge=1)
    norm_mean: float | None = field(None, "mean of the fbank values (none: computed on the training split)")
    norm_std: float | None = field(None, "std of the fbank values (features become (x - mean) / (2 std))", gt=0)
    bad_files: str = field("skip", "unreadable / empty / NaN / too-short files: skip (counted, named) or error",
                           choices=["skip", "error"])


@dataclass
class BirdCallsConfig(FrontEndConfig):
    sample_rate: int = field(32000, "sample rate of the generated calls", ge=1)
    num_species: int = field(6, "number of synthetic species (classes)", ge=1)
    num_train: int = field(480, "training clips", ge=1)
    num_test: int = field(180, "test clips", ge=1)
    clip_seconds: float | None = field(None, "clip length in seconds (none: exactly target_length frames)", gt=0)
    noise: float = field(0.05, "background noise level", ge=0)
    multilabel: bool = field(False, "about half of the clips hold a second species (multi-hot labels)")
    seed: int = field(0, "seed of the generator")


@dataclass
class AudioFolderConfig(FrontEndConfig):
    path: str | None = field(None, "folder with class sub-folders of audio files, or a CSV (path, labels[, split])")
    val_fraction: float = field(0.2, "held-out fraction when the data has no train / test split", ge=0, lt=1)
    multilabel: bool = field(False, "treat labels as multi-label (automatic when a CSV row has several labels)")
    label_sep: str = field(";", "separator of several labels in one CSV cell")
    seed: int = field(0, "seed of the deterministic train / held-out split")


@dataclass
class FSDDConfig(FrontEndConfig):
    path: str | None = field(None, "FSDD folder (with recordings/{digit}_{speaker}_{take}.wav)")


# ---- the cached feature table -----------------------------------------------------------------------------------------
def _features_of(items, cfg: FrontEndConfig, where: str) -> tuple[torch.Tensor, list[int], list[str]]:
    """items: iterable of (name, loader() -> (wav, sr)). Returns raw padded fbanks (N, T, F), kept indices, notes."""
    feats, kept, bad, silent, rates = [], [], [], [], set()
    min_len = frame_samples(cfg.sample_rate)
    max_len = samples_for_frames(cfg.target_length, cfg.sample_rate)
    for i, (name, load) in enumerate(items):
        try:
            wav, sr = load()
            if sr != cfg.sample_rate:
                rates.add(sr)
                wav = to_sample_rate(wav, sr, cfg.sample_rate)
            if wav.numel() < min_len:
                raise DataError(f"{name}: shorter than one 25 ms frame ({wav.numel()} samples at "
                                f"{cfg.sample_rate} Hz)")
            wav = wav[:max_len]
            if float(wav.abs().max()) == 0.0:
                silent.append(name)
            f = fbank(wav, cfg.sample_rate, cfg.num_mel_bins)
            if not torch.isfinite(f).all():
                raise DataError(f"{name}: features contain NaN or inf")
        except DataError as e:
            if cfg.bad_files == "error":
                raise
            bad.append(str(e))
            continue
        feats.append(pad_or_crop(f, cfg.target_length))
        kept.append(i)
    if rates:
        say_once(f"note: {where}: resampling audio at {', '.join(f'{r} Hz' for r in sorted(rates))} to "
                 f"{cfg.sample_rate} Hz")
    if bad:
        say_once(f"warning: {where}: skipped {len(bad)} bad file(s): " + "; ".join(bad[:5])
                 + (" ..." if len(bad) > 5 else ""))
    if silent:
        say_once(f"note: {where}: {len(silent)} silent clip(s) kept (all samples zero), e.g. {silent[0]}")
    if not feats:
        raise DataError(f"{where}: no usable audio" + (f" ({bad[0]})" if bad else ""))
    return torch.stack(feats), kept, bad


class FbankDataset(Dataset):
    """Cached, normalised fbank features and labels. Subclasses fill ``_raw(split)``."""

    multilabel = False

    def __init__(self, config: FrontEndConfig, split: str = "train"):
        if split not in ("train", "test"):
            raise DataError(f"unknown split {split!r}")
        self.config = c = config
        self.split = split
        raw = self._cached(split)
        if c.norm_mean is None or c.norm_std is None:
            train = raw if split == "train" else self._cached("train")
            mean, std = dataset_stats(train["feats"])
            c.norm_mean, c.norm_std = round(mean, 4), round(std, 4)
            say_once(f"note: {self.name()}: normalisation statistics from the training split: mean {c.norm_mean}, "
                     f"std {c.norm_std} (stored in the run config; `mae-audio stats` prints them)")
        if c.norm_std <= 0:
            raise DataError(f"{self.name()}: norm_std must be positive, got {c.norm_std}")
        self.raw = raw["feats"]
        self.frames = real_frames(raw["feats"])  # real frames before the zero padding (roll_mag_aug rolls these)
        self.feats = normalize(raw["feats"], c.norm_mean, c.norm_std).unsqueeze(1).contiguous()  # (N, 1, T, F)
        self.labels = raw["labels"]
        self.names = raw["names"]
        self.classes = raw["classes"]
        self.num_classes = len(self.classes)
        self.multilabel = self.labels.ndim == 2
        self.skipped = raw["skipped"]

    # subclasses
    def name(self) -> str:
        raise NotImplementedError

    def key(self) -> tuple:
        raise NotImplementedError

    def _raw(self, split: str) -> dict:
        raise NotImplementedError

    def _cached(self, split: str) -> dict:
        return cached_split(self, split, self.config.bad_files)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        y = self.labels[i]
        sample = {"x": self.feats[i], "label": y, "index": i, "frames": self.frames[i]}
        if not self.multilabel:  # class probabilities for mixup during fine-tuning
            sample["onehot"] = torch.nn.functional.one_hot(y, self.num_classes).float()
        return sample


# ---- embedded synthetic bird calls ----------------------------------------------------------------------------------------
class BirdCalls(FbankDataset):
    def name(self) -> str:
        return "birdcalls"

    def key(self) -> tuple:
        c = self.config
        return (c.num_species, c.num_train, c.num_test, c.clip_seconds, c.noise, c.multilabel, c.seed)

    def _raw(self, split: str) -> dict:
        c = self.config
        if c.num_species < 2:
            raise DataError(f"birdcalls: num_species must be at least 2, got {c.num_species}")
        n = c.num_train if split == "train" else c.num_test
        seconds = c.clip_seconds or samples_for_frames(c.target_length, c.sample_rate) / c.sample_rate
        clips = [make_clip(i, split, c.num_species, seconds, c.sample_rate, c.seed, c.noise, c.multilabel)
                 for i in range(n)]
        items = [(f"birdcalls/{split}/{i}", (lambda w=w: (torch.from_numpy(w), c.sample_rate)))
                 for i, (w, _) in enumerate(clips)]
        feats, kept, bad = _features_of(items, c, f"birdcalls {split}")
        present = [clips[i][1] for i in kept]
        if c.multilabel:
            labels = torch.zeros(len(kept), c.num_species)
            for j, p in enumerate(present):
                labels[j, p] = 1.0
        else:
            labels = torch.tensor([p[0] for p in present])
        return {"feats": feats, "labels": labels, "names": [items[i][0] for i in kept],
                "classes": [f"species{i}" for i in range(c.num_species)], "skipped": len(bad)}


# ---- user files -------------------------------------------------------------------------------------------------------------
def _is_audio(p: Path) -> bool:
    return p.suffix.lower() in AUDIO_EXTENSIONS


def _split_of(n: int, val_fraction: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) < val_fraction  # True = held out


def _file_items(paths):
    return [(str(p), (lambda p=p: read_audio(p))) for p in paths]


class AudioFolder(FbankDataset):
    """Class sub-folders (optionally under ``train/`` and ``test/``), or a CSV file: ``path,labels[,split]``."""

    def name(self) -> str:
        return str(self.config.path)

    def key(self) -> tuple:
        c = self.config
        return (os.path.abspath(c.path or ""), c.val_fraction, c.multilabel, c.label_sep, c.seed)

    def _entries(self, split: str) -> tuple[list[Path], list[list[str]]]:
        c = self.config
        root = Path(c.path) if c.path else None
        if root is None:
            raise DataError("no audio data given (use --data PATH: a folder of class sub-folders or a CSV)")
        if not root.exists():
            raise DataError(f"{root}: does not exist")
        if root.is_file():
            return self._csv_entries(root, split)
        base, explicit = root, False
        if (root / "train").is_dir() and ((root / "test").is_dir() or (root / "val").is_dir()):
            explicit = True
            base = root / "train" if split == "train" else (root / "test" if (root / "test").is_dir()
                                                              else root / "val")
        classes = sorted(d.name for d in base.iterdir() if d.is_dir())
        paths, labels = [], []
        for cl in classes:
            for p in sorted((base / cl).rglob("*")):
                if p.is_file() and _is_audio(p):
                    paths.append(p)
                    labels.append([cl])
        if not paths:
            raise DataError(f"{base}: no class sub-folders with audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
        if explicit:
            return paths, labels
        held = _split_of(len(paths), c.val_fraction, c.seed)
        sel = [i for i in range(len(paths)) if bool(held[i]) == (split != "train")]
        return [paths[i] for i in sel], [labels[i] for i in sel]

    def _csv_entries(self, csv_path: Path, split: str):
        c = self.config
        try:
            with open(csv_path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{csv_path}: cannot read CSV ({e})") from None
        if not rows:
            raise DataError(f"{csv_path}: CSV has no rows")
        cols = {k.strip().lower(): k for k in rows[0].keys() if k}
        pcol = cols.get("path") or cols.get("file") or cols.get("filename")
        lcol = cols.get("labels") or cols.get("label")
        if pcol is None or lcol is None:
            raise DataError(f"{csv_path}: CSV needs a 'path' and a 'label' (or 'labels') column, "
                            f"found {list(rows[0].keys())}")
        scol = cols.get("split")
        paths, labels, splits = [], [], []
        for r in rows:
            p = Path(r[pcol].strip())
            paths.append(p if p.is_absolute() else csv_path.parent / p)
            labels.append([s.strip() for s in (r[lcol] or "").split(c.label_sep) if s.strip()])
            splits.append((r.get(scol) or "").strip().lower() if scol else "")
        if scol:
            want = {"train"} if split == "train" else {"test", "val", "valid", "validation", "eval"}
            sel = [i for i, s in enumerate(splits) if s in want]
        else:
            held = _split_of(len(paths), c.val_fraction, c.seed)
            sel = [i for i in range(len(paths)) if bool(held[i]) == (split != "train")]
        self._all_labels = labels
        return [paths[i] for i in sel], [labels[i] for i in sel]

    def _raw(self, split: str) -> dict:
        c = self.config
        paths, labels = self._entries(split)
        # the class list comes from both splits so that label ids agree between them
        all_labels = getattr(self, "_all_labels", None)
        if all_labels is None:
            other = self._entries("test" if split == "train" else "train")[1] if self._has_other(split) else []
            all_labels = labels + other
        classes = sorted({lab for labs in all_labels for lab in labs})
        multilabel = c.multilabel or any(len(labs) > 1 for labs in all_labels)
        idx = {cl: i for i, cl in enumerate(classes)}
        feats, kept, bad = _features_of(_file_items(paths), c, f"{c.path} ({split})")
        if multilabel:
            y = torch.zeros(len(kept), len(classes))
            for j, i in enumerate(kept):
                for lab in labels[i]:
                    y[j, idx[lab]] = 1.0
        else:
            missing = [str(paths[i]) for i in kept if len(labels[i]) != 1]
            if missing:
                raise DataError(f"{missing[0]}: needs exactly one label (or set multilabel)")
            y = torch.tensor([idx[labels[i][0]] for i in kept])
        return {"feats": feats, "labels": y, "names": [str(paths[i]) for i in kept], "classes": classes,
                "skipped": len(bad)}

    def _has_other(self, split: str) -> bool:
        try:
            self._entries("test" if split == "train" else "train")
            return True
        except DataError:
            return False


class FSDD(FbankDataset):
    """Free Spoken Digit Dataset: ``{digit}_{speaker}_{take}.wav``; the official test split is takes 0-4."""

    def name(self) -> str:
        return f"fsdd {self.config.path}"

    def key(self) -> tuple:
        return (os.path.abspath(self.config.path or ""),)

    def _raw(self, split: str) -> dict:
        c = self.config
        if not c.path:
            raise DataError("fsdd: no folder given (use --data PATH)")
        root = Path(c.path)
        rec = root / "recordings" if (root / "recordings").is_dir() else root
        if not rec.is_dir():
            raise DataError(f"{root}: FSDD folder does not exist")
        paths, labels = [], []
        for p in sorted(rec.glob("*.wav")):
            parts = p.stem.split("_")
            if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
                continue
            if (int(parts[2]) < 5) == (split == "test"):
                paths.append(p)
                labels.append(int(parts[0]))
        if not paths:
            raise DataError(f"{rec}: no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav) found")
        feats, kept, bad = _features_of(_file_items(paths), c, f"fsdd ({split})")
        return {"feats": feats, "labels": torch.tensor([labels[i] for i in kept]),
                "names": [str(paths[i]) for i in kept], "classes": [str(d) for d in range(10)], "skipped": len(bad)}
