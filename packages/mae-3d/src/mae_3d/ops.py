"""Point-cloud operations in batched torch (no CUDA extensions): unit-sphere normalisation, farthest point sampling,
k-nearest-neighbour grouping and Chamfer distances. Every function works on a whole batch at once."""
from __future__ import annotations

import torch


def normalize_unit_sphere(points: torch.Tensor) -> torch.Tensor:
    """Centre each cloud (..., N, 3) on its centroid and scale it so the farthest point lies on the unit sphere."""
    centred = points - points.mean(dim=-2, keepdim=True)
    scale = centred.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return centred / scale[..., None]


def farthest_point_sample(points: torch.Tensor, num: int, start: int | torch.Tensor = 0) -> torch.Tensor:
    """Indices (B, num) of farthest point sampling on (B, N, 3), starting at index ``start`` (0, as the CUDA kernel
    of PointNet++ does). Each step adds the point whose squared distance to the selected set is largest (first index
    on ties), exactly Open3D's ``farthest_point_down_sample``. One loop over ``num``, vectorised over the batch."""
    b, n, _ = points.shape
    if num > n:
        raise ValueError(f"cannot sample {num} points from a cloud of {n}")
    # coordinates as three contiguous (B, N) rows and preallocated buffers: ~8 small in-place ops per step
    xs, ys, zs = (t.contiguous() for t in points.unbind(-1))
    idx = torch.empty(b, num, dtype=torch.long, device=points.device)
    dist = torch.full((b, n), float("inf"), dtype=points.dtype, device=points.device)
    d, tmp = torch.empty_like(dist), torch.empty_like(dist)
    cur = torch.as_tensor(start, device=points.device).long().reshape(-1, 1).expand(b, 1).contiguous()
    for i in range(num):
        idx[:, i:i + 1] = cur
        torch.sub(xs, xs.gather(1, cur), out=d)
        d.square_()
        torch.sub(ys, ys.gather(1, cur), out=tmp)
        d.addcmul_(tmp, tmp)
        torch.sub(zs, zs.gather(1, cur), out=tmp)
        d.addcmul_(tmp, tmp)
        torch.minimum(dist, d, out=dist)
        cur = dist.argmax(dim=1, keepdim=True)
    return idx


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, C) at (B, ...) indices -> (B, ..., C)."""
    b = points.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(points, 1, flat[..., None].expand(-1, -1, points.shape[-1]))
    return out.reshape(*idx.shape, points.shape[-1])


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances (B, N, M) between (B, N, C) and (B, M, C), clamped at 0."""
    d = (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2 * a @ b.transpose(1, 2)
    return d.clamp_min(0)


def knn(query: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, Q, k) of the ``k`` nearest points of ``ref`` (B, N, 3) to each ``query`` (B, Q, 3), nearest first."""
    if k > ref.shape[1]:
        raise ValueError(f"cannot take {k} neighbours from a cloud of {ref.shape[1]}")
    # cdist (matrix-multiply form) is the fastest batched distance on CPU; sqrt keeps the order of squared distances
    d = torch.cdist(query, ref, compute_mode="use_mm_for_euclid_dist_if_necessary")
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def group_points(points: torch.Tensor, num_groups: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-MAE grouping: FPS centres (B, G, 3) and kNN neighbourhoods relative to their centre (B, G, M, 3)."""
    centers = gather_points(points, farthest_point_sample(points, num_groups))
    neighborhood = gather_points(points, knn(centers, points, group_size)) - centers[:, :, None]
    return neighborhood, centers


def chamfer_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Chamfer distance per set between (S, N, 3) and (S, M, 3).

    ``l2`` (Point-MAE's ChamferDistanceL2): mean squared nearest-neighbour distance a->b plus b->a.
    ``l1`` (ChamferDistanceL1): (mean nearest distance a->b + mean b->a) / 2, distances not squared.
    """
    d = square_distance(a, b)
    d_ab, d_ba = d.min(dim=2).values, d.min(dim=1).values
    if kind == "l2":
        return d_ab.mean(-1) + d_ba.mean(-1)
    if kind == "l1":
        return (d_ab.clamp_min(1e-12).sqrt().mean(-1) + d_ba.clamp_min(1e-12).sqrt().mean(-1)) / 2
    raise ValueError(f"unknown Chamfer kind {kind!r} (l1 or l2)")
