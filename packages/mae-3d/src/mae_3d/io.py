"""Readers for point clouds, meshes and LiDAR scans, with one-line errors that name the file.

* point clouds: ``.ply``, ``.pcd``, ``.xyz``, ``.pts`` (Open3D), ``.npy`` / ``.txt`` (x y z per row);
* meshes: ``.off``, ``.obj``, ``.stl`` (Open3D), sampled into points by area (deterministic for a seed); a ModelNet
  ``.off`` whose first line is ``OFF<counts>`` or ``OFF n m k`` is fixed before Open3D reads it;
* LiDAR scans: KITTI ``.bin`` (x, y, z, intensity float32), or any of the point-cloud formats.

Before Open3D sees a PLY / PCD / PTS / OFF / binary STL file, its header is checked here: the counts it declares must
fit the file's size, and a PCD must declare its POINTS. Open3D sizes its buffers from those counts (a PCD without
POINTS reads an uninitialised count), so a corrupt header would otherwise allocate any amount of memory.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mae_core.data import load_npy
from mae_core.errors import DataError

from .o3d import o3d

CLOUD_EXTS = (".ply", ".pcd", ".xyz", ".pts", ".npy", ".txt")
MESH_EXTS = (".off", ".obj", ".stl")
SCAN_EXTS = (".bin", ".pcd", ".ply")
ALL_EXTS = CLOUD_EXTS + MESH_EXTS


def check_points(points: np.ndarray, path, min_points: int = 1) -> np.ndarray:
    """(N, 3) float32 with at least ``min_points`` finite rows, or a DataError naming ``path``."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise DataError(f"{path}: expected N x 3 coordinates, got shape {tuple(points.shape)}")
    points = points[:, :3].astype(np.float32)
    if len(points) == 0:
        raise DataError(f"{path}: the point cloud is empty")
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points).all(1)).sum())
        raise DataError(f"{path}: {bad} points have NaN or inf coordinates")
    if len(points) < min_points:
        raise DataError(f"{path}: {len(points)} points, fewer than the {min_points} needed")
    return points


def _exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")


_HEADER_BYTES = 1 << 16


