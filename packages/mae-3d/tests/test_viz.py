"""The reconstruction pictures: one title over each column saying what it shows, no two titles overlapping."""
import torch

import mae_3d.viz as viz
from mae_3d.methods.point_mae import PointMAE, PointMAEConfig
from mae_3d.methods.r_mae import RMAE, RMAEConfig


def _capture(monkeypatch):
    got = {}
    monkeypatch.setattr(viz, "save_figure", lambda fig, path: got.setdefault("fig", fig))
    return got


def _column_titles(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titles = [(ax.get_position().x0, ax.title) for ax in fig.axes if ax.get_title()]
    return [(t.get_text(), t.get_window_extent(renderer)) for _, t in sorted(titles, key=lambda p: p[0])]


def _assert_disjoint(boxes):
    for (ta, a), (tb, b) in zip(boxes, boxes[1:]):
        assert a.x1 <= b.x0, f"titles {ta!r} and {tb!r} overlap"


def test_point_picture_has_a_title_over_each_column(tiny_shapes, monkeypatch):
    got = _capture(monkeypatch)
    torch.manual_seed(0)
    model = PointMAE(PointMAEConfig(num_groups=16, group_size=16, embed_dim=32, depth=1, num_heads=2,
                                    decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
                                    pointnet_dims=[16, 16, 32]))
    viz.draw_point_reconstruction(model, tiny_shapes[1], "unused.png", num=4)
    titles = _column_titles(got["fig"])
    assert len(titles) == 3
    assert titles[0][0] == "original cloud" and "visible groups (7/16)" in titles[1][0]
    assert "reconstructed masked groups" in titles[2][0]
    _assert_disjoint([b for b in titles])
    # the figure title sits just above the column titles (without the constrained layout: a 66-pixel gap at 4 rows)
    fig = got["fig"]
    sup = next(t for t in fig.texts if t.get_text() == fig.get_suptitle())
    gap = sup.get_window_extent(fig.canvas.get_renderer()).y0 - max(b.y1 for _, b in titles)
    assert 0 <= gap < 25, gap


def test_lidar_picture_has_a_title_over_each_column(monkeypatch):
    got = _capture(monkeypatch)
    cfg = RMAEConfig(grid=[32, 32, 4], voxel_size=[1.6, 1.6, 1.2], grid_min=[-25.6, -25.6, -2.2], patch=[4, 4, 4],
                     embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    model = RMAE(cfg)
    g = torch.Generator().manual_seed(0)
    data = [{"occupancy": (torch.rand(32, 32, 4, generator=g) < 0.1).float()} for _ in range(2)]
    viz.draw_lidar_reconstruction(model, data, "unused.png", num=2)
    titles = _column_titles(got["fig"])
    assert [t.split(":")[0].split("\n")[0] for t, _ in titles] == ["encoder input", "predicted occupancy",
                                                                    "true occupancy"]
    _assert_disjoint(titles)
