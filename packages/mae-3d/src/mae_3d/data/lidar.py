"""LiDAR scans as voxel grids: embedded synthetic driving scenes ray-cast with Open3D, and your own scans.

Synthetic scenes (no download, deterministic per index): a ground plane, boxes as cars, thin cylinders as poles,
cylinders as pedestrians and long boxes as building walls along both sides of the road, ray-cast with
``open3d.t.geometry.RaycastingScene`` from a sensor 1.7 m above the ground with a spinning-LiDAR pattern (32 beams
from -25 to +3 degrees, 1024 azimuths), with range noise. Every point carries the label of the object it hit:
0 ground, 1 car, 2 pedestrian, 3 pole, 4 building. Points are in the sensor frame (sensor at the origin, ground at
z = -1.7), as in KITTI.

Scans are voxelised (numpy, outside the training loop) into an occupancy grid and a per-voxel label (majority of
its points, -1 for empty or unlabelled voxels). Your own scans: ``--dataset lidar-folder --data DIR`` with KITTI
``.bin`` (x, y, z, intensity float32), ``.pcd`` or ``.ply`` files (unlabelled, for pretraining).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError

from ..io import SCAN_EXTS, read_scan
from ..o3d import o3d

SEG_CLASSES = ["ground", "car", "pedestrian", "pole", "building"]
SENSOR_HEIGHT = 1.7


@dataclass
class VoxelGridConfig:
    grid: list[int] = field([64, 64, 8], "voxels along x, y, z")
    voxel_size: list[float] = field([0.8, 0.8, 0.6], "voxel size in metres along x, y, z")
    grid_min: list[float] = field([-25.6, -25.6, -2.2], "lower corner of the grid in the sensor frame (metres)")

    def validate(self, where: str = "data") -> None:
        """Three positive voxel counts and sizes, three corner coordinates (called by ``from_dict``)."""
        from mae_core.config import check_range
        from mae_core.errors import ConfigError

        for name in ("grid", "voxel_size", "grid_min"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"{where}.{name}: expected 3 values (x, y, z), got {list(getattr(self, name))}")
        for i, v in enumerate(self.grid):
            check_range(v, {"ge": 1}, f"{where}.grid[{i}]")
        for i, v in enumerate(self.voxel_size):
            check_range(v, {"gt": 0}, f"{where}.voxel_size[{i}]")
        for i, v in enumerate(self.grid_min):
            check_range(v, {"gt": float("-inf")}, f"{where}.grid_min[{i}]")  # finite


@dataclass
class DrivingScenesConfig(VoxelGridConfig):
    num_train: int = field(64, "training scans", ge=1)
    num_test: int = field(16, "test scans", ge=1)
    beams: int = field(32, "laser beams (rows)", ge=1)
    azimuths: int = field(1024, "rays per beam and revolution", ge=1)
    fov_deg: list[float] = field([-25.0, 3.0], "lowest and highest beam elevation in degrees")
    max_range: float = field(60.0, "rays beyond this range return nothing (metres)", gt=0)
    range_noise: float = field(0.02, "standard deviation of the range noise (metres)", ge=0)
    seed: int = field(0, "seed of the scene generator")


@dataclass
class LidarFolderConfig(VoxelGridConfig):
    path: str | None = field(None, "folder of KITTI .bin / .pcd / .ply scans (searched recursively)")
    val_fraction: float = field(0.2, "held-out fraction of the scans", ge=0, lt=1)
    seed: int = field(0, "seed of the held-out split")


def voxelize(points: np.ndarray, labels: np.ndarray | None, cfg: VoxelGridConfig,
             num_classes: int = len(SEG_CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """(occupancy (X, Y, Z) float32, voxel label (X, Y, Z) int64 with -1 = empty / unlabelled)."""
    grid = np.array(cfg.grid)
    idx = np.floor((points[:, :3] - np.array(cfg.grid_min)) / np.array(cfg.voxel_size)).astype(np.int64)
    inside = ((idx >= 0) & (idx < grid)).all(1)
    idx = idx[inside]
    flat = np.ravel_multi_index(idx.T, grid)
    occ = np.zeros(grid.prod(), np.float32)
    occ[flat] = 1
    vlab = np.full(grid.prod(), -1, np.int64)
    if labels is not None and len(flat):
        lab = labels[inside]
        ok = lab >= 0
        counts = np.bincount(flat[ok] * num_classes + lab[ok], minlength=grid.prod() * num_classes)
        counts = counts.reshape(-1, num_classes)
        has = counts.sum(1) > 0
        vlab[has] = counts[has].argmax(1)
    return occ.reshape(*grid), vlab.reshape(*grid)


def _box(o, w, d, h, x, y, yaw=0.0, z0=0.0):
    m = o.geometry.TriangleMesh.create_box(w, d, h)
    m.translate((-w / 2, -d / 2, 0.0))
    m.rotate(m.get_rotation_matrix_from_xyz((0.0, 0.0, yaw)), center=(0, 0, 0))
    m.translate((x, y, z0))
    return m


def _cyl(o, r, h, x, y):
    m = o.geometry.TriangleMesh.create_cylinder(r, h, resolution=16)
    m.translate((x, y, h / 2))
    return m


def scene_meshes(rng: np.random.Generator) -> list[tuple[object, int]]:
    """(legacy mesh, class id) pairs of one driving scene; the ground is the plane z = 0."""
    o = o3d()
    parts = [(_box(o, 160, 160, 0.1, 0, 0, z0=-0.1), 0)]
    side = rng.uniform(9, 14, size=2)
    for s, sign in zip(side, (-1, 1)):  # building walls along the road with gaps
        x = -60.0
        while x < 60:
            length = rng.uniform(8, 20)
            if rng.random() < 0.8:
                parts.append((_box(o, length, rng.uniform(3, 8), rng.uniform(5, 14), x + length / 2,
                                   sign * (s + 2), yaw=0.0), 4))
            x += length + rng.uniform(1, 6)
    taken = []

    def free(x, y, r):
        if np.hypot(x, y) < 3 + r:
            return False
        return all(np.hypot(x - a, y - b) > r + q for a, b, q in taken)

    def place(n, r, ylim):
        out = []
        for _ in range(50 * n):
            if len(out) == n:
                break
            x, y = rng.uniform(-30, 30), rng.uniform(*ylim)
            if free(x, y, r):
                taken.append((x, y, r))
                out.append((x, y))
        return out

    lane = min(side) - 1.5
    for x, y in place(int(rng.integers(4, 10)), 2.6, (-lane + 1, lane - 1)):
        parts.append((_box(o, rng.uniform(3.8, 4.8), rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.8), x, y,
                           yaw=float(rng.normal(0, 0.15) + (np.pi if rng.random() < 0.5 else 0.0))), 1))
    for x, y in place(int(rng.integers(3, 8)), 0.6, (-min(side) + 0.5, min(side) - 0.5)):
        parts.append((_cyl(o, rng.uniform(0.25, 0.35), rng.uniform(1.6, 1.9), x, y), 2))
    for x, y in place(int(rng.integers(4, 9)), 0.4, (-min(side) + 0.3, min(side) - 0.3)):
        if abs(y) < lane - 2:
            y = np.sign(y or 1) * (lane - 0.5)
        parts.append((_cyl(o, rng.uniform(0.1, 0.18), rng.uniform(4, 7), x, y), 3))
    return parts


def lidar_rays(beams: int, azimuths: int, fov_deg=(-25.0, 3.0), height: float = SENSOR_HEIGHT) -> np.ndarray:
    """(beams * azimuths, 6) rays (origin, unit direction) of a spinning LiDAR at (0, 0, height)."""
    el = np.deg2rad(np.linspace(fov_deg[0], fov_deg[1], beams))
    az = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)
    e, a = np.meshgrid(el, az, indexing="ij")
    d = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    return np.concatenate([np.tile([0.0, 0.0, height], (len(d), 1)), d], 1).astype(np.float32)


def raycast_scene(seed, beams: int = 32, azimuths: int = 1024, fov_deg=(-25.0, 3.0), max_range: float = 60.0,
                  range_noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scan: points (N, 3) in the sensor frame and labels (N,)."""
    o = o3d()
    rng = np.random.default_rng(seed)
    scene = o.t.geometry.RaycastingScene()
    cls_of = {}
    for mesh, cls in scene_meshes(rng):
        gid = scene.add_triangles(o.t.geometry.TriangleMesh.from_legacy(mesh))
        cls_of[int(gid)] = cls
    rays = lidar_rays(beams, azimuths, fov_deg)
    ans = scene.cast_rays(o.core.Tensor(rays))
    t = ans["t_hit"].numpy()
    gid = ans["geometry_ids"].numpy().astype(np.int64)
    hit = np.isfinite(t) & (t < max_range)
    t = t[hit] + rng.normal(0, range_noise, size=int(hit.sum()))
    pts = rays[hit, 3:] * t[:, None]  # sensor frame: origin at the sensor
    lut = np.full(max(cls_of) + 1, -1)
    for k, v in cls_of.items():
        lut[k] = v
    return pts.astype(np.float32), lut[gid[hit]]


