"""Embedded default for BM-MAE: synthetic multimodal head volumes, generated on the fly (deterministic, no download).

Each case is a tissue label map in the spirit of ``monai.data.synthetic`` (random ellipsoids / spheres): background,
a brain ellipsoid with grey-matter shell, white matter, two ventricles (CSF), and a "tumour" (necrotic core,
enhancing rim, oedema) whose size class (small / medium / large) is the case label. Every modality is a different,
partly non-linear intensity mapping of the same tissue map and of a smooth continuous tissue property, times a smooth
bias field, plus noise; so one modality is predictable from the others but not identical. Intensities are then
z-scored inside the brain (MONAI ``NormalizeIntensity(nonzero=True)``) as the real-data pipeline does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from mae_core.config import field

# tissue labels
BG, WM, GM, CSF, EDEMA, RIM, CORE = range(7)
TISSUES = ["background", "white matter", "grey matter", "csf", "oedema", "enhancing rim", "necrotic core"]
# base intensity of each tissue per modality (rows follow TISSUES)
TABLE = {
    "t1": [0.0, 0.85, 0.60, 0.20, 0.50, 0.45, 0.30],
    "t1ce": [0.0, 0.85, 0.62, 0.22, 0.50, 1.10, 0.28],
    "t2": [0.0, 0.35, 0.55, 1.00, 0.85, 0.60, 0.90],
    "flair": [0.0, 0.40, 0.55, 0.10, 1.00, 0.75, 0.45],
}
SIZE_CLASSES = ["small", "medium", "large"]
RADIUS = [(0.08, 0.12), (0.15, 0.19), (0.22, 0.27)]  # tumour radius range per class (fraction of the half side)


@dataclass
class SyntheticBrainConfig:
    image_size: int = field(32, "side of the generated cubic volumes in voxels", ge=1)
    modalities: list[str] = field(["t1", "t1ce", "t2", "flair"], "modalities to return (subset of t1, t1ce, t2, "
                                  "flair); fine-tuning and probing work on any subset")
    num_train: int = field(256, "number of training cases", ge=1)
    num_test: int = field(128, "number of test cases", ge=1)
    noise: float = field(0.03, "standard deviation of the additive Gaussian noise (before normalisation)", ge=0)
    seed: int = field(0, "generator seed (train and test use different streams)")
    cache: bool = field(True, "keep generated cases in memory (each case is deterministic; generating them again "
                              "every epoch took about half of a one-thread CPU pre-training run)")


def _smooth_noise(g: torch.Generator, size: int, coarse: int = 5) -> torch.Tensor:
    x = torch.rand(1, 1, coarse, coarse, coarse, generator=g) * 2 - 1
    return F.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=True)[0, 0]


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Light partial-volume blur (3^3 box mixed with the original)."""
    y = F.avg_pool3d(F.pad(x[None, None], (1,) * 6, mode="replicate"), 3, stride=1)[0, 0]
    return 0.5 * x + 0.5 * y


