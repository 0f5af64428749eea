"""Skeleton sequences as graphs: layouts (NTU RGB+D 25, COCO-17, MSR Action3D 20), readers (NTU ``.skeleton``
text, ``(N, C, T, V, M)`` numpy arrays, MSR Action3D ``aXX_sYY_eZZ_skeleton3D.txt``) and a procedural generator of
labelled actions (the embedded default).

A sample is ``{"label": int, "skeleton": (C=3, T, V) float}``: the first person, resampled to ``frames`` frames,
centred on the layout's centre joint of the first frame and scaled by the mean torso length.
"""
from __future__ import annotations

import io
import math
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.data import load_npy
from mae_core.errors import DataError


@dataclass(frozen=True)
class SkeletonLayout:
    name: str
    num_joints: int
    edges: tuple  # 0-based bone list
    parts: dict  # body part -> joints (head, torso, left/right arm, left/right leg)
    center: int  # joint used to centre a sequence
    torso: tuple  # (lower, upper) joints whose distance is the body scale

    def adjacency(self) -> torch.Tensor:
        a = torch.zeros(self.num_joints, self.num_joints)
        for i, j in self.edges:
            a[i, j] = a[j, i] = 1.0
        return a

    def part_index(self) -> torch.Tensor:
        idx = torch.full((self.num_joints,), -1, dtype=torch.long)
        for k, joints in enumerate(self.parts.values()):
            idx[list(joints)] = k
        return idx


# ST-GCN graph.py, layout "ntu-rgb+d": neighbor_1base, here 0-based
_NTU_EDGES_1 = [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
                (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19), (22, 23),
                (23, 8), (24, 25), (25, 12)]
NTU25 = SkeletonLayout(
    "ntu25", 25, tuple((i - 1, j - 1) for i, j in _NTU_EDGES_1),
    {"head": (2, 3), "torso": (0, 1, 20), "left_arm": (4, 5, 6, 7, 21, 22), "right_arm": (8, 9, 10, 11, 23, 24),
     "left_leg": (12, 13, 14, 15), "right_leg": (16, 17, 18, 19)}, center=0, torso=(0, 20))
