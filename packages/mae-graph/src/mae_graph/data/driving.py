"""Driving scenes for trajectory prediction, as VectorNet polylines: an embedded procedural generator and a reader of
Argoverse-style forecasting CSVs.

Generator (``driving-scenes``): per scene a lane graph around one intersection (3 or 4 arms at jittered angles, each
arm a slightly curved road with 1-2 lanes per direction, right-hand traffic; connector lanes across the intersection
as cubic Bezier curves: left turns from the leftmost lane, right turns from the rightmost, straight from all). Map
augmentation (``augment_prob``) bends the whole map before any agent drives on it, like the map "attacks" the
reference's synthetic data was made with (``AUGMENT_TYPE`` / ``ATTACK_POWER`` columns of its CSVs): a smooth turn, a
double turn or a ripple road of random power along a random direction. Agents follow routes (incoming lane ->
connector -> outgoing lane) with the intelligent driver model (IDM) for car-following (the leader is the nearest
vehicle ahead within 1.8 m laterally and 45 degrees of heading), desired speeds capped by the route's curvature
(3 m/s^2 lateral), and lane keeping as a lateral offset pulled back to the centerline (Ornstein-Uhlenbeck). 50 steps
at 10 Hz: 2 s history (20 points), 3 s future (30 points). The focal agent approaches the intersection and takes a
random turn, so the future is multi-modal and the map says which modes exist.

Sample (both sources): coordinates in the focal agent's frame at the last history step (origin, heading +x).
``vectors`` (P, V, 8): per polyline (focal history first, then other agents' histories, then lane segments; valid
ones packed at the front) its vectors ``[x_start, y_start, x_end, y_end, is_focal, is_agent, is_lane, t]`` (t = the
vector's index / V); ``vector_mask`` (P, V), ``polyline_mask`` (P,), ``future`` (30, 2) metres.

CSV reader (``driving-csv``, ``--data DIR``): every ``*.csv`` with the Argoverse forecasting columns ``TIMESTAMP,
TRACK_ID, OBJECT_TYPE, X, Y`` (extra columns ignored; 50 timestamps at 10 Hz, one ``AGENT`` track = the focal
agent); lanes from an optional ``DIR/lanes.csv`` (``LANE_ID, X, Y``, the centerline points in order; the Argoverse HD
map itself is not read). Bad files stop with a one-line error naming the file.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mae_core.config import field
from mae_core.errors import ConfigError

HIST, FUT, LANE_PTS, FEATS = 20, 30, 10, 8
DT = 0.1


@dataclass
class DrivingScenesConfig:
    num_train: int = field(2000, "training scenes", ge=1)
    num_test: int = field(500, "test scenes", ge=1)
    max_agents: int = field(8, "other agents kept per scene (nearest first)", ge=0)
    max_lanes: int = field(24, "lane segments kept per scene (nearest first)", ge=1)
    radius: float = field(60.0, "map and agents within this distance of the focal agent (m)", gt=0)
    augment_prob: float = field(0.0, "share of scenes whose map is bent (smooth turn / double turn / ripple)",
                                ge=0, le=1)
    seed: int = field(0, "generator seed (the test split uses another stream)")


@dataclass
class DrivingCSVConfig:
    path: str | None = field(None, "folder of Argoverse-style scene CSVs (+ optional lanes.csv)")
    max_agents: int = field(8, "other agents kept per scene (nearest first)", ge=0)
    max_lanes: int = field(24, "lane segments kept per scene (nearest first)", ge=1)
    radius: float = field(60.0, "map and agents within this distance of the focal agent (m)", gt=0)
    test_fraction: float = field(0.2, "the last files (sorted by name) form the test split", ge=0, lt=1)


# ---- geometry --------------------------------------------------------------------------------------------------------
def resample(points: np.ndarray, n: int) -> np.ndarray:
    """A polyline resampled to ``n`` points equally spaced in arc length."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], 1)


