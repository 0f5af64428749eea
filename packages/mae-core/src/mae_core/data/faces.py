"""Faces with facial action units: an embedded procedural generator, and face crops read from a folder + CSV.

The generator draws cartoon faces of fixed identities. Each subject has its own shape traits (face width and height,
skin and hair colour, hairline, eye spacing, height and size, brow gap and thickness, nose length, mouth height and
width); each image adds a small shift and scale, a background colour, a lighting ramp and pixel noise. Six action
units are local deformations of intensity 0..1 (occurrence label 1 when active):

    AU2  brow raise           both brows move up
    AU4  brow lowerer         brows move down, inner ends lowest
    AU9  nose wrinkler        two dark creases across the nose bridge
    AU12 lip corner puller    mouth corners curve up
    AU26 jaw drop             the mouth opens below the lip line
    AU43 eye closure          the eyes narrow to a slit

In the training split every subject has its own occurrence rate for each AU (0.45 -/+ ``au_identity``, drawn per
subject and AU), so identity predicts the AUs there: the shortcut identity-adversarial training is meant to remove.
The test split holds other, unseen subjects whose AUs all occur at 0.45, independent of identity.

:class:`FaceFolder` reads your crops: a folder with a CSV (``labels.csv``) with an image file column, a subject column
and one 0/1 column per AU (columns named ``AU...``); a ``split`` column (train / test) or else a deterministic
``test_fraction`` of the subjects is held out, so test subjects are unseen.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import field
from ..errors import DataError

AUS = ["AU2", "AU4", "AU9", "AU12", "AU26", "AU43"]
BASE_RATE = 0.45
# name: (low, high) of the subject's uniform draw, in units of half the image side
TRAITS = {"face_w": (0.55, 0.72), "face_h": (0.72, 0.88), "tone": (0.35, 0.95), "hairline": (-0.72, -0.5),
          "eye_dx": (0.2, 0.3), "eye_y": (-0.22, -0.08), "eye_r": (0.05, 0.08), "brow_gap": (0.12, 0.17),
          "brow_th": (0.04, 0.07), "nose_len": (0.18, 0.28), "mouth_y": (0.32, 0.45), "mouth_w": (0.16, 0.28)}


@dataclass
class FacesConfig:
    image_size: int = field(32, "image side in pixels", ge=8)
    train_subjects: int = field(24, "identities in the training split", ge=1)
    test_subjects: int = field(8, "other, unseen identities in the test split", ge=1)
    per_subject_train: int = field(120, "images per training subject", ge=1)
    per_subject_test: int = field(64, "images per test subject", ge=1)
    au_identity: float = field(0.35, "training subjects' AU rates are 0.45 -/+ this (0: AUs independent of "
                                     "identity)", ge=0, le=0.45)
    seed: int = field(0, "generator seed (identities, then each split's own stream)")


def subject_traits(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Fixed shape traits of ``n`` subjects (each (n,), plus skin and hair colours (n, 3)), deterministic."""
    rng = np.random.default_rng([seed, 7])
    t = {k: torch.from_numpy(rng.uniform(lo, hi, n)).float() for k, (lo, hi) in TRAITS.items()}
    t["skin"] = (t["tone"][:, None] * torch.tensor([1.0, 0.8, 0.65])
                 + torch.from_numpy(rng.uniform(-0.05, 0.05, (n, 3))).float()).clamp(0, 1)
    t["hair"] = torch.from_numpy(rng.uniform(0.02, 0.6, (n, 3)) ** 1.5).float()
    return t


def _step(d: torch.Tensor, width: float) -> torch.Tensor:
    return torch.sigmoid(d / width)