_CACHE: dict = {}


class DrivingScenes(Dataset):
    """``{"occupancy": (X, Y, Z) float32, "voxel_label": (X, Y, Z) int64}`` per synthetic scan."""

    def __init__(self, config: DrivingScenesConfig, split: str = "train"):
        self.config = c = config
        n = c.num_train if split == "train" else c.num_test
        sid = 0 if split == "train" else 1
        key = (tuple(c.grid), tuple(c.voxel_size), tuple(c.grid_min), n, c.beams, c.azimuths, tuple(c.fov_deg),
               c.max_range, c.range_noise, c.seed, sid)
        if key not in _CACHE:
            occ, lab = [], []
            for i in range(n):
                pts, labels = raycast_scene((c.seed, sid, i), c.beams, c.azimuths, c.fov_deg, c.max_range,
                                            c.range_noise)
                o_, l_ = voxelize(pts, labels, c)
                occ.append(o_)
                lab.append(l_)
            _CACHE[key] = (torch.from_numpy(np.stack(occ)), torch.from_numpy(np.stack(lab)))
        self.occupancy, self.voxel_labels = _CACHE[key]
        self.classes = SEG_CLASSES
        self.num_classes = len(SEG_CLASSES)

    def __len__(self):
        return len(self.occupancy)

    def __getitem__(self, i):
        return {"occupancy": self.occupancy[i], "voxel_label": self.voxel_labels[i], "index": i}


