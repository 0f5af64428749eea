import math

import numpy as np
import pytest
import torch

from mae_core.testing import loss_falls
from mae_3d.data.lidar import SEG_CLASSES, DrivingScenes, DrivingScenesConfig, LidarFolder, LidarFolderConfig, raycast_scene, voxelize
from mae_3d.io import write_cloud
from mae_3d.methods.r_mae import RMAE, RMAEConfig, radial_mask, voxel_centres, voxel_sectors

SMALL = dict(grid=[32, 32, 4], voxel_size=[1.6, 1.6, 1.2], grid_min=[-25.6, -25.6, -2.2])


def tiny_cfg(**kw):
    base = dict(SMALL, patch=[4, 4, 4], embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                decoder_num_heads=2)
    base.update(kw)
    return RMAEConfig(**base)


@pytest.fixture(scope="module")
def scenes():
    cfg = DrivingScenesConfig(**SMALL, num_train=6, num_test=2, azimuths=512)
    return DrivingScenes(cfg, "train"), DrivingScenes(cfg, "test")


def test_raycast_scene_labels_every_class():
    pts, labels = raycast_scene((0, 0, 0), beams=32, azimuths=1024)
    assert pts.shape[1] == 3 and len(pts) == len(labels) > 10000
    counts = np.bincount(labels, minlength=len(SEG_CLASSES))
    assert (counts > 0).all(), dict(zip(SEG_CLASSES, counts))
    # the sensor is 1.7 m above the ground: ground points sit at z = -1.7 in the sensor frame
    assert abs(np.median(pts[labels == 0, 2]) + 1.7) < 0.05
    occ, vlab = voxelize(pts, labels, DrivingScenesConfig())
    assert set(np.unique(vlab[occ > 0])) <= set(range(len(SEG_CLASSES)))
    assert (vlab[occ == 0] == -1).all()