def render_faces(traits: dict[str, torch.Tensor], aus: torch.Tensor, size: int = 32, shift: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None, background: torch.Tensor | None = None,
                 light: torch.Tensor | None = None, noise: float = 0.0, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """(N, 3, size, size) images in [0, 1] of faces with per-sample ``traits`` (rows of :func:`subject_traits`) and
    AU intensities ``aus`` (N, 6) in [0, 1] (order of :data:`AUS`). Without the nuisance arguments the face is
    centred, unscaled, on grey, evenly lit and noise-free."""
    n = aus.shape[0]
    shift = torch.zeros(n, 2) if shift is None else shift
    scale = torch.ones(n) if scale is None else scale
    c = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    X = (xx[None] - shift[:, 0, None, None]) / scale[:, None, None]
    Y = (yy[None] - shift[:, 1, None, None]) / scale[:, None, None]
    t = {k: v[:, None, None] if v.ndim == 1 else v[:, :, None, None] for k, v in traits.items()}
    a = [aus[:, j, None, None] for j in range(len(AUS))]
    a2, a4, a9, a12, a26, a43 = a
    img = (torch.full((n, 3, size, size), 0.5) if background is None
           else background[:, :, None, None].expand(n, 3, size, size).clone())

    def paint(mask, colour):
        nonlocal img
        img = img + mask[:, None] * (colour - img)

    edge = 1.5 / size
    face = _step(1 - (X / t["face_w"]) ** 2 - (Y / t["face_h"]) ** 2, 2.5 * edge)
    paint(face, t["skin"])
    hair = _step(1 - (X / (t["face_w"] * 1.08)) ** 2 - (Y / (t["face_h"] * 1.06)) ** 2, 2.5 * edge)
    paint(hair * _step(t["hairline"] - Y, edge), t["hair"])
    for s in (-1.0, 1.0):
        # brows: u runs from the inner end (-1) to the outer end (+1)
        u = s * (X - s * t["eye_dx"]) / 0.13
        yb = t["eye_y"] - t["brow_gap"] - 0.14 * a2 + 0.05 * a4 - 0.08 * a4 * u
        paint(_step(t["brow_th"] / 2 - (Y - yb).abs(), edge) * _step(1 - u.abs(), 0.1), 0.5 * t["hair"])
        ry = (t["eye_r"] * (1 - 0.85 * a43)).clamp_min(0.006)
        eye = 1 - ((X - s * t["eye_dx"]) / (1.4 * t["eye_r"])) ** 2 - ((Y - t["eye_y"]) / ry) ** 2
        paint(_step(eye, 0.25), torch.tensor([0.1, 0.08, 0.08])[None, :, None, None])
    nose = _step(0.035 - X.abs(), edge) * _step(Y - t["eye_y"] - 0.05, edge) * _step(t["eye_y"] + t["nose_len"] - Y, edge)
    paint(nose, 0.75 * t["skin"])
    for dy in (0.06, 0.14):
        crease = _step(0.11 - X.abs(), edge) * _step(0.022 - (Y - t["eye_y"] - dy).abs(), 0.5 * edge)
        paint(a9 * crease, 0.4 * t["skin"])
    xm = X / t["mouth_w"]
    inside = _step(1 - xm.abs(), 0.15)
    lip = t["mouth_y"] - 0.2 * a12 * xm ** 2
    paint(_step(0.045 - (Y - lip).abs(), edge) * inside, torch.tensor([0.6, 0.2, 0.2])[None, :, None, None])
    opening = _step(Y - lip - 0.02, 0.5 * edge) * _step(lip + 0.2 * a26 * (1 - xm ** 2) - Y, 0.5 * edge) * inside
    paint(opening, torch.tensor([0.15, 0.02, 0.05])[None, :, None, None])
    if light is not None:  # a ramp of +-15 % brightness in direction ``light`` (radians)
        ramp = torch.cos(light)[:, None, None] * xx[None] + torch.sin(light)[:, None, None] * yy[None]
        img = img * (1 + 0.15 * ramp[:, None])
    if noise:
        img = img + noise * torch.randn(img.shape, generator=generator)
    return img.clamp(0, 1)


def au_rates(cfg: FacesConfig) -> torch.Tensor:
    """(train_subjects + test_subjects, 6) occurrence rate of each AU for each subject (train subjects first)."""
    rng = np.random.default_rng([cfg.seed, 11])
    sign = rng.choice([-1.0, 1.0], (cfg.train_subjects, len(AUS)))
    train = BASE_RATE + cfg.au_identity * sign
    test = np.full((cfg.test_subjects, len(AUS)), BASE_RATE)
    return torch.from_numpy(np.concatenate([train, test])).float()


def generate_faces(cfg: FacesConfig, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (N, 3, S, S) in [0, 1], AU occurrence (N, 6) float, subject (N,) long) of one split."""
    test = split != "train"
    per = cfg.per_subject_test if test else cfg.per_subject_train
    first, count = (cfg.train_subjects, cfg.test_subjects) if test else (0, cfg.train_subjects)
    subjects = torch.arange(first, first + count).repeat_interleave(per)
    n = len(subjects)
    rng = np.random.default_rng([cfg.seed, 1 + int(test)])
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    rates = au_rates(cfg)[subjects]
    occ = (torch.from_numpy(rng.random((n, len(AUS)))).float() < rates).float()
    intensity = torch.where(occ > 0, torch.from_numpy(rng.uniform(0.5, 1.0, occ.shape)).float(),
                            torch.from_numpy(rng.uniform(0.0, 0.1, occ.shape)).float())
    traits = {k: v[subjects] for k, v in subject_traits(cfg.train_subjects + cfg.test_subjects, cfg.seed).items()}
    images = render_faces(traits, intensity, cfg.image_size,
                          shift=torch.from_numpy(rng.uniform(-0.06, 0.06, (n, 2))).float(),
                          scale=torch.from_numpy(rng.uniform(0.93, 1.07, n)).float(),
                          background=torch.from_numpy(rng.uniform(0.2, 0.8, (n, 3))).float(),
                          light=torch.from_numpy(rng.uniform(0, 2 * np.pi, n)).float(), noise=0.02, generator=g)
    return images, occ, subjects


class _FaceSamples(Dataset):
    """Samples ``{"image": (3, S, S) in [-1, 1], "label": (num AUs,) 0/1 float, "subject": int, "index": i}``;
    ``columns["subject"]`` holds the subject of every sample."""

    multilabel = True

    def _set(self, images: torch.Tensor, labels: torch.Tensor, subjects: torch.Tensor, classes: list[str]):
        self.images = (images - 0.5) / 0.5
        self.labels, self.classes, self.num_classes = labels, classes, len(classes)
        self.columns = {"subject": subjects}
        self.in_chans = images.shape[1]
        self.mean = self.std = (0.5,) * self.in_chans

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "subject": int(self.columns["subject"][i]),
                "index": i}


class SyntheticFaces(_FaceSamples):
    def __init__(self, config: FacesConfig | None = None, split: str = "train"):
        self.config = config = config or FacesConfig()
        self._set(*generate_faces(config, split), list(AUS))


@dataclass
class FaceFolderConfig:
    path: str | None = field(None, "folder with face crops and a CSV of AU and subject columns")
    csv: str = field("labels.csv", "the CSV file inside the folder")
    image_column: str = field("image", "CSV column with the image file (relative to the folder)")
    subject_column: str = field("subject", "CSV column with the subject (identity)")
    au_prefix: str = field("AU", "AU columns are those whose name starts with this; a value > 0 is an occurrence")
    test_fraction: float = field(0.25, "fraction of the subjects held out for the test split when the CSV has no "
                                       "'split' column", gt=0, lt=1)
    image_size: int = field(32, "side the crops are resized to", ge=8)
    in_chans: int = field(3, "1 for grayscale, 3 for RGB", choices=[1, 3])
    seed: int = field(0, "seed of the subject split")


class FaceFolder(_FaceSamples):
    def __init__(self, config: FaceFolderConfig, split: str = "train"):
        from PIL import Image

        from .folder import check_dir, to_8bit

        self.config = c = config
        root = check_dir(c.path, "face folder")
        table = os.path.join(root, c.csv)
        if not os.path.isfile(table):
            raise DataError(f"{table}: CSV file not found (--csv names it inside the folder)")
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        cols = list(rows[0]) if rows else []
        aus = [k for k in cols if k.startswith(c.au_prefix)]
        for need in (c.image_column, c.subject_column):
            if need not in cols:
                raise DataError(f"{table}: no column {need!r} (columns: {', '.join(cols) or 'none'})")
        if not aus:
            raise DataError(f"{table}: no AU columns (names starting with {c.au_prefix!r})")
        names = sorted({r[c.subject_column] for r in rows})
        if "split" in cols:
            test_names = sorted({r[c.subject_column] for r in rows if r["split"].strip().lower() in ("test", "val")})
        else:
            order = np.random.default_rng(c.seed).permutation(len(names))
            k = max(1, round(c.test_fraction * len(names))) if len(names) > 1 else 0
            test_names = sorted(names[i] for i in order[len(names) - k:])
        train_names = [s for s in names if s not in set(test_names)]
        ids = {s: i for i, s in enumerate(train_names + test_names)}
        want = set(test_names) if split != "train" else set(train_names)
        rows = [r for r in rows if r[c.subject_column] in want]
        if not rows:
            raise DataError(f"{table}: the {split} split has no rows")
        images, labels = [], []
        for r in rows:
            p = os.path.join(root, r[c.image_column])
            try:
                with Image.open(p) as im:
                    im = to_8bit(im).convert("RGB" if c.in_chans == 3 else "L").resize((c.image_size,) * 2)
                    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
                labels.append([float(r[k]) > 0 for k in aus])
            except (OSError, ValueError) as e:
                raise DataError(f"{p}: cannot read ({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None
            images.append(x.permute(2, 0, 1) if x.ndim == 3 else x[None])
        self._set(torch.stack(images), torch.tensor(labels).float(),
                  torch.tensor([ids[r[c.subject_column]] for r in rows]), aus)
        self.subjects = train_names + test_names
