"""Stick-figure videos of people acting: a second video domain for cross-domain few-shot learning (CDFSL-V).

Skeleton sequences in the 20-joint MSR Action3D layout are projected to the image plane (front view after a random
turn about the vertical axis), centred and scaled by the figure's height, resampled to ``num_frames`` frames and
drawn as light anti-aliased bones and a round head on a plain dark background: no texture, thin lines, articulated
motion, unlike the moving-shapes clips. Two sources of sequences:

- ``skeletons`` empty (the embedded default): procedural stick figures, ten actions (wave, two-hand wave, clap,
  punch, side kick, forward kick, bend, jumping jack, jog, squat) with random body proportions, amplitude, speed,
  phase and joint noise;
- ``skeletons`` = an MSR Action3D folder or ``.tar.gz`` of ``aXX_sYY_eZZ_skeleton3D.txt`` files (20 lines ``x y z c``
  per frame): the 20 actions, the cross-subject split (subjects 1, 3, 5, 7, 9 train, the others test), the two faulty
  sequences of the usual 557-sequence protocol dropped.

Training sequences are rendered ``repeats`` times with a random temporal window, turn, scale and offset; test
sequences once, whole and centred. Samples are ``{"video": (3, T, S, S) in [-1, 1], "label": int, "index": i}``.
"""
from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError

# MSR Action3D joints (0-based): 0 l-shoulder, 1 r-shoulder, 2 neck, 3 spine, 4 l-hip, 5 r-hip, 6 hip centre,
# 7 l-elbow, 8 r-elbow, 9 l-wrist, 10 r-wrist, 11 l-hand, 12 r-hand, 13 l-knee, 14 r-knee, 15 l-ankle, 16 r-ankle,
# 17 l-foot, 18 r-foot, 19 head
BONES = ((19, 2), (2, 0), (2, 1), (0, 7), (7, 9), (9, 11), (1, 8), (8, 10), (10, 12), (2, 3), (3, 6), (6, 4), (6, 5),
         (4, 13), (13, 15), (15, 17), (5, 14), (14, 16), (16, 18))
HEAD, HIP = 19, 6
MSR_ACTIONS = ["high arm wave", "horizontal arm wave", "hammer", "hand catch", "forward punch", "high throw",
               "draw x", "draw tick", "draw circle", "hand clap", "two hand wave", "side boxing", "bend",
               "forward kick", "side kick", "jogging", "tennis swing", "tennis serve", "golf swing", "pick up & throw"]
PROCEDURAL_ACTIONS = ["wave", "two-hand wave", "clap", "punch", "side kick", "forward kick", "bend", "jumping jack",
                      "jog", "squat"]
MSR_FAULTY = {"a13_s09_e02", "a13_s09_e03"}
_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_skeleton3D\.txt$")


@dataclass
class StickFiguresConfig:
    skeletons: str = field("", "MSR Action3D skeleton folder or .tar.gz (aXX_sYY_eZZ_skeleton3D.txt files); "
                               "empty: the embedded procedural stick figures")
    num_frames: int = field(8, "frames per clip", ge=2)
    image_size: int = field(32, "frame side in pixels", ge=8)
    num_train: int = field(400, "procedural training sequences (MSR: the training subjects' sequences)", ge=1)
    num_test: int = field(300, "procedural test sequences (MSR: the test subjects' sequences)", ge=1)
    repeats: int = field(2, "renders of each training sequence (random window, turn, scale, offset)", ge=1)
    seed: int = field(0, "generator seed")


# ---- reading MSR Action3D --------------------------------------------------------------------------------------------
def _parse(text: str, name: str) -> np.ndarray:
    vals = np.array(text.split(), dtype=np.float32)
    if vals.size == 0 or vals.size % 80:
        raise DataError(f"{name}: expected 20 joints x 4 values per frame, got {vals.size} numbers")
    return vals.reshape(-1, 20, 4)[..., :3]