def test_sectors_are_around_the_sensor_not_the_grid_corner():
    centres = voxel_centres([8, 8, 1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    origin = (4.0, 4.0)  # sensor in the middle of the grid
    sec, n = voxel_sectors(centres, origin, 90.0)
    assert n == 4
    # quadrants around the sensor: x<4,y<4 -> azimuth in [-180,-90) -> sector 0, etc.
    assert (sec[:4, :4] == 0).all() and (sec[4:, :4] == 1).all() and (sec[4:, 4:] == 2).all() \
        and (sec[:4, 4:] == 3).all()
    sec1, n1 = voxel_sectors(centres, origin, 1.0)
    assert n1 == 360
    az = torch.rad2deg(torch.atan2(centres[..., 1] - 4.0, centres[..., 0] - 4.0))
    assert torch.equal(sec1, torch.floor(az + 180).long())
    # around the grid corner every voxel would fall in one quadrant: not what we compute
    corner, _ = voxel_sectors(centres, (0.0, 0.0), 90.0)
    assert corner.unique().numel() == 1 and sec.unique().numel() == 4


def test_kept_fraction_of_nonempty_sectors():
    g = torch.Generator().manual_seed(0)
    centres = voxel_centres([40, 40, 2], [1.0, 1.0, 1.0], [-20.0, -20.0, 0.0])
    sec, n = voxel_sectors(centres, (0.0, 0.0), 1.0)
    occ = (torch.rand(3, 40, 40, 2, generator=g) < 0.3).float()
    occ[1, :20] = 0  # half the sectors of scan 1 are empty
    keep, kept = radial_mask(occ, sec, n, 0.8, generator=g)
    for b in range(3):
        nonempty = torch.zeros(n, dtype=torch.bool)
        nonempty[sec[occ[b] > 0]] = True
        assert kept[b].sum() == int((1 - 0.8) * int(nonempty.sum()))  # the reference's int(select_ratio * S)
        assert not (kept[b] & ~nonempty).any()
        # kept voxels are exactly the occupied voxels of kept sectors
        assert torch.equal(keep[b], (occ[b] > 0) & kept[b][sec])


def test_range_aware_keeps_more_far_voxels():
    g = torch.Generator().manual_seed(1)
    centres = voxel_centres([64, 64, 1], [1.0, 1.0, 1.0], [-32.0, -32.0, 0.0])
    sec, n = voxel_sectors(centres, (0.0, 0.0), 1.0)
    rng = torch.hypot(centres[..., 0], centres[..., 1])
    occ = torch.ones(4, 64, 64, 1)
    plain, kept = radial_mask(occ, sec, n, 0.8, generator=torch.Generator().manual_seed(2))
    aware, kept2 = radial_mask(occ, sec, n, 0.8, generator=torch.Generator().manual_seed(2), ranges=rng,
                               bands=(10.0, 20.0))
    assert torch.equal(kept, kept2)
    inside = kept2[:, sec]  # voxels of kept sectors
    near, far = inside & (rng <= 10), inside & (rng > 20)
    frac_near = aware[near].float().mean()
    frac_far = aware[far].float().mean()
    assert frac_far > frac_near + 0.3 and not (aware & ~plain).any()


def test_range_aware_keeps_the_reference_counts_per_band():
    """radial_mae_ra.py: in each kept sector int(f * n) voxels of each band, f = 1 - m, 1 - m + 0.2, 1 - m + 0.4 for
    <= 30, 30-50 and > 50 cells. Five sectors, each a ray of 100 voxels at ranges 0..99 cells: bands of 31, 20 and
    49 voxels; m = 0.6 keeps int(0.4 * 5) = 2 sectors and int(0.4 * 31) = 12, int(0.6 * 20) = 12, int(0.8 * 49) = 39
    voxels of each."""
    sec = torch.arange(5).repeat_interleave(100).reshape(5, 100, 1)
    rng = torch.arange(100.0).repeat(5).reshape(5, 100, 1)
    occ = torch.ones(3, 5, 100, 1)
    keep, kept = radial_mask(occ, sec, 5, 0.6, generator=torch.Generator().manual_seed(0), ranges=rng)
    assert (kept.sum(1) == 2).all()
    for b in range(3):
        for s in range(5):
            k = keep[b, s, :, 0]
            counts = [int(k[:31].sum()), int(k[31:51].sum()), int(k[51:].sum())]
            assert counts == ([12, 12, 39] if kept[b, s] else [0, 0, 0])
    # the kept voxels inside a band are a random subset, not the nearest ones
    assert not all(bool(keep[b, s, :12, 0].all()) for b in range(3) for s in range(5) if kept[b, s])
    # m = 0.8 on 360 non-empty 1-degree sectors keeps int((1 - 0.8) * 360) = 71 of them (the reference's float)
    sec360 = torch.arange(360).reshape(360, 1, 1)
    _, kept = radial_mask(torch.ones(2, 360, 1, 1), sec360, 360, 0.8, generator=torch.Generator().manual_seed(0))
    assert kept.sum(1).tolist() == [71, 71]
    # a fraction above 1 keeps the whole band; a sparse band of 2 voxels at f = 0.4 keeps int(0.8) = 0 of them
    keep, kept = radial_mask(occ, sec, 5, 0.2, generator=torch.Generator().manual_seed(1), ranges=rng)
    assert int(kept[0].sum()) == 4
    s = int(kept[0].nonzero()[0])
    assert [int(keep[0, s, :31, 0].sum()), int(keep[0, s, 31:51, 0].sum()), int(keep[0, s, 51:, 0].sum())] == \
        [24, 20, 49]
    sparse = torch.zeros(1, 5, 100, 1)
    sparse[:, :, :2] = 1
    keep, kept = radial_mask(sparse, sec, 5, 0.6, generator=torch.Generator().manual_seed(0), ranges=rng)
    assert int(kept.sum()) == 2 and int(keep.sum()) == 0
    # and m = 0.8 of 5 non-empty sectors keeps int(0.9999999999999998) = 0 sectors, as the reference
    _, kept = radial_mask(sparse, sec, 5, 0.8, generator=torch.Generator().manual_seed(0))
    assert int(kept.sum()) == 0


def test_model_ranges_are_in_cells_around_the_sensor():
    model = RMAE(tiny_cfg(range_aware=True))  # 1.6 m voxels, sensor at the grid centre
    centres = voxel_centres(SMALL["grid"], SMALL["voxel_size"], SMALL["grid_min"])
    assert torch.allclose(model.ranges, torch.hypot(centres[..., 0], centres[..., 1]) / 1.6)
    assert model.ranges.shape == model.sectors.shape and float(model.ranges.min()) < 1


def test_rmae_loss_falls_and_encoder_sees_only_kept_voxels(scenes):
    torch.manual_seed(0)
    model = RMAE(tiny_cfg())
    batch = {"occupancy": scenes[0].occupancy[:4]}
    seen = {}
    model.patch_embed.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach()))
    out = model(batch, generator=torch.Generator().manual_seed(0))
    keep = out.extra["keep"]
    # the encoder's input is the occupancy of kept voxels only
    from mae_core.layers import patchify
    assert torch.equal(seen["x"], patchify((batch["occupancy"] * keep)[:, None], [4, 4, 4]))
    assert keep.sum() < 0.5 * batch["occupancy"].sum()
    assert out.pred.shape == (4, 64, 64)  # every voxel of the grid is predicted
    first, last = loss_falls(model, batch, steps=20, lr=2e-3)
    assert last < 0.8 * first


