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
        assert kept[b].sum() == round(0.2 * int(nonempty.sum()))
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
                               near_keep=0.2)
    assert torch.equal(kept, kept2)
    inside = kept2[:, sec]  # voxels of kept sectors
    near, far = inside & (rng < 10), inside & (rng > 25)
    frac_near = aware[near].float().mean()
    frac_far = aware[far].float().mean()
    assert frac_far > frac_near + 0.3 and not (aware & ~plain).any()


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
