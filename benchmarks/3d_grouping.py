"""Batched torch grouping vs a per-cloud Open3D loop: 32 clouds x 1024 points -> 64 FPS centres x 32 neighbours.

    OMP_NUM_THREADS=1 uv run python benchmarks/3d_grouping.py --threads 1 --repeats 40
    OMP_NUM_THREADS=2 uv run python benchmarks/3d_grouping.py --threads 2 --repeats 40

(Run it with nothing else running on the machine.)

torch: ``mae_3d.ops.group_points`` under ``torch.inference_mode`` (FPS vectorised over the batch, which also yields
the centre-to-point squared distances; kNN = exact pruned smallest-k of those rows, nearest first: chunk-minimum bound, ``nonzero`` compaction, one sort
of packed int64 keys).
Open3D: for each cloud ``farthest_point_down_sample(64)`` then a ``KDTreeFlann`` and ``search_knn_vector_3d`` per
centre, gathering the neighbourhood relative to its centre (the same output). Both run in this process with the
same OMP_NUM_THREADS. Torch and Open3D are timed alternately in each repeat (the same machine load for both); reports the medians,
the median per-repeat speed-up, the minima, the 1-minute load average, and a breakdown of the torch time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from bench_common import median_seconds
from mae_3d.o3d import o3d
from mae_3d.ops import farthest_point_sample, group_points, smallest_k


def open3d_loop(clouds: np.ndarray, g: int, m: int) -> np.ndarray:
    O = o3d()
    out = np.empty((len(clouds), g, m, 3))
    for b, pts in enumerate(clouds):
        pc = O.geometry.PointCloud(O.utility.Vector3dVector(pts))
        centres = np.asarray(pc.farthest_point_down_sample(g).points)
        tree = O.geometry.KDTreeFlann(pc)
        for i, c in enumerate(centres):
            _, idx, _ = tree.search_knn_vector_3d(c, m)
            out[b, i] = pts[np.asarray(idx)] - c
    return out


def median_ms(fn, repeats: int) -> float:
    return 1000 * median_seconds(fn, repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--groups", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    clouds = rng.normal(size=(a.batch, a.points, 3))
    clouds /= np.linalg.norm(clouds, axis=-1, keepdims=True).max(1, keepdims=True)
    x = torch.from_numpy(clouds).float()
    with torch.inference_mode():
        group_points(x, a.groups, a.group_size)  # warm-up
        open3d_loop(clouds[:2], a.groups, a.group_size)
        # interleaved, so that both sides see the same machine load; the ratio is taken per repeat
        tt, to = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            group_points(x, a.groups, a.group_size)
            tt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            open3d_loop(clouds, a.groups, a.group_size)
            to.append(time.perf_counter() - t0)
        t_torch, t_o3d = 1000 * statistics.median(tt), 1000 * statistics.median(to)
        ratio = statistics.median(o / t for o, t in zip(to, tt))
        t_fps = median_ms(lambda: farthest_point_sample(x, a.groups, return_distances=True), a.repeats)
        _, dist = farthest_point_sample(x, a.groups, return_distances=True)
        t_knn = median_ms(lambda: smallest_k(dist, a.group_size), a.repeats)
        t_topk = median_ms(lambda: dist.topk(a.group_size, dim=-1, largest=False), a.repeats)
    ref = open3d_loop(clouds, a.groups, a.group_size)
    # same output: in float64 (Open3D's precision) the torch centres equal Open3D's (as sets: Open3D returns them
    # in index order) for every cloud, and every neighbourhood is the same set of offsets
    n64, c64 = group_points(torch.from_numpy(clouds), a.groups, a.group_size)
    # the float32 path (the one timed) selects the same centres and neighbour indices as float64 (up to rounding
    # near-ties, counted)
    i64, d64 = farthest_point_sample(torch.from_numpy(clouds), a.groups, return_distances=True)
    i32, d32 = farthest_point_sample(x, a.groups, return_distances=True)
    k64 = d64.topk(a.group_size, dim=-1, largest=False).indices.sort(-1).values
    k32 = smallest_k(d32, a.group_size).sort(-1).values
    same32 = {"fps_clouds_equal": int((i64 == i32).all(1).sum()),
              "knn_sets_equal": int((k64 == k32).all(-1).sum()), "knn_sets": int(k64.shape[0] * k64.shape[1])}
    same = True
    for b in range(a.batch):
        pc = o3d().geometry.PointCloud(o3d().utility.Vector3dVector(clouds[b]))
        cen = np.asarray(pc.farthest_point_down_sample(a.groups).points)
        order = np.lexsort(c64[b].numpy().T)
        same &= np.allclose(c64[b].numpy()[order], cen[np.lexsort(cen.T)])
        ref_sets = {tuple(np.round(np.sort(ref[b, i], axis=0), 9).ravel()) for i in range(a.groups)}
        ours = {tuple(np.round(np.sort(n64[b, i].numpy(), axis=0), 9).ravel()) for i in range(a.groups)}
        same &= ref_sets == ours
    res = {"batch": a.batch, "points": a.points, "groups": a.groups, "group_size": a.group_size,
           "torch_threads": torch.get_num_threads(), "torch_ms": round(t_torch, 2),
           "torch_fps_with_distances_ms": round(t_fps, 2), "torch_knn_ms": round(t_knn, 2),
           "torch_knn_plain_topk_ms": round(t_topk, 2), "open3d_loop_ms": round(t_o3d, 2),
           "speedup_of_medians": round(t_o3d / t_torch, 2), "speedup_median_per_repeat": round(ratio, 2),
           "torch_min_ms": round(1000 * min(tt), 2), "open3d_loop_min_ms": round(1000 * min(to), 2),
           "load_average_1min": round(__import__("os").getloadavg()[0], 2), "same_groups": bool(same),
           "float32_vs_float64": same32}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
