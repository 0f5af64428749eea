"""Embedded labelled shapes built from Open3D mesh primitives (no download, deterministic).

Classes: box, sphere, cylinder, cone, torus, icosahedron, octahedron, tetrahedron, mobius, arrow, and five
combinations (dumbbell, table, snowman, cross, lamp). Each sample draws the primitive's proportions, a random
anisotropic scale, a smooth deformation (taper, bend, twist), a random rotation and Gaussian noise, samples N points
on the surface by area and normalises the cloud to the unit sphere. Sample i of a split always gets the same cloud;
the clouds are generated once and cached in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mae_core.config import field

from ..io import sample_mesh
from ..o3d import o3d

CLASSES = ["box", "sphere", "cylinder", "cone", "torus", "icosahedron", "octahedron", "tetrahedron", "mobius",
           "arrow", "dumbbell", "table", "snowman", "cross", "lamp"]


@dataclass
class Shapes3DConfig:
    num_points: int = field(512, "points sampled per shape (the paper's setting is 1024: preset point-mae-1k)")
    train_per_class: int = field(80, "training shapes per class")
    test_per_class: int = field(20, "test shapes per class")
    num_classes: int = field(15, "use the first N of the 15 classes")
    noise: float = field(0.01, "standard deviation of the Gaussian noise added to the points (unit-sphere units)")
    deform: float = field(0.25, "strength of the random taper / bend / twist")
    rotate: str = field("so3", "random rotation: so3 (any), z (about the up axis) or none",
                        choices=["so3", "z", "none"])
    seed: int = field(0, "seed of the generator")


def _parts(name: str, rng: np.random.Generator) -> list:
    G = o3d().geometry.TriangleMesh
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731

    def at(mesh, x=0.0, y=0.0, z=0.0, centre=True):
        if centre:
            mesh.translate(-mesh.get_center())
        mesh.translate((x, y, z))
        return mesh

    def along_x(mesh):
        mesh.rotate(mesh.get_rotation_matrix_from_xyz((0.0, np.pi / 2, 0.0)), center=(0, 0, 0))
        return mesh

    if name == "box":
        return [at(G.create_box(u(0.6, 1.4), u(0.6, 1.4), u(0.6, 1.4)))]
    if name == "sphere":
        return [G.create_sphere(1.0, resolution=20)]
    if name == "cylinder":
        return [at(G.create_cylinder(u(0.3, 0.6), u(1.2, 2.2), resolution=32, split=2))]
    if name == "cone":
        return [at(G.create_cone(u(0.4, 0.8), u(1.0, 2.0), resolution=32, split=2))]
    if name == "torus":
        return [G.create_torus(1.0, u(0.2, 0.45), radial_resolution=40, tubular_resolution=20)]
    if name == "icosahedron":
        return [G.create_icosahedron(1.0)]
    if name == "octahedron":
        return [G.create_octahedron(1.0)]
    if name == "tetrahedron":
        return [G.create_tetrahedron(1.0)]
    if name == "mobius":
        return [G.create_mobius(length_split=70, width_split=15, twists=1, radius=1.0, flatness=1.0,
                                width=u(0.5, 1.0), scale=1.0)]
    if name == "arrow":
        return [at(G.create_arrow(cylinder_radius=u(0.08, 0.15), cone_radius=u(0.25, 0.35),
                                  cylinder_height=u(1.2, 1.8), cone_height=u(0.4, 0.7), resolution=24), centre=True)]
    if name == "dumbbell":
        r, length = u(0.3, 0.45), u(1.4, 2.0)
        return [at(G.create_sphere(r, 16), x=-length / 2), at(G.create_sphere(r, 16), x=length / 2),
                along_x(at(G.create_cylinder(u(0.06, 0.12), length, 16)))]
    if name == "table":
        w, d, h = u(1.4, 2.0), u(0.8, 1.2), u(0.7, 1.1)
        parts = [at(G.create_box(w, d, 0.08), z=h / 2)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                parts.append(at(G.create_cylinder(0.05, h, 12), x=sx * (w / 2 - 0.1), y=sy * (d / 2 - 0.1)))
        return parts
    if name == "snowman":
        r1, r2, r3 = u(0.45, 0.6), u(0.32, 0.42), u(0.2, 0.28)
        return [at(G.create_sphere(r1, 16)), at(G.create_sphere(r2, 16), z=r1 + r2 * 0.8),
                at(G.create_sphere(r3, 16), z=r1 + 1.6 * r2 + r3 * 0.8)]
    if name == "cross":
        t, length = u(0.2, 0.35), u(1.4, 2.0)
        return [at(G.create_box(length, t, t)), at(G.create_box(t, length, t)), at(G.create_box(t, t, length))]
    if name == "lamp":
        h = u(1.0, 1.6)
        base = at(G.create_box(u(0.6, 0.9), u(0.6, 0.9), 0.08), z=0.0)
        pole = at(G.create_cylinder(0.04, h, 12), z=h / 2)
        shade = at(G.create_cone(u(0.35, 0.5), u(0.35, 0.5), 24), z=h)
        return [base, pole, shade]
    raise KeyError(name)


def _random_rotation(rng: np.random.Generator, mode: str) -> np.ndarray:
    if mode == "none":
        return np.eye(3)
    if mode == "z":
        a = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(a), np.sin(a)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _deform(p: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth random deformation: taper along z, bend in x over z, twist about z."""
    if strength <= 0:
        return p
    z = p[:, 2] / max(np.abs(p[:, 2]).max(), 1e-6)
    taper = 1 + strength * rng.uniform(-1, 1) * z
    x, y = p[:, 0] * taper, p[:, 1] * taper
    ang = strength * rng.uniform(-1, 1) * z * np.pi / 2
    c, s = np.cos(ang), np.sin(ang)
    x, y = c * x - s * y, s * x + c * y
    x = x + strength * rng.uniform(-1, 1) * 0.5 * z ** 2
    return np.stack([x, y, p[:, 2]], 1)