def _header(path: Path, end: str) -> tuple[list[list[str]], int]:
    """The split lines of a text header up to the line whose first word is ``end`` (included), and its byte length;
    a DataError when no such line comes within the first 64 KiB."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_BYTES)
    lines, pos = [], 0
    for raw in head.splitlines(keepends=True):
        pos += len(raw)
        words = raw.decode("ascii", errors="replace").split()
        lines.append(words)
        if words and words[0].upper() == end.upper():
            return lines, pos
    raise DataError(f"{path}: header has no {end!r} line")


def _count(path: Path, word: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise DataError(f"{path}: header {word} {value!r} is not a whole number") from None
    if n < 0:
        raise DataError(f"{path}: header {word} is negative ({n})")
    return n


def _fits(path: Path, declared: int, body: int, what: str, per_byte: int = 1) -> None:
    if declared > per_byte * max(body, 0):
        raise DataError(f"{path}: header declares {declared} {what}, more than its {body} bytes of data can hold")


def check_header(path: Path) -> None:
    """Refuse a PLY / PCD / PTS / OFF / binary STL whose header is incomplete or declares more elements than the file
    holds (each element takes at least one byte; LZF-compressed PCD data at most 100 times less)."""
    ext, size = path.suffix.lower(), path.stat().st_size
    if ext == ".ply":
        lines, n = _header(path, "end_header")
        if not lines[0] or lines[0][0] != "ply":
            raise DataError(f"{path}: not a PLY file (first line is not 'ply')")
        if not any(w[:1] == ["format"] for w in lines):
            raise DataError(f"{path}: PLY header has no 'format' line")
        counts = [_count(path, "element " + w[1], w[2]) for w in lines if w[:1] == ["element"] and len(w) >= 3]
        _fits(path, sum(counts), size - n, "elements")
    elif ext == ".pcd":
        lines, n = _header(path, "DATA")
        keys = {w[0].upper(): w[1:] for w in lines if w and not w[0].startswith("#")}
        if not keys.get("POINTS"):
            raise DataError(f"{path}: PCD header has no POINTS line")
        points = _count(path, "POINTS", keys["POINTS"][0])
        if keys.get("WIDTH") and keys.get("HEIGHT"):
            wh = _count(path, "WIDTH", keys["WIDTH"][0]) * _count(path, "HEIGHT", keys["HEIGHT"][0])
            if wh != points:
                raise DataError(f"{path}: PCD header WIDTH x HEIGHT = {wh} but POINTS = {points}")
        mode = (keys.get("DATA") or ["?"])[0].lower()
        if mode not in ("ascii", "binary", "binary_compressed"):
            raise DataError(f"{path}: PCD DATA {mode!r} is not ascii, binary or binary_compressed")
        _fits(path, points, size - n, "points", 100 if mode == "binary_compressed" else 1)
    elif ext == ".pts":
        with open(path, "rb") as fh:
            first = fh.readline(256).split()
        if len(first) == 1:
            _fits(path, _count(path, "point count", first[0].decode("ascii", "replace")), size, "points")
    elif ext == ".off":
        counts = _off_counts(path)
        if counts is not None:
            _fits(path, counts[0] + counts[1], size, "vertices and faces")
    elif ext == ".stl":
        with open(path, "rb") as fh:
            head = fh.read(84)
        if len(head) == 84 and not head.lstrip().lower().startswith(b"solid"):
            _fits(path, 50 * int.from_bytes(head[80:84], "little"), size - 84, "bytes of triangles")


def _off_counts(path: Path) -> tuple[int, int] | None:
    """(vertices, faces) that an OFF header declares (counts on the ``OFF`` line or the next one), or None if none."""
    with open(path, "rb") as fh:
        tokens = [t.decode("ascii", "replace") for ln in fh.read(4096).splitlines()
                  if not ln.lstrip().startswith(b"#") for t in ln.split()][:4]
    if not tokens or not tokens[0].upper().startswith("OFF"):
        return None
    counts = ([tokens[0][3:]] if len(tokens[0]) > 3 else []) + tokens[1:3]
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (ValueError, IndexError):
        return None
    if nv < 0 or nf < 0:
        raise DataError(f"{path}: OFF header declares negative counts ({nv} vertices, {nf} faces)")
    return nv, nf


def fix_off_header(path: Path) -> Path | None:
    """If ``path`` is an OFF file whose counts share the first line with ``OFF`` (some ModelNet files), write a
    fixed copy to a temporary file and return its path; otherwise None."""
    with open(path, "rb") as fh:
        first = fh.readline()
        rest = fh.read()
    head = first.strip()
    if not head.upper().startswith(b"OFF") or head.upper() == b"OFF":
        return None
    counts = head[3:].strip()
    fd, tmp = tempfile.mkstemp(suffix=".off")
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"OFF\n" + counts + b"\n" + rest)
    return Path(tmp)


def sample_mesh(vertices: np.ndarray, triangles: np.ndarray, num: int, seed: int = 0) -> np.ndarray:
    """``num`` points uniformly on the surface of a triangle mesh (area-weighted, deterministic for ``seed``)."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has zero surface area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(t), size=num, p=area / total)
    u, w = rng.random(num), rng.random(num)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    pts = a[face] + u[:, None] * (b[face] - a[face]) + w[:, None] * (c[face] - a[face])
    return pts.astype(np.float32)