def generate_case(index: int, size: int = 48, seed: int = 0, noise: float = 0.03,
                  modalities=("t1", "t1ce", "t2", "flair")) -> tuple[dict[str, torch.Tensor], int, torch.Tensor]:
    """(volumes {name: (size, size, size) float32, z-scored in the brain}, size class, tissue label map)."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(0, len(SIZE_CLASSES)))
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    c = torch.linspace(-1, 1, size)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    ax, ay, az = rng.uniform(0.62, 0.82, 3)
    cx, cy, cz = rng.uniform(-0.05, 0.05, 3)
    wobble = 0.06 * _smooth_noise(g, size, 4)
    r = torch.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2) + wobble
    brain = r < 1.0
    tissue = torch.zeros(size, size, size, dtype=torch.long)
    tissue[brain] = WM
    gm_depth = 0.78 + 0.06 * _smooth_noise(g, size, 6)
    tissue[brain & (r > gm_depth)] = GM
    for side in (-1, 1):  # ventricles
        vx, vy, vz = cx + side * rng.uniform(0.08, 0.14), cy + rng.uniform(-0.05, 0.05), cz + rng.uniform(0, 0.08)
        rv = torch.sqrt(((x - vx) / rng.uniform(0.05, 0.09)) ** 2 + ((y - vy) / rng.uniform(0.2, 0.28)) ** 2
                        + ((z - vz) / rng.uniform(0.08, 0.13)) ** 2)
        tissue[(rv < 1.0) & brain] = CSF
    # tumour: centre inside the brain, blobby radius
    lo, hi = RADIUS[label]
    rad = rng.uniform(lo, hi)
    d = rng.normal(size=3)
    d = d / np.linalg.norm(d) * rng.uniform(0.0, 0.45)
    tx, ty, tz = cx + d[0] * ax, cy + d[1] * ay, cz + d[2] * az
    rt = torch.sqrt((x - tx) ** 2 + (y - ty) ** 2 + (z - tz) ** 2) / rad + 0.15 * _smooth_noise(g, size, 6)
    tissue[brain & (rt < 1.7)] = EDEMA
    tissue[brain & (rt < 1.0)] = RIM
    tissue[brain & (rt < 0.65)] = CORE
    # continuous tissue property (e.g. myelination / cellularity) and bias field
    q = _smooth_noise(g, size, 7)
    bias = 1.0 + 0.12 * _smooth_noise(g, size, 3)
    from monai.transforms import NormalizeIntensity

    norm = NormalizeIntensity(nonzero=True)
    vols = {}
    for name in modalities:
        base = torch.tensor(TABLE[name])[tissue]
        if name in ("t1", "t1ce"):
            v = base + 0.08 * q
        elif name == "t2":
            v = base * (1.0 + 0.25 * q.clamp(min=-1) ** 2) - 0.05 * q  # non-linear in q
        else:  # flair: oedema-bright, CSF suppressed, saturating response
            v = torch.tanh(1.6 * (base + 0.06 * q)) / np.tanh(1.6)
        v = _blur(v * bias)
        v = v + noise * torch.randn(v.shape, generator=g)
        v = torch.where(brain, v.clamp_min(1e-3), torch.zeros_like(v))
        vols[name] = torch.as_tensor(norm(v[None]))[0].float()
    return vols, label, tissue


class SyntheticBrain(Dataset):
    """Samples ``{"t1": (1, S, S, S), "t1ce": ..., "t2": ..., "flair": ..., "label": size class}``."""

    classes = SIZE_CLASSES

    def __init__(self, config: SyntheticBrainConfig | None = None, split: str = "train"):
        self.config = c = config or SyntheticBrainConfig()
        from mae_core.errors import DataError
        unknown = [m for m in c.modalities if m not in TABLE]
        if unknown or not c.modalities:
            raise DataError(f"synthetic-brain: unknown modality {unknown[0] if unknown else '(none given)'!r}; "
                            f"choose from {', '.join(TABLE)}")
        self.n = c.num_train if split == "train" else c.num_test
        self.stream = c.seed * 2 + (0 if split == "train" else 1)
        self.labels = torch.tensor([int(np.random.default_rng([self.stream, i]).integers(0, len(SIZE_CLASSES)))
                                    for i in range(self.n)])
        self.num_classes = len(SIZE_CLASSES)
        self.modalities = list(c.modalities)
        self._cache: dict[int, dict] = {}

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        out = self._cache.get(i)
        if out is None:
            vols, label, _ = generate_case(i, self.config.image_size, self.stream, self.config.noise, self.modalities)
            out = {m: vols[m][None].contiguous() for m in self.modalities}
            out["label"] = label
            if self.config.cache:
                self._cache[i] = out
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()}

    def tumour(self, i: int) -> torch.Tensor:
        """(S, S, S) bool: case ``i``'s tumour (oedema, enhancing rim, necrotic core) from its tissue map."""
        _, _, tissue = generate_case(i, self.config.image_size, self.stream, self.config.noise, self.modalities[:1])
        return tissue >= EDEMA


STYLES = {  # file-name suffix per modality for each naming convention
    "brats2021": {"t1": "_t1.nii.gz", "t1ce": "_t1ce.nii.gz", "t2": "_t2.nii.gz", "flair": "_flair.nii.gz"},
    "brats2023": {"t1": "-t1n.nii.gz", "t1ce": "-t1c.nii.gz", "t2": "-t2w.nii.gz", "flair": "-t2f.nii.gz"},
    "brainles": {"t1": "_t1_bet.nii.gz", "t1ce": "_t1c_bet.nii.gz", "t2": "_t2_bet.nii.gz", "flair": "_fla_bet.nii.gz"},
}


def write_cases(root, num: int = 2, size: int = 32, style: str = "brats2021", spacing: float = 2.0,
                seed: int = 0, modalities=("t1", "t1ce", "t2", "flair")) -> list:
    """Write synthetic cases as a case folder (one sub-folder per case, one NIfTI per modality) with a
    non-trivial affine (LPS-like orientation, ``spacing`` mm); returns the case folders. For tests and demos."""
    from pathlib import Path

    import nibabel as nib

    root = Path(root)
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    dirs = []
    for i in range(num):
        name = f"case{i:03d}"
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        vols, _, _ = generate_case(i, size, seed, 0.03, modalities)
        for m in modalities:
            v = vols[m].numpy()
            v = np.where(v != 0, (v - v.min()) * 100 + 1, 0).astype(np.float32)  # positive, raw-like intensities
            nib.save(nib.Nifti1Image(v, affine), str(d / f"{name}{STYLES[style][m]}"))
        dirs.append(d)
    return dirs