COCO17 = SkeletonLayout(
    "coco17", 17, ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                   (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    {"head": (0, 1, 2, 3, 4), "torso": (5, 6, 11, 12), "left_arm": (7, 9), "right_arm": (8, 10),
     "left_leg": (13, 15), "right_leg": (14, 16)}, center=11, torso=(11, 5))
# MSR Action3D order: l/r shoulder, neck, spine, l/r hip, hip centre, l/r elbow, l/r wrist, l/r hand, l/r knee,
# l/r ankle, l/r foot, head
MSR20 = SkeletonLayout(
    "msr20", 20, ((2, 19), (2, 0), (2, 1), (2, 3), (3, 6), (6, 4), (6, 5), (0, 7), (7, 9), (9, 11), (1, 8), (8, 10),
                  (10, 12), (4, 13), (13, 15), (15, 17), (5, 14), (14, 16), (16, 18)),
    {"head": (2, 19), "torso": (3, 6), "left_arm": (0, 7, 9, 11), "right_arm": (1, 8, 10, 12),
     "left_leg": (4, 13, 15, 17), "right_leg": (5, 14, 16, 18)}, center=6, torso=(6, 2))
LAYOUTS = {lay.name: lay for lay in (NTU25, COCO17, MSR20)}
# COCO-17 joints as NTU-25 joints (face points approximated from the head / neck)
NTU_TO_COCO = [3, 3, 3, 3, 3, 4, 8, 5, 9, 6, 10, 12, 16, 13, 17, 14, 18]


def get_layout(name: str) -> SkeletonLayout:
    if name not in LAYOUTS:
        raise DataError(f"unknown skeleton layout {name!r}; choose from {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


# ---- preprocessing -------------------------------------------------------------------------------------------------
def resample(seq: np.ndarray, frames: int) -> np.ndarray:
    """(C, T, V) -> (C, frames, V) by linear interpolation over time."""
    t = seq.shape[1]
    if t == frames:
        return seq
    src = np.linspace(0, t - 1, frames)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (src - lo)[None, :, None]
    return seq[:, lo] * (1 - w) + seq[:, hi] * w


def normalize(seq: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """Centre on the centre joint of the first frame; divide by the mean torso length."""
    seq = seq - seq[:, :1, layout.center:layout.center + 1]
    lo, hi = layout.torso
    scale = np.linalg.norm(seq[:, :, hi] - seq[:, :, lo], axis=0).mean()
    return seq / max(float(scale), 1e-6)


class SkeletonDataset(Dataset):
    def __init__(self, sequences: list[np.ndarray], labels, layout: SkeletonLayout, frames: int = 32,
                 name: str = "skeletons", preprocess: bool = True):
        self.layout = layout
        self.name = name
        self.x = torch.stack([torch.as_tensor(normalize(resample(s, frames), layout) if preprocess
                                              else resample(s, frames), dtype=torch.float32) for s in sequences])
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"label": int(self.labels[i]), "skeleton": self.x[i]}


# ---- procedural actions (embedded default) --------------------------------------------------------------------------
ACTIONS = ("walk", "wave", "jump", "squat", "kick", "clap")


def _limb_dir(flex, abd, side):
    """Unit vectors of a limb hanging down, rotated forward by ``flex`` and outward by ``abd``."""
    return np.stack([side * np.sin(abd), -np.cos(abd) * np.cos(flex), np.cos(abd) * np.sin(flex)], -1)


def _window(frames: int, min_share: float, rng: np.random.Generator) -> np.ndarray:
    """Envelope in [0, 1] over the clip: 1 on a random window of at least ``min_share`` of the frames, smooth
    (raised-cosine) ramps of a few frames on each side, 0 (rest pose) elsewhere."""
    if min_share >= 1.0:
        return np.ones(frames)
    share = rng.uniform(min_share, 1.0)
    start = rng.uniform(0.0, 1.0 - share)
    t = np.linspace(0, 1, frames)
    ramp = 0.08
    up = np.clip((t - start) / ramp, 0, 1)
    down = np.clip((start + share - t) / ramp, 0, 1)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def generate_action(action: int, frames: int, rng: np.random.Generator, noise: float = 0.01, style: float = 0.0,
                    nuisance: float = 0.0, window: float = 1.0) -> np.ndarray:
    """One sequence (3, frames, 25) in the NTU-25 layout, y up.

    Besides body proportions, speed, phase, camera yaw / pitch and joint noise, three controlled sources of
    within-class variation make the classes harder to tell apart from few labels:

    * ``style`` (subject variation): the action's joint-angle excursions are scaled by a per-sequence amplitude
      ``U(1 - 0.6 style, 1 + 0.3 style)``, every joint angle gets a per-sequence posture offset ``N(0, 0.2 style)``
      rad, and one-sided actions (wave, kick) use a random side;
    * ``nuisance`` (idle motion shared by all classes): every joint angle and the torso lean get a slow sinusoid of
      random frequency (0.3-2 cycles per clip) and amplitude ``U(0, 0.3 nuisance)`` rad;
    * ``window``: the action only fills a random window of at least this share of the clip (rest pose plus the
      idle motion elsewhere).
    """
    h = rng.uniform(1.5, 1.95)
    prop = rng.uniform(0.9, 1.1, size=6)  # torso, upper arm, forearm, thigh, shin, shoulder width
    thigh, shin = 0.245 * h * prop[3], 0.246 * h * prop[4]
    upper, fore = 0.186 * h * prop[1], 0.146 * h * prop[2]
    torso, shw, hipw = 0.30 * h * prop[0], 0.13 * h * prop[5], 0.09 * h
    cycles = rng.uniform(0.7, 1.6)
    phase = 2 * np.pi * cycles * np.linspace(0, 1, frames) + rng.uniform(0, 2 * np.pi)
    s, one = np.sin(phase), np.ones(frames)
    zero = np.zeros(frames)
    root = np.stack([zero, (thigh + shin) * one, zero], -1)
    hip_f = {"l": zero.copy(), "r": zero.copy()}
    knee = {"l": zero.copy(), "r": zero.copy()}
    sh_f = {"l": zero + 0.05, "r": zero + 0.05}
    sh_a = {"l": zero + 0.12, "r": zero + 0.12}
    elbow = {"l": zero + 0.2, "r": zero + 0.2}
    lean = zero.copy()
    name = ACTIONS[action]
    if name == "walk":
        hip_f["l"], hip_f["r"] = 0.45 * s, -0.45 * s
        knee["l"], knee["r"] = 0.6 * np.maximum(0, -s), 0.6 * np.maximum(0, s)
        sh_f["l"], sh_f["r"] = -0.4 * s, 0.4 * s
        root[:, 2] = np.linspace(0, 1.2 * cycles * thigh, frames)
    elif name == "wave":
        sh_a["r"] = 2.5 + 0 * s
        elbow["r"] = 0.9 + 0.5 * s
    elif name == "jump":
        up = np.maximum(0, s)
        crouch = np.maximum(0, -s)
        root[:, 1] += 0.35 * thigh * up - 0.25 * thigh * crouch
        hip_f["l"] = hip_f["r"] = 0.7 * crouch
        knee["l"] = knee["r"] = 1.2 * crouch
        sh_f["l"] = sh_f["r"] = 2.2 * up + 0.2
    elif name == "squat":
        d = 0.5 * (1 - np.cos(phase))
        hip_f["l"] = hip_f["r"] = 1.4 * d
        knee["l"] = knee["r"] = 2.0 * d
        root[:, 1] -= (thigh + shin) * 0.45 * d
        sh_f["l"] = sh_f["r"] = 1.4 * d + 0.1
        lean = 0.4 * d
    elif name == "kick":
        k = np.maximum(0, s)
        hip_f["r"] = 1.4 * k
        knee["r"] = 0.9 * np.maximum(0, -s) + 0.2 * (1 - k)
        sh_a["l"] = sh_a["r"] = 0.5 + 0 * s
    elif name == "clap":
        sh_f["l"] = sh_f["r"] = 1.3 + 0 * s
        sh_a["l"] = sh_a["r"] = 0.35 + 0.35 * s
        elbow["l"] = elbow["r"] = 0.5 + 0 * s
    if style > 0 or nuisance > 0 or window < 1.0:
        env = _window(frames, window, rng) * (rng.uniform(1 - 0.6 * style, 1 + 0.3 * style) if style > 0 else 1.0)
        rest = {"hip_f": 0.0, "knee": 0.0, "sh_f": 0.05, "sh_a": 0.12, "elbow": 0.2}
        angles = {"hip_f": hip_f, "knee": knee, "sh_f": sh_f, "sh_a": sh_a, "elbow": elbow}
        if style > 0 and name in ("wave", "kick") and rng.random() < 0.5:  # left-handed / left-footed
            for a in angles.values():
                a["l"], a["r"] = a["r"], a["l"]
        for key, a in angles.items():
            for side in ("l", "r"):
                v = rest[key] + env * (np.asarray(a[side], dtype=float) - rest[key])
                if style > 0:
                    v = v + rng.normal(0, 0.2 * style)
                if nuisance > 0:
                    v = v + rng.uniform(0, 0.3 * nuisance) * np.sin(
                        2 * np.pi * rng.uniform(0.3, 2.0) * np.linspace(0, 1, frames) + rng.uniform(0, 2 * np.pi))
                a[side] = v
        lean = env * lean
        if nuisance > 0:
            lean = lean + rng.uniform(0, 0.15 * nuisance) * np.sin(
                2 * np.pi * rng.uniform(0.3, 2.0) * np.linspace(0, 1, frames) + rng.uniform(0, 2 * np.pi))
        base_y = thigh + shin
        root[:, 1] = base_y + env * (root[:, 1] - base_y)
        root[:, 2] = np.concatenate([[0.0], np.cumsum(env[1:] * np.diff(root[:, 2]))])
    j = np.zeros((frames, 25, 3))
    upv = np.stack([zero, np.cos(lean), np.sin(lean)], -1)
    j[:, 0] = root
    j[:, 1] = root + upv * torso * 0.5
    j[:, 20] = root + upv * torso
    j[:, 2] = j[:, 20] + upv * 0.07 * h
    j[:, 3] = j[:, 2] + upv * 0.1 * h
    for side, (sh, el, wr, ha, tip, th) in {"l": (4, 5, 6, 7, 21, 22), "r": (8, 9, 10, 11, 23, 24)}.items():
        sg = -1.0 if side == "l" else 1.0
        j[:, sh] = j[:, 20] + np.array([sg * shw, 0, 0])
        du = _limb_dir(sh_f[side], sh_a[side], sg)
        j[:, el] = j[:, sh] + upper * du
        df = _limb_dir(sh_f[side] + elbow[side], sh_a[side], sg)
        j[:, wr] = j[:, el] + fore * df
        j[:, ha] = j[:, wr] + 0.04 * h * df
        j[:, tip] = j[:, ha] + 0.04 * h * df
        j[:, th] = j[:, ha] + 0.02 * h * df + np.array([sg * -0.02 * h, 0, 0.01 * h])
    for side, (hp, kn, an, ft) in {"l": (12, 13, 14, 15), "r": (16, 17, 18, 19)}.items():
        sg = -1.0 if side == "l" else 1.0
        j[:, hp] = root + np.array([sg * hipw, 0, 0])
        dt = _limb_dir(hip_f[side], 0.03 * one, sg)
        j[:, kn] = j[:, hp] + thigh * dt
        ds = _limb_dir(hip_f[side] - knee[side], 0.03 * one, sg)
        j[:, an] = j[:, kn] + shin * ds
        j[:, ft] = j[:, an] + np.array([0, -0.02 * h, 0.1 * h])
    yaw = rng.uniform(-np.pi, np.pi)
    pitch = rng.uniform(-0.15, 0.15)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    j = j @ (rx @ ry).T
    j = j + rng.normal(0, noise * h, size=j.shape)
    return j.transpose(2, 0, 1).astype(np.float32)


@dataclass
class SkeletonActionsConfig:
    num_train: int = field(600, "generated training sequences", ge=1)
    num_test: int = field(300, "generated test sequences", ge=1)
    frames: int = field(32, "frames per sequence", ge=1)
    layout: str = field("ntu25", "joint layout of the generated skeletons: ntu25 or coco17",
                        choices=["ntu25", "coco17"])
    noise: float = field(0.03, "joint noise (fraction of body height)", ge=0)
    style: float = field(1.0, "subject variation: per-sequence motion amplitude, posture offsets, handedness "
                              "(0 = none)", ge=0)
    nuisance: float = field(1.0, "idle motion of random frequency on every joint angle, shared by all actions "
                                 "(0 = none)", ge=0)
    window: float = field(0.6, "the action fills a random window of at least this share of the clip (1 = all)",
                          gt=0, le=1)
    seed: int = field(0, "seed of the generator (the test split uses seed + 1)")


def make_skeleton_actions(cfg: SkeletonActionsConfig, split: str) -> SkeletonDataset:
    """Six labelled actions (walk, wave, jump, squat, kick, clap) with random body proportions, speed, phase,
    camera yaw / pitch and joint noise, plus subject style, idle motion and a random action window
    (:func:`generate_action`; ``style=0 nuisance=0 window=1 noise=0.015`` gives the earlier, easy version)."""
    rng = np.random.default_rng(cfg.seed + (0 if split == "train" else 1))
    n = cfg.num_train if split == "train" else cfg.num_test
    labels = np.arange(n) % len(ACTIONS)
    seqs = [generate_action(int(a), cfg.frames, rng, cfg.noise, cfg.style, cfg.nuisance, cfg.window)
            for a in labels]
    layout = get_layout(cfg.layout)
    if cfg.layout == "coco17":
        seqs = [s[:, :, NTU_TO_COCO] for s in seqs]
    return SkeletonDataset(seqs, labels, layout, cfg.frames, name="skeleton-actions")


# ---- readers ----------------------------------------------------------------------------------------------------------
def read_ntu_skeleton(path: str | Path, max_bodies: int = 2) -> np.ndarray:
    """An NTU RGB+D ``.skeleton`` text file -> (3, T, 25, M) float32 (x, y, z camera coordinates)."""
    path = Path(path)
    try:
        tokens = path.read_text().split("\n")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a valid NTU .skeleton file (not text)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    lines = iter(tokens)
    try:
        t = int(next(lines))
        if not 0 < t <= len(tokens):  # a frame count the file cannot hold (and no giant allocation)
            raise ValueError(t)
        out = np.zeros((3, t, 25, max_bodies), dtype=np.float32)
        for f in range(t):
            bodies = int(next(lines))
            for b in range(bodies):
                next(lines)  # body info: id, clipped edges, hand states, restricted, lean, tracking state
                nj = int(next(lines))
                for v in range(nj):
                    vals = next(lines).split()
                    if b < max_bodies and v < 25:
                        out[:, f, v, b] = [float(vals[0]), float(vals[1]), float(vals[2])]
    except (StopIteration, ValueError, IndexError):
        raise DataError(f"{path}: not a valid NTU .skeleton file (truncated or malformed)") from None
    return out


_NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
_MSR_NAME = re.compile(r"a(\d{2})_s(\d{2})_e(\d{2})_skeleton3D\.txt$")


def _first_person(arr: np.ndarray) -> np.ndarray:
    """(C, T, V, M) or (C, T, V) -> (C, T, V) of the first person."""
    return arr[..., 0] if arr.ndim == 4 else arr


def read_msr_text(text: str, name: str = "") -> np.ndarray:
    vals = np.array(text.split(), dtype=np.float32)
    if vals.size == 0 or vals.size % 80:
        raise DataError(f"{name}: expected 20 joints x 4 values per frame, got {vals.size} numbers")
    return vals.reshape(-1, 20, 4)[:, :, :3].transpose(2, 0, 1)  # (3, T, 20)


def read_msr_action3d(path: str | Path) -> list[tuple[int, int, int, np.ndarray]]:
    """MSR Action3D skeleton files from a folder or a ``.tar.gz`` -> [(action 0-19, subject 1-10, execution, (3, T,
    20))], sorted by file name."""
    path = Path(path)
    items = []
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                mt = _MSR_NAME.search(m.name)
                if m.isfile() and mt:
                    items.append((Path(m.name).name, mt, tf.extractfile(m).read().decode()))
    elif path.is_dir():
        for f in sorted(path.rglob("a*_s*_e*_skeleton3D.txt")):
            items.append((f.name, _MSR_NAME.search(f.name), f.read_text()))
    else:
        raise DataError(f"{path}: not a folder or a .tar.gz of MSR Action3D skeleton files")
    if not items:
        raise DataError(f"{path}: no aXX_sYY_eZZ_skeleton3D.txt files found")
    items.sort(key=lambda it: it[0])
    return [(int(m.group(1)) - 1, int(m.group(2)), int(m.group(3)), read_msr_text(txt, name))
            for name, m, txt in items]


@dataclass
class SkeletonFilesConfig:
    path: str | None = field(None, "NTU .skeleton folder, an (N, C, T, V, M) .npy file (labels in "
                                   "<name>_label.npy or --labels), or an MSR Action3D folder / .tar.gz")
    labels: str | None = field(None, "labels .npy / .txt for an .npy data file")
    layout: str = field("auto", "joint layout: auto (from the joint count), ntu25, coco17 or msr20")
    frames: int = field(32, "frames per sequence after resampling", ge=1)
    test_subjects: list[int] = field([2, 4, 6, 8, 10], "MSR Action3D / NTU: subjects of the test split "
                                                       "(cross-subject protocol)")
    exclude: list[str] = field(["a13_s09_e02", "a13_s09_e03"], "MSR Action3D sequences left out (faulty files)")
    test_fraction: float = field(0.2, ".npy data without subjects: the last fraction of samples is the test split",
                                 ge=0, lt=1)


def _layout_for(v: int, name: str) -> SkeletonLayout:
    if name != "auto":
        lay = get_layout(name)
        if lay.num_joints != v:
            raise DataError(f"layout {name} has {lay.num_joints} joints but the data has {v}")
        return lay
    for lay in LAYOUTS.values():
        if lay.num_joints == v:
            return lay
    raise DataError(f"no skeleton layout with {v} joints (known: 25 NTU, 17 COCO, 20 MSR Action3D)")


_FILES_CACHE: dict = {}


def make_skeleton_files(cfg: SkeletonFilesConfig, split: str) -> SkeletonDataset:
    if not cfg.path:
        raise DataError("skeleton-files: give --data PATH")
    path = Path(cfg.path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    key = (str(path.resolve()), cfg.labels)
    if key not in _FILES_CACHE:
        _FILES_CACHE[key] = _load_files(path, cfg)
    seqs, labels, subjects = _FILES_CACHE[key]
    if subjects is not None:
        test = np.isin(subjects, cfg.test_subjects)
    else:
        n = len(labels)
        test = np.arange(n) >= n - int(round(n * cfg.test_fraction))
    keep = test if split == "test" else ~test
    v = seqs[0].shape[-1]
    return SkeletonDataset([s for s, k in zip(seqs, keep) if k], np.asarray(labels)[keep],
                           _layout_for(v, cfg.layout), cfg.frames, name=path.name)


def _load_files(path: Path, cfg: SkeletonFilesConfig):
    if path.suffix == ".npy":
        arr = load_npy(path, "skeleton array")
        if arr.ndim != 5:
            raise DataError(f"{path}: expected an (N, C, T, V, M) array, got shape {tuple(arr.shape)}")
        lab = Path(cfg.labels) if cfg.labels else path.with_name(path.stem.replace("_data", "") + "_label.npy")
        if not lab.exists():
            raise DataError(f"{path}: labels not found (looked for {lab}; give --labels)")
        if lab.suffix in (".pkl", ".pickle"):
            raise DataError(f"{lab}: pickled labels are not read (unpickling can run code); give them as .npy or as "
                            f"text, one integer per line")
        try:
            labels = load_npy(lab, "label array") if lab.suffix == ".npy" else np.loadtxt(lab, dtype=np.int64, ndmin=1)
        except ValueError as e:
            raise DataError(f"{lab}: labels must be integers, one per line ({' '.join(str(e).split())[:80]})") from None
        if len(labels) != len(arr):
            raise DataError(f"{lab}: {len(labels)} labels for {len(arr)} sequences")
        seqs = []
        for s in arr[:, :, :, :, 0]:  # drop all-zero padding frames at the end
            valid = np.abs(s).sum(axis=(0, 2)) > 0
            seqs.append(s[:, : max(int(valid.nonzero()[0].max()) + 1 if valid.any() else 1, 2)])
        return seqs, np.asarray(labels, dtype=np.int64), None
    if any(_MSR_NAME.search(p.name) for p in ([path] if path.is_file() else path.rglob("a*_skeleton3D.txt"))) \
            or path.name.endswith((".tar.gz", ".tgz")):
        items = [it for it in read_msr_action3d(path) if f"a{it[0] + 1:02d}_s{it[1]:02d}_e{it[2]:02d}"
                 not in cfg.exclude]
        return [it[3] for it in items], np.array([it[0] for it in items]), np.array([it[1] for it in items])
    files = sorted(path.rglob("*.skeleton")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no .skeleton, .npy or MSR Action3D files found")
    seqs, labels, subjects = [], [], []
    for f in files:
        m = _NTU_NAME.search(f.name)
        if not m:
            raise DataError(f"{f}: NTU file names look like S001C001P001R001A001.skeleton")
        seqs.append(_first_person(read_ntu_skeleton(f)))
        labels.append(int(m.group(5)) - 1)
        subjects.append(int(m.group(3)))
    labels = np.array(labels)
    return seqs, labels, np.array(subjects)
