"""A folder of multimodal MRI cases: one sub-folder per case, one NIfTI per modality.

File names are matched by configurable suffix patterns, one entry per modality, ``name=suffix|suffix|...``; the
defaults understand BraTS 2021 (``_t1.nii.gz``), BraTS 2023 (``-t1n.nii.gz``) and BrainLes (``_t1_bet.nii.gz``)
names. Every case is checked when the dataset is built (before anything is written): a missing modality file,
a corrupt or non-3-D NIfTI, modalities of different shapes, NaN / inf voxels, an all-zero volume, an unknown
modality name and a case with no modality at all are each a one-line :class:`~mae_core.errors.DataError` naming the case and the file;
cases smaller than the crop after resampling are counted in one warning line (they are zero-padded).

Pipeline (MONAI dictionary transforms): ``LoadImaged`` -> ``EnsureChannelFirstd`` -> ``Orientationd("RAS")`` ->
``Spacingd`` -> ``NormalizeIntensityd(nonzero=True, channel_wise=True)`` (cached once per case), then per sample
``SpatialPadd`` + ``RandSpatialCropd`` (train, the same crop for every modality; ``train_crop="center"``: the
BM-MAE reference's ``CenterSpatialCropd``) or ``CenterSpatialCropd`` (test); training crops may then be flipped
(``RandFlipd`` per axis of ``flip_axes``) and get the reference's ``RandScaleIntensityd`` / ``RandShiftIntensityd``
(``intensity_scale`` / ``intensity_shift``, one draw per crop shared by its modalities, as the reference's keys).
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError

DEFAULT_PATTERNS = [
    "t1=_t1.nii.gz|-t1n.nii.gz|_t1n.nii.gz|_t1_bet.nii.gz|_t1.nii",
    "t1ce=_t1ce.nii.gz|-t1c.nii.gz|_t1c.nii.gz|_t1c_bet.nii.gz|_t1ce.nii",
    "t2=_t2.nii.gz|-t2w.nii.gz|_t2w.nii.gz|_t2_bet.nii.gz|_t2.nii",
    "flair=_flair.nii.gz|-t2f.nii.gz|_t2f.nii.gz|_fla_bet.nii.gz|_flair_bet.nii.gz|_flair.nii",
]


@dataclass
class BrainFolderConfig:
    path: str | None = field(None, "folder with one sub-folder per case")
    modalities: list[str] = field(["t1", "t1ce", "t2", "flair"], "modalities to load (names from --patterns)")
    patterns: list[str] = field(list(DEFAULT_PATTERNS), "file-name suffixes per modality, 'name=suf1|suf2|...'")
    spacing: list[float] = field([2.0, 2.0, 2.0], "voxel spacing in mm after resampling (Spacingd)")
    image_size: int = field(32, "side of the cubic crops fed to the model", ge=1)
    crops_per_case: int = field(16, "random crops drawn from each training case per epoch", ge=1)
    cases: list[str] = field([], "use only these case folders (default: all)")
    test_cases: list[str] = field([], "case folders held out as the test split (default: the last 20 %)")
    labels_csv: str | None = field(None, "optional CSV with columns case,label (default label 0)")
    seed: int = field(0, "seed of the random crops")
    foreground_crops: float = field(0.0, "fraction of training crops centred on a brain (non-zero) voxel, the rest "
                                         "anywhere (RandCropByPosNegLabeld; 0 = RandSpatialCropd, uniform)", ge=0, le=1)
    flip_prob: float = field(0.0, "probability of a flip of a training crop along each of --flip-axes (RandFlipd, "
                                  "the same flip for every modality)", ge=0, le=1)
    flip_axes: list[int] = field([0], "axes of the flips (0 = RAS x, left-right; BM-MAE: 0 1 2, each drawn apart)")
    train_crop: str = field("random", "training crop: random (RandSpatialCropd / --foreground-crops) or center "
                                      "(CenterSpatialCropd, the BM-MAE reference)", choices=["random", "center"])
    intensity_scale: float = field(0.0, "RandScaleIntensityd factors of training crops: v x (1 + U(-f, f)) per "
                                        "crop, shared by its modalities (BM-MAE: 0.1)", ge=0)
    intensity_shift: float = field(0.0, "RandShiftIntensityd offsets of training crops: v + U(-o, o) per crop, "
                                        "shared by its modalities (BM-MAE: 0.1)", ge=0)


def parse_patterns(patterns: list[str]) -> dict[str, list[str]]:
    out = {}
    for p in patterns:
        if "=" not in p:
            raise DataError(f"modality pattern {p!r} must look like 'name=suffix|suffix'")
        name, sufs = p.split("=", 1)
        out[name.strip()] = [s.strip() for s in sufs.split("|") if s.strip()]
    return out


def find_modality_files(case_dir: Path, modalities: list[str], patterns: dict[str, list[str]],
                        allow_missing: bool = False) -> dict[str, Path]:
    """{modality: file} for one case folder; errors name the case and the missing / unknown modality."""
    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        raise DataError(f"case {case_dir}: not a folder")
    files = sorted(p for p in case_dir.iterdir() if p.is_file())
    found = {}
    for m in modalities:
        if m not in patterns:
            raise DataError(f"case {case_dir.name}: unknown modality {m!r} (patterns know: {', '.join(patterns)})")
        hits = [f for f in files if any(f.name.endswith(s) for s in patterns[m])]
        if len(hits) > 1:
            raise DataError(f"case {case_dir.name}: several files match modality {m!r}: "
                            f"{', '.join(h.name for h in hits)}")
        if hits:
            found[m] = hits[0]
    if not found:
        raise DataError(f"case {case_dir.name}: no modality file found in {case_dir} (expected names ending in "
                        f"{', '.join(patterns[modalities[0]])} ...)")
    missing = [m for m in modalities if m not in found]
    if missing and not allow_missing:
        raise DataError(f"case {case_dir.name}: missing modality file {missing[0]!r} in {case_dir} (expected a name "
                        f"ending in {' or '.join(patterns[missing[0]])})")
    return found


def check_nifti(case: str, path: Path) -> tuple[int, ...]:
    """Header and voxel checks of one file; returns the 3-D shape."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except Exception as e:  # nibabel raises many kinds
        raise DataError(f"case {case}: file {path.name} is not a readable NIfTI ({str(e).splitlines()[0][:80]})") \
            from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"case {case}: file {path.name} is not a 3-D volume (shape {shape})")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise DataError(f"case {case}: file {path.name} is corrupt ({str(e).splitlines()[0][:80]})") from None
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise DataError(f"case {case}: file {path.name} contains NaN or inf voxels")
    if not np.any(data):
        raise DataError(f"case {case}: file {path.name} is empty (every voxel is 0): an export or conversion error? "
                        "Replace the file, or leave the case out with --cases")
    return shape


