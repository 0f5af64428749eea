"""Embedded labelled shapes built from Open3D mesh primitives (no download, deterministic).

Classes (``variant: primitives``, the default): box, sphere, cylinder, cone, torus, icosahedron, octahedron,
tetrahedron, mobius, arrow, and five combinations (dumbbell, table, snowman, cross, lamp).

``variant: arrangements`` is a harder set in which a bag of local features is not enough: every shape is the same
four balls joined by three rods of the same length (the same parts, the same surface area), and the eight classes
differ only in how the parts are arranged: straight line, L (one right-angle bend), U (two bends to the same side),
S (two bends to opposite sides), crank (the second bend out of the plane of the first), T, Y (three rods at 120
degrees in a plane) and tripod (three rods splayed out of the plane). U, S and crank have the same joints (two
right angles) and differ only globally. Each sample draws the primitive's proportions, a random
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
ARRANGEMENTS = ["line", "L", "U", "S", "crank", "T", "Y", "tripod"]
VARIANTS = {"primitives": CLASSES, "arrangements": ARRANGEMENTS}


@dataclass
class Shapes3DConfig:
    num_points: int = field(512, "points sampled per shape (the paper's setting is 1024: preset point-mae-1k)", ge=1)
    train_per_class: int = field(80, "training shapes per class", ge=1)
    test_per_class: int = field(20, "test shapes per class", ge=1)
    variant: str = field("primitives", "primitives (15 classes of Open3D primitives and combinations) or "
                         "arrangements (8 classes made of the same 4 balls and 3 rods, arranged differently)",
                         choices=list(VARIANTS))
    num_classes: int = field(15, "use the first N classes of the variant (at most 15 primitives / 8 arrangements)",
                             ge=1, le=15)
    noise: float = field(0.01, "standard deviation of the Gaussian noise added to the points (unit-sphere units)", ge=0)
    deform: float = field(0.25, "strength of the random taper / bend / twist", ge=0)
    rotate: str = field("so3", "random rotation: so3 (any), z (about the up axis) or none",
                        choices=["so3", "z", "none"])
    seed: int = field(0, "seed of the generator")


# ball centres (unit rod length) and the rods between them, per arrangement
_ARRANGEMENT_GRAPHS = {
    "line": ([(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0)], [(0, 1), (1, 2), (2, 3)]),
    "L": ([(0, 0, 0), (1, 0, 0), (2, 0, 0), (2, 1, 0)], [(0, 1), (1, 2), (2, 3)]),
    "U": ([(0, 1, 0), (0, 0, 0), (1, 0, 0), (1, 1, 0)], [(0, 1), (1, 2), (2, 3)]),
    "S": ([(0, 1, 0), (0, 0, 0), (1, 0, 0), (1, -1, 0)], [(0, 1), (1, 2), (2, 3)]),
    "crank": ([(0, 1, 0), (0, 0, 0), (1, 0, 0), (1, 0, 1)], [(0, 1), (1, 2), (2, 3)]),
    "T": ([(-1, 0, 0), (0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1), (1, 2), (1, 3)]),
    "Y": ([(0, 0, 0)] + [(np.cos(a), np.sin(a), 0) for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)],
          [(0, 1), (0, 2), (0, 3)]),
    "tripod": ([(0, 0, 0)] + [(0.8 * np.cos(a), 0.8 * np.sin(a), -0.6) for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)],
               [(0, 1), (0, 2), (0, 3)]),
}


def _arrangement(name: str, rng: np.random.Generator) -> list:
    """Four balls of one radius joined by three rods of one length and thickness, placed as the class says."""
    G = o3d().geometry.TriangleMesh
    centres, rods = _ARRANGEMENT_GRAPHS[name]
    length, ball, thick = float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.22, 0.3)), float(rng.uniform(0.06, 0.09))
    c = np.asarray(centres, dtype=float) * length
    parts = []
    for p in c:
        parts.append(G.create_sphere(ball, resolution=16).translate(p))
    for i, j in rods:
        d = c[j] - c[i]
        rod = G.create_cylinder(thick, float(np.linalg.norm(d)), resolution=16, split=2)  # along z, centred
        z = d / np.linalg.norm(d)
        axis = np.cross([0.0, 0.0, 1.0], z)
        if np.linalg.norm(axis) > 1e-9:
            angle = np.arccos(np.clip(z[2], -1, 1))
            rod.rotate(G.get_rotation_matrix_from_axis_angle(axis / np.linalg.norm(axis) * angle), center=(0, 0, 0))
        elif z[2] < 0:
            rod.rotate(G.get_rotation_matrix_from_xyz((np.pi, 0.0, 0.0)), center=(0, 0, 0))
        parts.append(rod.translate((c[i] + c[j]) / 2))
    return parts


def _parts(name: str, rng: np.random.Generator) -> list:
    if name in _ARRANGEMENT_GRAPHS:
        return _arrangement(name, rng)
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
        names = VARIANTS.get(c.variant)
        if names is None or not 1 <= c.num_classes:
            from mae_core.errors import ConfigError
            raise ConfigError(f"data.variant must be one of {list(VARIANTS)} and data.num_classes >= 1, got "
                              f"{c.variant!r} / {c.num_classes}")
        self.classes = names[: c.num_classes]  # num_classes above the variant's count: all of its classes
        self.num_classes = len(self.classes)
        per = c.train_per_class if split == "train" else c.test_per_class
        key = (c.variant, c.num_points, per, len(self.classes), c.noise, c.deform, c.rotate, c.seed, split)
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