def _bezier(p0, d0, p3, d3, n=24):
    h = np.linalg.norm(p3 - p0) / 2.5
    p1, p2 = p0 + d0 * h, p3 - d3 * h
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def _augment(points: np.ndarray, aug: tuple) -> np.ndarray:
    kind, u, power, b = aug
    n = np.array([-u[1], u[0]])
    along, perp = points @ u, points @ n
    if kind == 0:  # smooth turn: the road bends beyond `b`
        perp = perp + power * np.maximum(along - b, 0.0) ** 2 / 60.0
    elif kind == 1:  # double turn: a lateral shift between b and b + 30 m
        perp = perp + power * 2.0 * (np.tanh((along - b) / 8.0) - np.tanh((along - b - 30.0) / 8.0))
    else:  # ripple road
        perp = perp + power * np.sin(2 * np.pi * along / 40.0)
    return along[:, None] * u + perp[:, None] * n


def make_map(rng: np.random.Generator, augment: bool):
    """``(segments, routes)``: lane segments of ``LANE_PTS`` points, and every route as ``(dense point path, arc
    length of its stop line)``."""
    narms = 4 if rng.random() < 0.7 else 3
    base = rng.uniform(0, 2 * np.pi)
    angles = base + np.radians([0, 90, 180, 270][:narms] if narms == 4 else [0, 90, 180]) + rng.normal(0, 0.15, narms)
    aug = (int(rng.integers(3)), (lambda a: np.array([np.cos(a), np.sin(a)]))(rng.uniform(0, 2 * np.pi)),
           rng.uniform(1.0, 4.0) * rng.choice([-1, 1]), rng.uniform(-20, 20)) if augment else None
    r0, width = 10.0, 3.5
    incoming, outgoing = [], []  # per arm: list of lane point arrays
    for a, ang in enumerate(angles):
        length, kappa, lanes = rng.uniform(60, 90), rng.uniform(-0.004, 0.004), int(rng.integers(1, 3))
        s = np.linspace(r0, length, 40)
        theta = ang + kappa * (s - r0)
        center = np.cumsum(np.stack([np.cos(theta), np.sin(theta)], 1) * np.diff(s, prepend=0.0)[:, None], 0)
        center += np.array([np.cos(ang), np.sin(ang)]) * (r0 - np.diff(s, prepend=0.0)[0])
        normal = np.stack([np.sin(theta), -np.cos(theta)], 1)  # right of the outward direction
        outgoing.append([center + normal * (i + 0.5) * width for i in range(lanes)])
        incoming.append([(center - normal * (i + 0.5) * width)[::-1] for i in range(lanes)])
    segments, routes = [], []
    for arm_lanes in incoming + outgoing:
        for lane in arm_lanes:
            n_seg = max(1, int(round(np.linalg.norm(np.diff(lane, axis=0), axis=1).sum() / 20.0)))
            for piece in np.array_split(resample(lane, n_seg * 9 + 1), n_seg):
                segments.append(piece)
    for a in range(narms):
        for b in range(narms):
            if a == b:
                continue
            turn = (angles[b] - angles[a] - np.pi) % (2 * np.pi)  # ~pi straight, < pi right turn, > pi left turn
            kind = "straight" if abs(turn - np.pi) < np.pi / 4 else ("left" if turn > np.pi else "right")
            ins = incoming[a] if kind == "straight" else [incoming[a][0 if kind == "right" else -1]]
            for i, lane_in in enumerate(ins):
                lane_out = outgoing[b][min(i, len(outgoing[b]) - 1) if kind == "straight" else
                                       (0 if kind == "right" else -1)]
                d0 = lane_in[-1] - lane_in[-2]
                d3 = lane_out[1] - lane_out[0]
                conn = _bezier(lane_in[-1], d0 / np.linalg.norm(d0), lane_out[0], d3 / np.linalg.norm(d3))
                segments.append(resample(conn, LANE_PTS))
                stop = np.linalg.norm(np.diff(lane_in, axis=0), axis=1).sum()  # arc length of the stop line
                routes.append((resample(np.concatenate([lane_in, conn[1:-1], lane_out]), 400), stop))
    if aug is not None:
        segments = [_augment(s, aug) for s in segments]
        routes = [(_augment(r, aug), stop) for r, stop in routes]
    return segments, routes


