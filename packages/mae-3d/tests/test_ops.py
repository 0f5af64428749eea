import numpy as np
import pytest
import torch

from mae_3d.o3d import o3d
from mae_3d.ops import (chamfer_distance, farthest_point_sample, gather_points, group_points, knn,
                        normalize_unit_sphere, smallest_k)


def test_fps_matches_open3d_from_same_start():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(3, 500, 3, generator=g, dtype=torch.float64)
    for start in (0, 17):
        idx = farthest_point_sample(pts, 40, start=start)
        for b in range(3):
            pc = o3d().geometry.PointCloud(o3d().utility.Vector3dVector(pts[b].numpy()))
            down = np.asarray(pc.farthest_point_down_sample(40, start_index=start).points)
            # Open3D returns the selected points in their original order (SelectByIndex): compare the sets
            np.testing.assert_array_equal(pts[b][idx[b].sort().values].numpy(), down)
            assert len(set(idx[b].tolist())) == 40 and idx[b, 0] == start
    assert (farthest_point_sample(pts, 5)[:, 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_ties_take_the_first_index_as_open3d(dtype):
    """On a grid (many exactly equal distances) the pick on ties is the first index, as in Open3D."""
    g = torch.stack(torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij"), -1).reshape(1, -1, 3).to(dtype)
    idx = farthest_point_sample(g, 20)
    pc = o3d().geometry.PointCloud(o3d().utility.Vector3dVector(g[0].double().numpy()))
    down = np.asarray(pc.farthest_point_down_sample(20).points)
    np.testing.assert_array_equal(g[0][idx[0].sort().values].double().numpy(), down)


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 200, 3, generator=g)
    query = torch.randn(2, 30, 3, generator=g)
    idx = knn(query, ref, 8)
    for b in range(2):
        d = ((query[b][:, None] - ref[b][None]) ** 2).sum(-1)
        brute = d.argsort(dim=1)[:, :8]
        assert torch.equal(idx[b], brute)


def test_fps_distances_are_the_centre_to_point_distances():
    pts = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    idx, dist = farthest_point_sample(pts, 12, return_distances=True)
    assert torch.equal(idx, farthest_point_sample(pts, 12))
    brute = ((gather_points(pts, idx)[:, :, None] - pts[:, None]) ** 2).sum(-1)
    assert dist.shape == (2, 12, 300) and torch.allclose(dist, brute, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n,k", [(1024, 32), (301, 8), (200, 20), (40, 8)])
def test_smallest_k_equals_topk(n, k):
    """The pruned selection is exact: same sets as a full topk, nearest first; also when the points are sorted
    spatially (the chunk bound must not depend on the point order) and with many exact ties."""
    g = torch.Generator().manual_seed(n)
    pts = torch.randn(3, n, 3, generator=g)
    order = pts[..., 0].argsort(1)
    for p in (pts, gather_points(pts, order)):
        d = square_distance_ref(p[:, :17], p)
        idx = smallest_k(d, k)
        ref = d.topk(k, dim=-1, largest=False).indices
        assert torch.equal(idx.sort(-1).values, ref.sort(-1).values)
        vals = d.gather(-1, idx)
        assert (vals[..., 1:] >= vals[..., :-1]).all()  # nearest first
    ties = torch.randint(0, 5, (4, 6, n), generator=g).float()
    idx = smallest_k(ties, k)
    assert torch.equal(ties.gather(-1, idx), ties.topk(k, dim=-1, largest=False).values)
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # distinct columns
    unsorted = smallest_k(ties, k, sorted=False)
    assert torch.equal(ties.gather(-1, unsorted).sort(-1).values, ties.topk(k, dim=-1, largest=False).values)


def test_smallest_k_fallbacks_and_signed_zero():
    """Rows the packed-key path cannot take (negative values, float64) fall back to topk; -0.0 sorts as 0."""
    g = torch.Generator().manual_seed(5)
    neg = torch.randn(3, 512, generator=g)
    assert torch.equal(smallest_k(neg, 16), neg.topk(16, dim=-1, largest=False).indices)
    f64 = torch.rand(3, 512, generator=g, dtype=torch.float64)
    assert torch.equal(smallest_k(f64, 16), f64.topk(16, dim=-1, largest=False).indices)
    for n in (512, 520):  # 520: -0.0 also in the columns left over after the 2k chunks
        z = torch.rand(2, n, generator=g)
        z[:, 7], z[:, 300], z[:, n - 1] = -0.0, 0.0, -0.0
        idx = smallest_k(z, 16)
        assert sorted(idx[0, :3].tolist()) == [7, 300, n - 1]  # the zeros first
        assert torch.equal(z.gather(-1, idx), z.topk(16, dim=-1, largest=False).values)


def square_distance_ref(a, b):
    return ((a[:, :, None] - b[:, None]) ** 2).sum(-1)


def test_group_points_relative_to_centre():
    pts = normalize_unit_sphere(torch.randn(2, 256, 3))
    neigh, centers = group_points(pts, 16, 8)
    assert neigh.shape == (2, 16, 8, 3) and centers.shape == (2, 16, 3)
    # the centre is its own nearest neighbour
    assert torch.allclose(neigh[:, :, 0], torch.zeros(2, 16, 3), atol=1e-6)
    absolute = neigh + centers[:, :, None]
    assert torch.allclose(absolute, gather_points(pts, knn(centers, pts, 8)), atol=1e-6)


def test_unit_sphere():
    x = normalize_unit_sphere(torch.randn(4, 100, 3) * 50 + 7)
    assert torch.allclose(x.mean(1), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(x.norm(dim=-1).amax(1), torch.ones(4))


def test_chamfer_known_values():
    a = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    b = torch.tensor([[[0.0, 0, 0], [3, 0, 0]]])
    # a->b nearest squared: 0, 1 ; b->a: 0, 4  => l2 = 0.5 + 2 = 2.5 ; l1 = ((0+1)/2 + (0+2)/2) / 2 = 0.75
    assert chamfer_distance(a, b, "l2").item() == pytest.approx(2.5)
    assert chamfer_distance(a, b, "l1").item() == pytest.approx(0.75, abs=1e-5)
    assert chamfer_distance(a, a, "l2").item() == pytest.approx(0.0, abs=1e-6)
    # permutation invariant
    perm = b[:, [1, 0]]
    assert chamfer_distance(a, perm).item() == pytest.approx(2.5)