def _declares_no_faces(path: Path) -> bool:
    """Open3D returns an empty mesh for a file with vertices and no faces; tell that case apart (OFF / OBJ)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    ext = path.suffix.lower()
    if ext == ".obj":
        lines = [ln.split(None, 1)[0] for ln in text.splitlines() if ln.strip()]
        return "v" in lines and "f" not in lines
    if ext == ".off":
        counts = _off_counts(path)
        return counts is not None and counts[0] > 0 and counts[1] == 0
    return False


def read_mesh(path, num_points: int = 1024, seed: int = 0) -> np.ndarray:
    """Sample ``num_points`` on an OFF / OBJ / STL mesh."""
    path = Path(path)
    _exists(path)
    check_header(path)
    tmp = fix_off_header(path) if path.suffix.lower() == ".off" else None
    try:
        mesh = o3d().io.read_triangle_mesh(str(tmp or path))
    except Exception as e:  # Open3D raises RuntimeError on some malformed files
        raise DataError(f"{path}: cannot read mesh ({e})") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    if len(v) == 0 and _declares_no_faces(path):
        raise DataError(f"{path}: mesh has no triangles")
    if len(v) == 0:
        raise DataError(f"{path}: cannot read mesh (no vertices; unreadable or not a {path.suffix} file)")
    if len(t) == 0:
        raise DataError(f"{path}: mesh has no triangles")
    if not np.isfinite(v).all():
        raise DataError(f"{path}: mesh vertices have NaN or inf coordinates")
    try:
        return sample_mesh(v, t, num_points, seed)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def read_cloud(path) -> np.ndarray:
    """(N, 3) float32 points of a PLY / PCD / XYZ / PTS / NPY / TXT point cloud."""
    path = Path(path)
    _exists(path)
    ext = path.suffix.lower()
    if ext == ".npy":
        return check_points(load_npy(path, ".npy point cloud"), path)
    if ext == ".txt":
        try:
            pts = np.loadtxt(path, delimiter="," if b"," in path.read_bytes()[:4096] else None, ndmin=2)
        except Exception as e:
            raise DataError(f"{path}: cannot read text point cloud ({type(e).__name__})") from None
        return check_points(pts, path)
    if ext not in CLOUD_EXTS:
        raise DataError(f"{path}: unsupported point-cloud format {ext!r} (use {', '.join(CLOUD_EXTS)})")
    check_header(path)
    try:
        pc = o3d().io.read_point_cloud(str(path), format="auto", remove_nan_points=False, remove_infinite_points=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read point cloud ({e})") from None
    pts = np.asarray(pc.points)
    if len(pts) == 0 and path.stat().st_size > 0 and ext in (".ply", ".pcd"):
        raise DataError(f"{path}: cannot read point cloud (unreadable or empty {ext} file)")
    return check_points(pts.reshape(-1, 3), path)


def read_any(path, num_points: int = 1024, seed: int = 0) -> np.ndarray:
    """Points of a cloud file, or points sampled on a mesh file."""
    ext = Path(path).suffix.lower()
    if ext in MESH_EXTS:
        return read_mesh(path, num_points, seed)
    return read_cloud(path)


def write_cloud(path, points: np.ndarray) -> Path:
    """Write (N, 3) points as PLY / PCD / XYZ / PTS (Open3D), ``.npy``, or KITTI ``.bin`` (intensity 0)."""
    path = Path(path)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    ext = path.suffix.lower()
    if ext == ".bin":
        arr = np.concatenate([pts, np.zeros((len(pts), 1))], 1).astype(np.float32)
        arr.tofile(path)
        return path
    if ext == ".npy":
        np.save(path, pts.astype(np.float32))
        return path
    pc = o3d().geometry.PointCloud(o3d().utility.Vector3dVector(pts))
    if not o3d().io.write_point_cloud(str(path), pc, write_ascii=ext in (".xyz", ".pts")):
        raise DataError(f"{path}: cannot write point cloud")
    return path


def read_scan(path) -> np.ndarray:
    """A LiDAR scan as (N, 3) float32: KITTI ``.bin`` (x, y, z, intensity float32) or a PCD / PLY cloud."""
    path = Path(path)
    _exists(path)
    if path.suffix.lower() == ".bin":
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size == 0:
            raise DataError(f"{path}: the scan is empty")
        if raw.size % 4:
            raise DataError(f"{path}: {raw.size} float32 values is not a multiple of 4 (x, y, z, intensity)")
        return check_points(raw.reshape(-1, 4)[:, :3], path)
    return read_cloud(path)