def _route_geometry(route: np.ndarray):
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(route, axis=0), axis=1))])
    tang = np.gradient(route, axis=0)
    head = np.unwrap(np.arctan2(tang[:, 1], tang[:, 0]))
    curv = np.abs(np.gradient(head) / np.maximum(np.gradient(s), 1e-6))
    vmax = np.sqrt(3.0 / np.maximum(curv, 1e-4))  # lateral acceleration <= 3 m/s^2
    return s, head, vmax


def simulate(routes, starts, v0s, speeds, rng, steps=HIST + FUT):
    """IDM car-following + curvature speed caps + OU lane keeping. Returns positions (N, steps, 2)."""
    geo = [_route_geometry(r) for r in routes]
    n = len(routes)
    s, v = np.array(starts, float), np.array(speeds, float)
    lat = rng.normal(0, 0.3, n)
    out = np.zeros((n, steps, 2))
    for t in range(steps):
        pos, head = np.zeros((n, 2)), np.zeros(n)
        for i, (route, (ss, hh, vm)) in enumerate(zip(routes, geo)):
            si = min(s[i], ss[-1])
            head[i] = np.interp(si, ss, hh)
            nrm = np.array([-np.sin(head[i]), np.cos(head[i])])
            pos[i] = np.stack([np.interp(si, ss, route[:, 0]), np.interp(si, ss, route[:, 1])]) + nrm * lat[i]
        out[:, t] = pos
        acc = np.zeros(n)
        for i, (_, (ss, hh, vm)) in enumerate(zip(routes, geo)):
            ahead = np.interp(np.clip(s[i] + np.linspace(0, 2 * v[i] + 5, 6), 0, ss[-1]), ss, vm).min()
            vd = max(min(v0s[i], ahead), 1.0)
            free = 1 - (v[i] / vd) ** 4
            rel = pos - pos[i]
            hv = np.array([np.cos(head[i]), np.sin(head[i])])
            lon, la = rel @ hv, rel @ np.array([-hv[1], hv[0]])
            cand = (lon > 0) & (lon < 50) & (np.abs(la) < 1.8) & (np.cos(head - head[i]) > np.cos(np.pi / 4))
            cand[i] = False
            inter = 0.0
            if cand.any():
                j = np.flatnonzero(cand)[np.argmin(lon[cand])]
                gap = max(lon[j] - 4.5, 0.1)
                s_star = 2.0 + v[i] * 1.5 + v[i] * (v[i] - v[j]) / (2 * np.sqrt(1.5 * 2.0))
                inter = (max(s_star, 0.0) / gap) ** 2
            acc[i] = np.clip(1.5 * (free - inter), -8.0, 3.0)
        v = np.maximum(v + acc * DT, 0.0)
        s = s + v * DT
        lat = lat + (-0.8 * lat) * DT + rng.normal(0, 0.08, n) * np.sqrt(DT)
    return out


def generate_scene(rng: np.random.Generator, augment: bool):
    """``(focal (50, 2), others list of (50, 2), lane segments)`` in world coordinates."""
    segments, routes = make_map(rng, augment)
    focal_route, stop = routes[int(rng.integers(len(routes)))]
    speed = rng.uniform(4, 13)
    start = max(stop - rng.uniform(-5, 15) - 2.0 * speed, 0.0)  # the turn falls in the 3 s future
    rs, st, v0, sp = [focal_route], [start], [rng.uniform(9, 15)], [speed]
    if rng.random() < 0.5:  # a leader on the same route, ahead of the focal agent
        rs.append(focal_route); st.append(start + rng.uniform(8, 30)); v0.append(rng.uniform(5, 13))
        sp.append(rng.uniform(2, 11))
    for _ in range(int(rng.integers(2, 8))):
        r = routes[int(rng.integers(len(routes)))][0]
        rs.append(r); st.append(rng.uniform(0, 120)); v0.append(rng.uniform(7, 15)); sp.append(rng.uniform(0, 12))
    traj = simulate(rs, st, v0, sp, rng)
    return traj[0], list(traj[1:]), segments