def test_segmentation_head_and_miou(scenes):
    from mae_3d.segment import train_segmentation

    torch.manual_seed(0)
    res = train_segmentation(RMAE(tiny_cfg()), scenes[0], scenes[1], len(SEG_CLASSES), num_labelled=4, epochs=8,
                             lr=3e-3, batch_size=2)
    assert 0 <= res["miou"] <= 1 and len(res["iou"]) == 5
    assert res["iou"][0] > 0.5  # ground is learnt from a handful of scans


def test_lidar_folder_reads_kitti_bin_and_skips_bad(tmp_path, capsys):
    pts, _ = raycast_scene((0, 0, 1), azimuths=256)
    for i in range(4):
        write_cloud(tmp_path / f"{i:06d}.bin", pts + i * 0.1)
    (tmp_path / "broken.bin").write_bytes(b"\x00" * 7)
    ds = LidarFolder(LidarFolderConfig(path=str(tmp_path), val_fraction=0.0, **SMALL), "train")
    assert "skipped 1 of 5" in capsys.readouterr().err
    assert len(ds) == 4 and ds[0]["occupancy"].shape == (32, 32, 4) and ds[0]["occupancy"].sum() > 0


def test_probe_on_lidar_is_clear_error(scenes):
    """encode works on unlabelled scans (the model contract); a probe on them is a one-line error that points to
    `mae-3d segment`."""
    from mae_core.errors import MaeError
    from mae_core.eval.probes import require_labels

    model = RMAE(tiny_cfg())
    assert model.encode({"occupancy": scenes[0].occupancy[:2]}).shape == (2, 32)
    with pytest.raises(MaeError, match="no 'label' for probes / fine-tuning; evaluate R-MAE with `mae-3d segment"):
        require_labels(scenes[0], model)
    assert model.forward_features({"occupancy": scenes[0].occupancy[:2]}).shape == (2, 64, 32)


def test_range_rules_bands_and_linear_keep_fractions_per_band():
    """Both range-aware rules on 4 sectors, each a ray of 100 occupied voxels at 0..99 cells (bands of 31, 20 and 49
    voxels), m = 0.5: int(0.5 * 4) = 2 sectors kept. bands (the reference): int(f n) with f = 0.5, 0.7, 0.9 -> 15 of
    31, 14 of 20, 44 of 49 in every kept sector. linear (the earlier rule): keep probability 0.4 + 0.6 r / 99, so the
    expected fraction per band is 0.4 + 0.6 * mean(r) / 99 with mean r = 15, 40.5, 75 -> 0.4909, 0.6455, 0.8545."""
    from mae_core.config import from_dict
    from mae_core.errors import ConfigError
    from mae_3d.methods.r_mae import linear_keep_prob

    sec = torch.arange(4).repeat_interleave(100).reshape(4, 100, 1)
    rng = torch.arange(100.0).repeat(4).reshape(4, 100, 1)
    occ = torch.ones(400, 4, 100, 1)
    bands, kept_b = radial_mask(occ, sec, 4, 0.5, torch.Generator().manual_seed(0), rng, rule="bands")
    linear, kept_l = radial_mask(occ, sec, 4, 0.5, torch.Generator().manual_seed(0), rng, rule="linear")
    assert torch.equal(kept_b, kept_l) and (kept_b.sum(1) == 2).all()  # the same sector draw for both rules
    inside = kept_b[:, :, None, None].expand_as(occ)
    assert not (bands & ~inside).any() and not (linear & ~inside).any()
    edges = [(0, 31), (31, 51), (51, 100)]
    per_sector = torch.stack([bands[..., a:b, 0].sum(-1) for a, b in edges], -1)  # (400, 4, 3)
    assert (per_sector[kept_b] == torch.tensor([15, 14, 44])).all() and (per_sector[~kept_b] == 0).all()
    n_kept = int(kept_b.sum())
    frac_linear = [float(linear[..., a:b, 0].sum()) / (n_kept * (b - a)) for a, b in edges]
    assert frac_linear == pytest.approx([0.4909, 0.6455, 0.8545], abs=0.015)
    assert linear_keep_prob(rng.reshape(-1))[[0, 33, 99]].tolist() == pytest.approx([0.4, 0.6, 1.0])
    # the model passes the config's rule through; an unknown rule is a one-line config error
    model = RMAE(tiny_cfg(range_aware=True, range_rule="linear"))
    grid = torch.ones(2, *SMALL["grid"])
    keep, kept = model.make_radial_mask(grid, torch.Generator().manual_seed(3))
    ref, _ = radial_mask(grid, model.sectors, model.num_sectors, 0.8, torch.Generator().manual_seed(3),
                         model.ranges, rule="linear")
    assert torch.equal(keep, ref) and int(keep.sum()) < int((grid.bool() & kept[:, model.sectors]).sum())
    with pytest.raises(ConfigError, match="range_rule"):
        from_dict(RMAEConfig, {"range_rule": "quadratic"}, "model")