def read_msr(path: str | Path) -> list[tuple[int, int, str, np.ndarray]]:
    """[(action 0-19, subject 1-10, stem, joints (T, 20, 3))] from a folder or a .tar.gz, in name order."""
    path = Path(path)
    items = []
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                if m.isfile() and _NAME.search(m.name):
                    items.append((Path(m.name).name, tf.extractfile(m).read().decode()))
    elif path.is_dir():
        items = [(p.name, p.read_text()) for p in path.rglob("*_skeleton3D.txt")]
    else:
        raise DataError(f"{path}: not a folder or a .tar.gz of MSR Action3D skeleton files (--skeletons)")
    out = []
    for name, text in sorted(items):
        a, s, _ = (int(v) for v in _NAME.search(name).groups())
        stem = name.split("_skeleton3D")[0]
        if stem not in MSR_FAULTY:
            out.append((a - 1, s, stem, _parse(text, name)))
    if not out:
        raise DataError(f"{path}: no aXX_sYY_eZZ_skeleton3D.txt files found (--skeletons)")
    return out


# ---- procedural stick figures ----------------------------------------------------------------------------------------
def _dir(abd, flex, side):
    """Unit direction of a limb segment: abd 0 = hanging, pi/2 = sideways (``side`` +1 right, -1 left), pi = up;
    flex pi/2 = forward (towards the camera), negative = backward. Arrays broadcast over frames."""
    return np.stack([side * np.sin(abd) * np.cos(flex), -np.cos(abd) * np.cos(flex), np.sin(flex)], -1)