# ---- vectorisation ---------------------------------------------------------------------------------------------------
def vectorize(focal: np.ndarray, others: list, lanes: list, max_agents: int, max_lanes: int, radius: float) -> dict:
    """One sample (see the module docstring) from world-frame tracks (50, 2), NaN where a track is absent."""
    origin = focal[HIST - 1]
    d = focal[HIST - 1] - focal[max(HIST - 6, 0)]
    ang = np.arctan2(d[1], d[0]) if np.linalg.norm(d) > 0.5 else (
        np.arctan2(*(focal[HIST + 5] - focal[HIST - 1])[::-1]) if np.linalg.norm(focal[HIST + 5] - origin) > 0.5
        else 0.0)
    rot = np.array([[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]])

    def local(p):
        return (p - origin) @ rot.T

    hist = [local(focal[:HIST])]
    near = []
    for o in others:
        h = local(o[:HIST])
        dist = np.nanmin(np.linalg.norm(h, axis=1)) if np.isfinite(h).any() else np.inf
        if dist < radius and np.isfinite(h).all(1).sum() >= 2:
            near.append((dist, h))
    hist += [h for _, h in sorted(near, key=lambda x: x[0])[:max_agents]]
    lane_l = [(np.linalg.norm(q, axis=1).min(), q) for q in (local(resample(ln, LANE_PTS)) for ln in lanes)]
    lane_l = [q for dd, q in sorted(lane_l, key=lambda x: x[0]) if dd < radius][:max_lanes]
    p, v = 1 + max_agents + max_lanes, HIST - 1
    vec = np.zeros((p, v, FEATS), np.float32)
    vmask = np.zeros((p, v), bool)
    for k, pts in enumerate(hist + lane_l):
        n = len(pts) - 1
        ok = np.isfinite(pts[:-1]).all(1) & np.isfinite(pts[1:]).all(1)
        vec[k, :n, 0:2], vec[k, :n, 2:4] = np.nan_to_num(pts[:-1]), np.nan_to_num(pts[1:])
        vec[k, :n, 4 if k == 0 else (5 if k < len(hist) else 6)] = 1.0
        vec[k, :n, 7] = np.arange(n) / v
        vmask[k, :n] = ok
    vec[~vmask] = 0.0
    return {"vectors": torch.from_numpy(vec), "vector_mask": torch.from_numpy(vmask),
            "polyline_mask": torch.from_numpy(vmask.any(1)),
            "future": torch.from_numpy(local(focal[HIST:HIST + FUT]).astype(np.float32))}


class DrivingDataset(torch.utils.data.Dataset):
    """Samples computed once (a list of dicts of tensors); ``scenes`` keeps each scene's augmentation flag."""

    def __init__(self, samples: list, name: str, augmented: list | None = None):
        self.samples, self.name = samples, name
        self.augmented = augmented or [False] * len(samples)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


_CACHE: dict = {}


def make_driving_scenes(cfg: DrivingScenesConfig, split: str) -> DrivingDataset:
    key = (tuple(vars(cfg).items()), split)
    if key not in _CACHE:
        rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1])
        samples, aug = [], []
        for _ in range(cfg.num_train if split == "train" else cfg.num_test):
            a = bool(rng.random() < cfg.augment_prob)
            focal, others, lanes = generate_scene(rng, a)
            samples.append(vectorize(focal, others, lanes, cfg.max_agents, cfg.max_lanes, cfg.radius))
            aug.append(a)
        if len(_CACHE) >= 6:  # a few splits stay generated (a benchmark process reuses them)
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = DrivingDataset(samples, "driving-scenes", aug)
    return _CACHE[key]


