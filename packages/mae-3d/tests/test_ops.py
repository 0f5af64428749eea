import numpy as np
import pytest
import torch

from mae_3d.o3d import o3d
from mae_3d.ops import chamfer_distance, farthest_point_sample, gather_points, group_points, knn, normalize_unit_sphere


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


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 200, 3, generator=g)
    query = torch.randn(2, 30, 3, generator=g)
    idx = knn(query, ref, 8)
    for b in range(2):
        d = ((query[b][:, None] - ref[b][None]) ** 2).sum(-1)
        brute = d.argsort(dim=1)[:, :8]
        assert torch.equal(idx[b], brute)


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