def procedural_sequence(action: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, 20, 3) joints of one procedural action (metres, y up, z towards the camera)."""
    size = rng.uniform(0.9, 1.1, 6)
    amp = rng.uniform(0.8, 1.2)
    cycles = rng.uniform(0.7, 1.2) if action in (6, 9) else rng.uniform(1.0, 2.0)
    phi = 2 * np.pi * cycles * np.arange(frames) / frames + rng.uniform(0, 2 * np.pi)
    s, c = np.sin(phi), np.cos(phi)
    up = (1 - c) / 2  # 0..1, a smooth rise and fall
    z = np.zeros(frames)
    # absolute segment angles (abd, flex) per side: upper arm, forearm, thigh, shin; torso pitch; vertical bob
    ang = {k: [np.full(frames, v), z.copy()] for k, v in
           (("ua_r", 0.15), ("ua_l", 0.15), ("fa_r", 0.1), ("fa_l", 0.1), ("th_r", 0.05), ("th_l", 0.05),
            ("sh_r", 0.05), ("sh_l", 0.05))}
    pitch, bob = z.copy(), z.copy()
    if action in (0, 1):  # wave overhead (right arm; both arms)
        for sd in ("r", "l") if action == 1 else ("r",):
            ang[f"ua_{sd}"][0] = np.full(frames, 2.4)
            ang[f"fa_{sd}"][0] = 2.9 + 0.5 * amp * s
    elif action == 2:  # clap: forearms swing in front of the chest
        for sd in ("r", "l"):
            ang[f"ua_{sd}"] = [np.full(frames, 0.35), np.full(frames, 0.9)]
            ang[f"fa_{sd}"] = [-0.9 + 1.1 * amp * up, np.full(frames, 1.4)]
    elif action == 3:  # punch: the right arm thrusts forward and back
        ang["ua_r"] = [np.full(frames, 0.2), 0.5 + 1.0 * amp * up]
        ang["fa_r"] = [np.full(frames, 0.1), 1.9 - 0.3 * up]
    elif action == 4:  # side kick, right leg
        ang["th_r"][0] = ang["sh_r"][0] = 0.05 + 1.0 * amp * up
    elif action == 5:  # forward kick, right leg
        ang["th_r"][1] = 1.3 * amp * up
        ang["sh_r"][1] = 1.1 * amp * up
    elif action == 6:  # bend forward at the hips
        pitch = 1.2 * amp * up
    elif action == 7:  # jumping jack
        for sd in ("r", "l"):
            ang[f"ua_{sd}"][0] = ang[f"fa_{sd}"][0] = 0.2 + 2.5 * amp * up
            ang[f"th_{sd}"][0] = ang[f"sh_{sd}"][0] = 0.05 + 0.35 * up
        bob = 0.1 * np.abs(s)
    elif action == 8:  # jog in place
        for sd, sg in (("r", 1), ("l", -1)):
            ang[f"th_{sd}"][1] = 1.0 * amp * np.maximum(sg * s, 0)
            ang[f"sh_{sd}"][1] = ang[f"th_{sd}"][1] - 1.2 * np.maximum(sg * s, 0)
            ang[f"ua_{sd}"][1] = -0.6 * amp * sg * s
            ang[f"fa_{sd}"][1] = 1.3 - 0.6 * amp * sg * s
        bob = 0.05 * np.abs(s)
    elif action == 9:  # squat with the arms raised forward
        for sd in ("r", "l"):
            ang[f"th_{sd}"][1] = 1.4 * amp * up
            ang[f"sh_{sd}"][1] = -0.4 * amp * up
            ang[f"ua_{sd}"][1] = ang[f"fa_{sd}"][1] = 1.4 * up
    j = np.zeros((frames, 20, 3))
    torso, sw, hw = 0.5 * size[0], 0.18 * size[1], 0.1 * size[1]
    arm, fore, thigh, shin = 0.28 * size[2], 0.25 * size[3], 0.42 * size[4], 0.42 * size[5]
    cp, sp = np.cos(pitch)[:, None], np.sin(pitch)[:, None]
    def upper(v):  # the upper body leans forward by ``pitch`` about the hips
        v = np.broadcast_to(np.asarray(v, dtype=np.float64), (frames, 3))
        y, z = v[:, 1] * cp[:, 0] - v[:, 2] * sp[:, 0], v[:, 1] * sp[:, 0] + v[:, 2] * cp[:, 0]
        return np.stack([v[:, 0], y, z], -1)
    j[:, 3] = upper([0, torso / 2, 0])
    j[:, 2] = upper([0, torso, 0])
    j[:, HEAD] = upper([0, torso + 0.2 * size[0], 0])
    for sd, sg, sh, el, wr, hd, hip, kn, an, ft in (("r", 1, 1, 8, 10, 12, 5, 14, 16, 18),
                                                    ("l", -1, 0, 7, 9, 11, 4, 13, 15, 17)):
        j[:, sh] = upper([sg * sw, torso - 0.02, 0])
        j[:, el] = j[:, sh] + arm * upper(_dir(*ang[f"ua_{sd}"], sg))
        j[:, wr] = j[:, el] + fore * upper(_dir(*ang[f"fa_{sd}"], sg))
        j[:, hd] = j[:, wr] + 0.07 * upper(_dir(*ang[f"fa_{sd}"], sg))
        j[:, hip] = [sg * hw, -0.02, 0]
        j[:, kn] = j[:, hip] + thigh * _dir(*ang[f"th_{sd}"], sg)
        j[:, an] = j[:, kn] + shin * _dir(*ang[f"sh_{sd}"], sg)
        j[:, ft] = j[:, an] + [0, -0.03, 0.08]
    j[..., 1] -= j[:, [17, 18], 1].min(1, keepdims=True)  # feet on the floor ...
    j[..., 1] += bob[:, None]  # ... unless jumping
    return (j + rng.normal(0, 0.008, j.shape)).astype(np.float32)


# ---- rendering -------------------------------------------------------------------------------------------------------
def resample(seq: np.ndarray, frames: int, start: float = 0.0, end: float = 1.0) -> np.ndarray:
    """``frames`` frames linearly interpolated over the fraction [start, end] of a (T, J, 3) sequence."""
    pos = np.linspace(start, end, frames) * (len(seq) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(seq) - 1)
    w = (pos - lo)[:, None, None]
    return seq[lo] * (1 - w) + seq[hi] * w


def project(seq: np.ndarray, yaw: float = 0.0, scale: float = 1.0, offset=(0.0, 0.0)) -> np.ndarray:
    """(T, J, 3) -> (T, J, 2) image-plane coordinates in [-1, 1] (x right, y down): turned by ``yaw`` about the
    vertical axis, centred on the mean hip, the median figure height mapped to 1.5 x ``scale``."""
    x = seq[..., 0] * np.cos(yaw) + seq[..., 2] * np.sin(yaw)
    y = seq[..., 1]
    height = np.median(y[:, HEAD] - np.minimum(y[:, 17], y[:, 18]))
    k = 1.5 * scale / max(float(height), 1e-3)
    cy = (y.max() + y.min()) / 2
    return np.stack([(x - x[:, HIP].mean()) * k + offset[0], -(y - cy) * k + offset[1]], -1)


def render(points: torch.Tensor, size: int, background: torch.Tensor, ink: torch.Tensor, width: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, T, J, 2) image-plane joints -> (N, 3, T, S, S) uint8: anti-aliased bones ``width`` pixels wide (at 32 px,
    scaled with the size) and a head disk in colour ``ink`` (N, 3) over a plain ``background`` (N, 3)."""
    n, t = points.shape[:2]
    px = torch.linspace(-1 + 1 / size, 1 - 1 / size, size)
    grid = torch.stack(torch.meshgrid(px, px, indexing="xy"), -1).reshape(1, -1, 2)  # (1, S*S, 2) x, y
    pts = points.reshape(n * t, -1, 2).float()
    a = pts[:, [i for i, _ in BONES]]  # (F, B, 2)
    b = pts[:, [k for _, k in BONES]]
    ab = b - a
    rel = grid[:, None] - a[:, :, None]  # (F, B, S*S, 2)
    u = ((rel * ab[:, :, None]).sum(-1) / (ab * ab).sum(-1, keepdim=True).clamp_min(1e-8)).clamp(0, 1)
    dist = (rel - u[..., None] * ab[:, :, None]).norm(dim=-1).amin(1)  # (F, S*S)
    head = (grid - pts[:, HEAD:HEAD + 1]).norm(dim=-1) - 0.09
    d = torch.minimum(dist, head.clamp_min(0)) * size / 2  # in pixels
    alpha = (1 - (d - width * size / 64)).clamp(0, 1).reshape(n, 1, t, size, size)
    video = background.view(n, 3, 1, 1, 1) * (1 - alpha) + ink.view(n, 3, 1, 1, 1) * alpha
    video = video + 0.02 * torch.randn(video.shape, generator=generator)
    return (video.clamp(0, 1) * 255).round().to(torch.uint8)