def normalize_np(p: np.ndarray) -> np.ndarray:
    p = p - p.mean(0, keepdims=True)
    return (p / max(np.linalg.norm(p, axis=1).max(), 1e-12)).astype(np.float32)


def make_shape(name: str, num_points: int, seed, noise: float = 0.01, deform: float = 0.25,
               rotate: str = "so3") -> np.ndarray:
    """One deterministic cloud (num_points, 3) of class ``name`` for ``seed`` (an int or a tuple of ints)."""
    rng = np.random.default_rng(seed)
    parts = _parts(name, rng)
    verts, tris, off = [], [], 0
    for m in parts:
        v, t = np.asarray(m.vertices), np.asarray(m.triangles)
        verts.append(v)
        tris.append(t + off)
        off += len(v)
    pts = sample_mesh(np.concatenate(verts), np.concatenate(tris), num_points, seed=int(rng.integers(2**31)))
    pts = normalize_np(pts)
    pts = pts * rng.uniform(0.6, 1.4, size=3)
    pts = _deform(pts, rng, deform)
    pts = pts @ _random_rotation(rng, rotate).T
    pts = normalize_np(pts)
    pts = pts + rng.normal(scale=noise, size=pts.shape)
    return normalize_np(pts)


_CACHE: dict = {}


class Shapes3D(Dataset):
    """``{"points": (N, 3) float32, "label": int, "index": i}``; classes balanced, in class order."""

    def __init__(self, config: Shapes3DConfig, split: str = "train"):
        self.config = c = config
        if not 1 <= c.num_classes <= len(CLASSES):
            from mae_core.errors import ConfigError
            raise ConfigError(f"data.num_classes must be between 1 and {len(CLASSES)}, got {c.num_classes}")
        self.classes = CLASSES[: c.num_classes]
        self.num_classes = len(self.classes)
        per = c.train_per_class if split == "train" else c.test_per_class
        key = (c.num_points, per, c.num_classes, c.noise, c.deform, c.rotate, c.seed, split)
        if key not in _CACHE:
            sid = 0 if split == "train" else 1
            pts = np.stack([make_shape(name, c.num_points, (c.seed, sid, k, i), c.noise, c.deform, c.rotate)
                            for k, name in enumerate(self.classes) for i in range(per)])
            _CACHE[key] = torch.from_numpy(pts)
        self.points = _CACHE[key]
        self.labels = torch.arange(self.num_classes).repeat_interleave(per)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"points": self.points[i], "label": int(self.labels[i]), "index": i}