class LidarFolder(Dataset):
    """Your scans (KITTI .bin, .pcd, .ply), voxelised; unreadable scans are skipped with a counted warning."""

    def __init__(self, config: LidarFolderConfig, split: str = "train"):
        self.config = c = config
        root = Path(c.path or "")
        if not c.path or not root.exists():
            raise DataError(f"{root}: scan folder does not exist (use --data PATH)")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SCAN_EXTS) \
            if root.is_dir() else [root]
        if not files:
            raise DataError(f"{root}: no .bin / .pcd / .ply scans found")
        u = np.random.default_rng(c.seed).random(len(files))
        if len(files) > 1:
            files = [f for f, x in zip(files, u) if (x < c.val_fraction) == (split != "train")]
        occ, bad = [], []
        for f in files:
            try:
                o_, _ = voxelize(read_scan(f), None, c)
            except DataError as e:
                bad.append(str(e))
                continue
            occ.append(o_)
        if bad:
            print(f"warning: skipped {len(bad)} of {len(files)} {split} scans in {root} (first: {bad[0]})",
                  file=sys.stderr)
        if not occ:
            raise DataError(f"{root}: no usable {split} scans" + (f" (first: {bad[0]})" if bad else ""))
        self.occupancy = torch.from_numpy(np.stack(occ))
        self.voxel_labels = torch.full(self.occupancy.shape, -1, dtype=torch.long)
        self.skipped = len(bad)

    def __len__(self):
        return len(self.occupancy)

    def __getitem__(self, i):
        return {"occupancy": self.occupancy[i], "voxel_label": self.voxel_labels[i], "index": i}