def render_sequences(seqs: list[np.ndarray], frames: int, size: int, rng: np.random.Generator,
                     jitter: bool) -> torch.Tensor:
    """Render each (T, J, 3) sequence once; ``jitter``: a random window, turn, scale and offset per render."""
    pts = []
    for seq in seqs:
        if jitter:
            start, end = rng.uniform(0, 0.15), rng.uniform(0.85, 1.0)
            yaw, scale, off = rng.uniform(-0.5, 0.5), rng.uniform(0.85, 1.1), rng.uniform(-0.12, 0.12, 2)
        else:
            start, end, yaw, scale, off = 0.0, 1.0, 0.0, 1.0, (0.0, 0.0)
        pts.append(project(resample(seq, frames, start, end), yaw, scale, off))
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    n = len(seqs)
    background = torch.rand(n, 1, generator=g) * 0.25 + torch.rand(n, 3, generator=g) * 0.08
    ink = 0.75 + 0.25 * torch.rand(n, 3, generator=g)
    out = [render(torch.from_numpy(np.stack(pts[i:i + 64])), size, background[i:i + 64], ink[i:i + 64],
                  generator=g) for i in range(0, n, 64)]
    return torch.cat(out)


class StickFigures(Dataset):
    """Rendered stick-figure clips with action labels (module docstring)."""

    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self, config: StickFiguresConfig | None = None, split: str = "train"):
        self.config = c = config or StickFiguresConfig()
        train = split == "train"
        rng = np.random.default_rng([c.seed, 0 if train else 1, 4049])
        if c.skeletons:
            rows = [r for r in read_msr(c.skeletons) if (r[1] % 2 == 1) == train]
            seqs, labels = [r[3] for r in rows], [r[0] for r in rows]
            self.classes = MSR_ACTIONS
        else:
            n = c.num_train if train else c.num_test
            labels = [int(v) for v in rng.integers(0, len(PROCEDURAL_ACTIONS), n)]
            seqs = [procedural_sequence(a, int(rng.integers(20, 60)), rng) for a in labels]
            self.classes = PROCEDURAL_ACTIONS
        reps = c.repeats if train else 1
        seqs, labels = [s for s in seqs for _ in range(reps)], [lab for lab in labels for _ in range(reps)]
        self.clips = render_sequences(seqs, c.num_frames, c.image_size, rng, jitter=train)
        self.labels = torch.tensor(labels)
        self.num_classes = len(self.classes)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        video = (self.clips[i].float() / 255.0 - 0.5) / 0.5
        return {"video": video, "label": int(self.labels[i]), "index": i}