def check_case(case_dir: Path, modalities: list[str], patterns: dict[str, list[str]],
               allow_missing: bool = False) -> dict[str, Path]:
    files = find_modality_files(case_dir, modalities, patterns, allow_missing=allow_missing)
    shapes = {m: check_nifti(Path(case_dir).name, f) for m, f in files.items()}
    if len(set(shapes.values())) > 1:
        ref = next(iter(shapes))
        bad = next(m for m in shapes if shapes[m] != shapes[ref])
        raise DataError(f"case {Path(case_dir).name}: modalities have different shapes: {files[ref].name} "
                        f"{shapes[ref]} vs {files[bad].name} {shapes[bad]}")
    return files


def preprocess_transform(keys: list[str], spacing):
    """The deterministic MONAI part: load, channel first, RAS, spacing, non-zero channel-wise z-score."""
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, NormalizeIntensityd, Orientationd,
                                  Spacingd)

    return Compose([
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        Spacingd(keys=keys, pixdim=tuple(spacing), mode="bilinear"),
        NormalizeIntensityd(keys=keys, nonzero=True, channel_wise=True),
    ])


def geometry_transform(keys: list[str], spacing):
    """Load, channel first, RAS and spacing only (invertible; used by ``impute`` to go back to the input grid)."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    return Compose([
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS", allow_missing_keys=True),
        Spacingd(keys=keys, pixdim=tuple(spacing), mode="bilinear", allow_missing_keys=True),
    ])


def list_cases(root: Path, only: list[str] | None = None) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder with one sub-folder per case")
    cases = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if only:
        names = {p.name for p in cases}
        for c in only:
            if c not in names:
                raise DataError(f"{root}: case {c!r} not found")
        cases = [p for p in cases if p.name in set(only)]
    if not cases:
        raise DataError(f"{root}: no case sub-folders")
    return cases


class BrainFolder(Dataset):
    """Samples ``{modality: (1, S, S, S), "label": int, "case": name}``."""

    def __init__(self, config: BrainFolderConfig, split: str = "train"):
        self.config = c = config
        if not c.path:
            raise DataError("brain-folder: give --data PATH (a folder of case sub-folders)")
        patterns = parse_patterns(c.patterns)
        for m in c.modalities:
            if m not in patterns:
                raise DataError(f"brain-folder: unknown modality {m!r} (patterns know: {', '.join(patterns)})")
        cases = list_cases(Path(c.path), c.cases or None)
        if c.test_cases:
            test = [p for p in cases if p.name in set(c.test_cases)]
            train = [p for p in cases if p.name not in set(c.test_cases)]
        elif len(cases) == 1:
            train = test = cases
        else:
            n_test = max(1, int(round(0.2 * len(cases))))
            train, test = cases[:-n_test], cases[-n_test:]
        self.cases = train if split == "train" else test
        if not self.cases:
            raise DataError(f"{c.path}: the {split} split has no cases")
        self.split = split
        self.modalities = list(c.modalities)
        # every case of both splits is checked, so a broken held-out case fails before anything is written
        checked = {p: check_case(p, self.modalities, patterns) for p in cases}
        self.files = [checked[p] for p in self.cases]
        labels = {}
        if c.labels_csv:
            try:
                with open(c.labels_csv) as fh:
                    for row in csv.DictReader(fh):
                        labels[row["case"]] = int(row["label"])
            except (OSError, KeyError, ValueError) as e:
                raise DataError(f"{c.labels_csv}: cannot read case,label rows ({e})") from None
        self.case_labels = [labels.get(p.name, 0) for p in self.cases]
        pre = preprocess_transform(self.modalities, c.spacing)
        self.volumes = []
        for p, files in zip(self.cases, self.files):
            d = pre({m: str(f) for m, f in files.items()})
            vols = {m: torch.as_tensor(d[m]).float().contiguous() for m in self.modalities}
            for m, v in vols.items():
                if not torch.isfinite(v).all():
                    raise DataError(f"case {p.name}: file {files[m].name} gives NaN / inf after preprocessing")
            self.volumes.append(vols)
        small = [(p.name, tuple(next(iter(v.values())).shape[1:])) for p, v in zip(self.cases, self.volumes)
                 if min(next(iter(v.values())).shape[1:]) < c.image_size]
        if small:  # zero-padded up to the crop: say so, instead of training on padding silently
            print(f"warning: brain-folder: {len(small)} of {len(self.cases)} {split} cases are smaller than the "
                  f"{c.image_size}^3 crop after resampling to {list(c.spacing)} mm and are zero-padded (first: case "
                  f"{small[0][0]}, {'x'.join(map(str, small[0][1]))} voxels)", file=sys.stderr)
        if not 0.0 <= c.foreground_crops <= 1.0:
            raise DataError(f"brain-folder: foreground_crops must be in [0, 1], got {c.foreground_crops}")
        if any(int(a) not in (0, 1, 2) for a in c.flip_axes):
            raise DataError(f"brain-folder: flip_axes must be among 0 1 2, got {list(c.flip_axes)}")
        self.fg_indices = []
        if split == "train" and c.foreground_crops > 0:
            from monai.transforms import SpatialPad
            from monai.transforms.utils import map_binary_to_indices

            for vols in self.volumes:
                brain = sum((v != 0).float() for v in vols.values()) > 0
                brain = SpatialPad((c.image_size,) * 3)(brain.float())
                self.fg_indices.append(map_binary_to_indices(brain))
        self.repeats = c.crops_per_case if split == "train" else 1
        self.labels = torch.tensor([lab for lab in self.case_labels for _ in range(self.repeats)])
        self.num_classes = max(2, int(self.labels.max()) + 1)
        self._crop = self._make_crop()

    def _make_crop(self):
        from monai.transforms import (CenterSpatialCropd, Compose, RandCropByPosNegLabeld, RandFlipd,
                                      RandScaleIntensityd, RandShiftIntensityd, RandSpatialCropd, SpatialPadd)

        keys, s = self.modalities, self.config.image_size
        fg = self.config.foreground_crops
        if self.split != "train" or self.config.train_crop == "center":
            crop = CenterSpatialCropd(keys=keys, roi_size=(s,) * 3)
        elif fg > 0:  # centred on a brain voxel with probability fg (indices precomputed per case)
            crop = RandCropByPosNegLabeld(keys=keys, label_key=keys[0], spatial_size=(s,) * 3, pos=fg, neg=1 - fg,
                                          num_samples=1, fg_indices_key="_fg_idx", bg_indices_key="_bg_idx")
        else:
            crop = RandSpatialCropd(keys=keys, roi_size=(s,) * 3, random_size=False)
        steps = [SpatialPadd(keys=keys, spatial_size=(s,) * 3), crop]
        c = self.config
        if self.split == "train":
            if c.flip_prob > 0:
                steps += [RandFlipd(keys=keys, prob=c.flip_prob, spatial_axis=int(a)) for a in c.flip_axes]
            if c.intensity_scale > 0:
                steps.append(RandScaleIntensityd(keys=keys, factors=c.intensity_scale, prob=1.0))
            if c.intensity_shift > 0:
                steps.append(RandShiftIntensityd(keys=keys, offsets=c.intensity_shift, prob=1.0))
        t = Compose(steps)
        t.set_random_state(seed=self.config.seed)
        return t

    def __len__(self):
        return len(self.cases) * self.repeats

    def __getitem__(self, i):
        ci = i // self.repeats
        d = {m: self.volumes[ci][m] for m in self.modalities}
        if self.fg_indices:
            d["_fg_idx"], d["_bg_idx"] = self.fg_indices[ci]
        d = self._crop(d)
        if isinstance(d, list):  # RandCropByPosNegLabeld returns num_samples crops
            d = d[0]
        out = {m: torch.as_tensor(d[m]).float().contiguous() for m in self.modalities}
        out["label"] = int(self.case_labels[ci])
        return out