# ---- Argoverse-style CSVs --------------------------------------------------------------------------------------------
def _read_rows(path: Path, need: list[str]) -> list[dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{path}: cannot read it as CSV ({e})") from None
    cols = set(rows[0]) if rows else set()
    missing = [c for c in need if c not in cols]
    if missing:
        raise ConfigError(f"{path}: no column(s) {', '.join(missing)} (need {', '.join(need)})")
    return rows


def _float(path: Path, i: int, row: dict, col: str) -> float:
    try:
        x = float(row[col])
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: line {i + 2}: {col} is not a number: {row[col]!r}") from None
    if not np.isfinite(x):
        raise ConfigError(f"{path}: line {i + 2}: {col} is not finite")
    return x


def read_scene_csv(path: Path):
    """``(focal (50, 2), others [(50, 2) with NaN gaps])`` from one Argoverse forecasting CSV."""
    rows = _read_rows(path, ["TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y"])
    times = sorted({_float(path, i, r, "TIMESTAMP") for i, r in enumerate(rows)})
    if len(times) != HIST + FUT:
        raise ConfigError(f"{path}: {len(times)} timestamps, need {HIST + FUT} (2 s history + 3 s future at 10 Hz)")
    t_index = {t: k for k, t in enumerate(times)}
    tracks, focal_id = {}, None
    for i, r in enumerate(rows):
        tr = tracks.setdefault(r["TRACK_ID"], np.full((HIST + FUT, 2), np.nan))
        tr[t_index[_float(path, i, r, "TIMESTAMP")]] = (_float(path, i, r, "X"), _float(path, i, r, "Y"))
        if r["OBJECT_TYPE"] == "AGENT":
            if focal_id not in (None, r["TRACK_ID"]):
                raise ConfigError(f"{path}: line {i + 2}: a second AGENT track ({r['TRACK_ID']}; one focal agent)")
            focal_id = r["TRACK_ID"]
    if focal_id is None:
        raise ConfigError(f"{path}: no AGENT track (OBJECT_TYPE AGENT marks the focal agent)")
    focal = tracks.pop(focal_id)
    if not np.isfinite(focal).all():
        raise ConfigError(f"{path}: the AGENT track misses timestamps (it needs all {HIST + FUT})")
    return focal, list(tracks.values())


def read_lanes_csv(path: Path) -> list:
    rows = _read_rows(path, ["LANE_ID", "X", "Y"])
    lanes: dict = {}
    for i, r in enumerate(rows):
        lanes.setdefault(r["LANE_ID"], []).append((_float(path, i, r, "X"), _float(path, i, r, "Y")))
    short = [k for k, v in lanes.items() if len(v) < 2]
    if short:
        raise ConfigError(f"{path}: lane {short[0]} has fewer than 2 points")
    return [np.array(v) for v in lanes.values()]


def make_driving_csv(cfg: DrivingCSVConfig, split: str) -> DrivingDataset:
    path = cfg.path
    if path is None:
        raise ConfigError("--data: give the folder of Argoverse-style scene CSVs")
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"--data {path}: not a folder of scene CSVs")
    files = sorted(f for f in root.glob("*.csv") if f.name != "lanes.csv")
    if not files:
        raise ConfigError(f"--data {path}: no *.csv scene files")
    lanes = read_lanes_csv(root / "lanes.csv") if (root / "lanes.csv").exists() else []
    n_test = int(round(len(files) * cfg.test_fraction))
    chosen = files[:len(files) - n_test] if split == "train" else files[len(files) - n_test:]
    if not chosen:
        raise ConfigError(f"--data {path}: {len(files)} file(s) leave the {split} split empty (--test-fraction)")
    samples = [vectorize(*read_scene_csv(f), lanes, cfg.max_agents, cfg.max_lanes, cfg.radius) for f in chosen]
    return DrivingDataset(samples, "driving-csv")


def write_scene_csv(path: Path, focal: np.ndarray, others: list) -> None:
    """One scene as an Argoverse forecasting CSV (used by the tests and to export generated scenes)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME"])
        for k, (tid, tr) in enumerate([("focal", focal)] + [(f"o{j}", o) for j, o in enumerate(others)]):
            for t, (x, y) in enumerate(tr):
                if np.isfinite(x):
                    w.writerow([f"{t * DT:.1f}", tid, "AGENT" if k == 0 else "OTHERS", f"{x:.4f}", f"{y:.4f}", "SYN"])
