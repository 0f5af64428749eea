"""Image + report pairs for the multimodal text methods (M3AE).

* ``image-reports`` (embedded): synthetic axial chest slices, one channel. A body ellipse, two dark lung fields, a
  bright spine and textured noise; a finding (none, nodule, cyst, mass) drawn ``count`` times (1-3) in one lung
  (``side``), ``size`` small or large. The report is written from those parameters only (several phrasings), so the
  generator also answers closed questions about every image (:func:`closed_questions`, the VQA probe).
  ``side`` follows the radiological convention: the patient's right lung is on the image's left.
* a CSV of ``image,text`` rows (``--data reports.csv``, or ``--dataset image-reports --data FOLDER`` with one CSV);
  image paths are relative to the CSV's folder. Bad rows are one-line errors naming the file and row.

Samples are ``{"image": (C, S, S) in [-1, 1], "text": str, "label": int, "key": int}``: ``label`` the finding
(0 for a CSV), ``key`` the content of the report (two samples with the same key have reports that say the same).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError

FINDINGS = ("none", "nodule", "cyst", "mass")
SIZES = ("small", "large")
SIDES = ("right", "left")  # right lung on the image's left
COUNTS = ("one", "two", "three")
ANSWERS = ("yes", "no", "right", "left", "one", "two", "three")


@dataclass
class ImageReportConfig:
    path: str | None = field(None, "a CSV with columns image,text (or a folder holding one); none = the embedded "
                                   "synthetic chest slices")
    image_size: int = field(32, "side of the square image fed to the model", ge=8)
    in_chans: int = field(1, "1 for grey, 3 for RGB", ge=1, le=3)
    num_train: int = field(2048, "embedded set: training pairs", ge=1)
    num_test: int = field(512, "embedded set: held-out pairs", ge=1)
    test_fraction: float = field(0.1, "CSV: fraction of the rows held out as the test split", ge=0, lt=1)
    seed: int = field(0, "seed of the embedded set and of the CSV split")


def draw_parameters(n: int, g: torch.Generator) -> dict:
    """Finding (0 = none, a quarter of the slices), size, side and count (1-3) of ``n`` slices."""
    finding = torch.randint(1, 4, (n,), generator=g)
    finding[torch.rand(n, generator=g) < 0.25] = 0
    return {"finding": finding, "size": torch.randint(0, 2, (n,), generator=g),
            "side": torch.randint(0, 2, (n,), generator=g), "count": torch.randint(1, 4, (n,), generator=g)}


def render_slices(p: dict, size: int, g: torch.Generator) -> torch.Tensor:
    """(n, size, size) slices in [0, 1] showing the parameters ``p``."""
    n = len(p["finding"])
    c = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    yy, xx = yy[None], xx[None]
    jit = lambda s: 1 + s * (2 * torch.rand(n, 1, 1, generator=g) - 1)  # noqa: E731
    body = ((xx / (0.92 * jit(0.05))) ** 2 + (yy / (0.72 * jit(0.08))) ** 2) <= 1
    img = torch.where(body, 0.55, 0.04) + torch.zeros(n, size, size)
    lung_rx, lung_ry, lung_cx = 0.3 * jit(0.08), 0.45 * jit(0.08), 0.43
    lungs = []
    for sx in (-1.0, 1.0):  # image left (patient's right), image right (patient's left)
        lung = ((xx - sx * lung_cx) / lung_rx) ** 2 + ((yy + 0.05) / lung_ry) ** 2 <= 1
        lungs.append(lung)
        img = torch.where(lung, 0.16, img)
    spine = (xx ** 2 + (yy - 0.52) ** 2) <= 0.11 ** 2
    img = torch.where(spine, 0.95, img)
    for i in range(n):
        f, k = int(p["finding"][i]), int(p["count"][i])
        if f == 0:
            continue
        sx = -1.0 if int(p["side"][i]) == 0 else 1.0
        r = (0.10 if int(p["size"][i]) == 0 else 0.18) * (1.3 if f == 3 else 1.0)
        ang = torch.rand(1, generator=g) * 2 * math.pi
        for j in range(k):  # spread the lesions over the lung, the first at a random angle
            a = ang + 2 * math.pi * j / k
            rad = 0.0 if k == 1 else 0.55
            cx = sx * lung_cx + rad * float(lung_rx[i]) * torch.cos(a) + 0.05 * torch.randn(1, generator=g)
            cy = -0.05 + rad * float(lung_ry[i]) * torch.sin(a) + 0.05 * torch.randn(1, generator=g)
            d = torch.sqrt((xx[0] - cx) ** 2 + (yy[0] - cy) ** 2)
            if f == 3:  # mass: lobulated outline
                lobes = 1 + 0.25 * torch.sin(5 * torch.atan2(yy[0] - cy, xx[0] - cx) + ang)
                d = d / lobes
            edge = torch.sigmoid((r - d) * size * 0.8)
            if f == 2:  # cyst: dark centre, bright rim
                rim = torch.sigmoid((d - 0.55 * r) * size * 0.8)
                img[i] = img[i] * (1 - edge) + edge * (0.02 + 0.78 * rim)
            else:
                img[i] = img[i] * (1 - edge) + edge * 0.85
    smooth = F.interpolate(torch.rand(n, 1, max(2, size // 6), max(2, size // 6), generator=g), size=(size, size),
                           mode="bilinear", align_corners=False)[:, 0]
    img = img + 0.06 * (smooth - 0.5) + 0.03 * torch.randn(n, size, size, generator=g)
    return img.clamp(0, 1)


_NORMAL = ("the lungs are clear . no nodule , cyst or mass .", "no focal lesion in either lung .",
           "normal chest slice . both lungs are clear .")
_ABNORMAL = ("there {be} {count} {size} {finding} in the {side} lung .",
             "{side} lung : {count} {size} {finding} . the other lung is clear .",
             "axial slice shows {count} {size} {finding} in the {side} lung .")


def write_report(finding: int, size: int, side: int, count: int, phrasing: int) -> str:
    """The report of one slice, from its parameters only (``phrasing`` picks the template)."""
    if finding == 0:
        return _NORMAL[phrasing % len(_NORMAL)]
    noun = FINDINGS[finding] + ("es" if finding == 3 and count > 1 else "s" if count > 1 else "")
    return _ABNORMAL[phrasing % len(_ABNORMAL)].format(be="is" if count == 1 else "are", count=COUNTS[count - 1],
                                                       size=SIZES[size], finding=noun, side=SIDES[side])


def content_key(finding: int, size: int, side: int, count: int) -> int:
    """One id per distinct report content (every normal slice says the same)."""
    return 0 if finding == 0 else 1 + ((finding - 1) * 2 + size) * 6 + side * 3 + (count - 1)


def closed_questions(finding: int, size: int, side: int, count: int, g: torch.Generator) -> list[tuple[str, str]]:
    """Closed questions about one slice with their answers (an index into :data:`ANSWERS`), from the generator."""
    asked = FINDINGS[int(torch.randint(1, 4, (1,), generator=g))]
    qs = [(f"is there a {asked} ?", "yes" if FINDINGS[finding] == asked else "no"),
          ("is this slice normal ?", "yes" if finding == 0 else "no")]
    if finding:
        qs += [("which lung has the lesion ?", SIDES[side]), ("how many lesions are there ?", COUNTS[count - 1]),
               ("is the lesion large ?", "yes" if size else "no")]
    return qs


class ImageReports(Dataset):
    mean, std = (0.5,), (0.5,)

    def __init__(self, config: ImageReportConfig, split: str = "train"):
        self.config = c = config
        self.in_chans = c.in_chans
        self.truncated = 0
        if c.path:
            self._read_csv(c.path, split)
        else:
            n = c.num_train if split == "train" else c.num_test
            g = torch.Generator().manual_seed(c.seed * 2 + (split != "train"))
            self.params = draw_parameters(n, g)
            imgs = render_slices(self.params, c.image_size, g)[:, None]
            self.images = (imgs.expand(-1, c.in_chans, -1, -1) - 0.5) / 0.5
            phr = torch.randint(0, 3, (n,), generator=g).tolist()
            rows = list(zip(*(self.params[k].tolist() for k in ("finding", "size", "side", "count"))))
            self.texts = [write_report(*r, ph) for r, ph in zip(rows, phr)]
            self.labels = self.params["finding"].clone()
            self.keys = torch.tensor([content_key(*r) for r in rows])
        self.columns = {"key": self.keys}

    def _read_csv(self, path: str, split: str) -> None:
        if os.path.isdir(path):
            found = sorted(f for f in os.listdir(path) if f.lower().endswith(".csv"))
            if len(found) != 1:
                raise DataError(f"{path}: expected one .csv of image,text rows in the folder, found {len(found)}")
            path = os.path.join(path, found[0])
        if not os.path.isfile(path):
            raise DataError(f"{path}: image-report CSV not found")
        root = os.path.dirname(os.path.abspath(path))
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{path}: not a readable UTF-8 CSV ({e})") from None
        if not rows or not {"image", "text"} <= set(rows[0]):
            raise DataError(f"{path}: needs a header with the columns image and text and at least one row")
        pairs = []
        for i, r in enumerate(rows, start=2):
            img, text = (r.get("image") or "").strip(), (r.get("text") or "").strip()
            if not img or not text:
                raise DataError(f"{path}:{i}: empty {'image' if not img else 'text'} field")
            full = img if os.path.isabs(img) else os.path.join(root, img)
            if not os.path.isfile(full):
                raise DataError(f"{path}:{i}: image file {img} not found")
            pairs.append((full, text))
        held = torch.rand(len(pairs), generator=torch.Generator().manual_seed(self.config.seed)) < \
            self.config.test_fraction
        pairs = [p for p, h in zip(pairs, held.tolist()) if h == (split != "train")]
        if not pairs:
            raise DataError(f"{path}: the {split} split is empty ({len(rows)} rows, test_fraction "
                            f"{self.config.test_fraction})")
        self.files, self.texts = [p[0] for p in pairs], [p[1] for p in pairs]
        self.images = None
        self.labels = torch.zeros(len(pairs), dtype=torch.long)
        keys = {t: k for k, t in enumerate(dict.fromkeys(self.texts))}
        self.keys = torch.tensor([keys[t] for t in self.texts])

    def _load(self, i: int) -> torch.Tensor:
        from PIL import Image
        import numpy as np

        s = self.config.image_size
        try:
            with Image.open(self.files[i]) as im:
                im = im.convert("L" if self.in_chans == 1 else "RGB").resize((s, s), Image.BILINEAR)
                a = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
        except Exception as e:  # PIL raises many types for broken files
            raise DataError(f"{self.files[i]}: cannot read image ({type(e).__name__})") from None
        a = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
        return (a - 0.5) / 0.5

    @property
    def all_texts(self) -> list[str]:
        return self.texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        img = self.images[i] if self.images is not None else self._load(i)
        return {"image": img, "text": self.texts[i], "label": int(self.labels[i]), "key": int(self.keys[i])}


def build_image_reports(config: ImageReportConfig, split: str = "train") -> ImageReports:
    return ImageReports(config, split)
