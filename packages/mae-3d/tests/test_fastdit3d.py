import math

import numpy as np
import pytest
import torch

from mae_3d.diffusion import DiTBlock, GaussianDiffusion, linear_betas
from mae_3d.methods.fastdit3d import FastDiT3D, FastDiT3DConfig, voxel_aware_masking
from mae_3d.voxels import devoxelize, voxel_coords, voxelize

TINY = dict(voxel_size=8, patch_size=2, embed_dim=24, depth=1, num_heads=2, decoder_depth=1, window_size=2,
            num_steps=50, sample_steps=2)


def test_voxel_aware_mask_counts_per_sample():
    length = 512
    n_fg = [100, 20, 300, 3]
    fg = torch.zeros(len(n_fg), length, dtype=torch.bool)
    for i, n in enumerate(n_fg):
        fg[i, torch.randperm(length, generator=torch.Generator().manual_seed(i))[:n]] = True
    ids, valid, mask = voxel_aware_masking(fg, 0.99, 0.95, torch.Generator().manual_seed(0))
    # by hand: foreground max(1, floor(n * 0.05)), background floor((512 - n) * 0.01)
    want_fg, want_bg = [5, 1, 15, 1], [4, 4, 2, 5]
    kept = mask == 0
    assert (kept & fg).sum(1).tolist() == want_fg
    assert (kept & ~fg).sum(1).tolist() == want_bg
    assert ids.shape[1] == max(a + b for a, b in zip(want_fg, want_bg)) == 17
    assert valid.sum(1).tolist() == [a + b for a, b in zip(want_fg, want_bg)]
    for i in range(len(n_fg)):  # the valid ids are exactly the kept patches; the padding points at dropped ones
        assert sorted(ids[i][valid[i]].tolist()) == torch.nonzero(kept[i]).flatten().tolist()
        assert bool(mask[i, ids[i][~valid[i]]].eq(1).all())
    again, _, _ = voxel_aware_masking(fg, 0.99, 0.95, torch.Generator().manual_seed(0))
    other, _, mask2 = voxel_aware_masking(fg, 0.99, 0.95, torch.Generator().manual_seed(1))
    assert torch.equal(ids, again) and not torch.equal(mask, mask2)


def test_ddpm_step_matches_the_closed_form():
    betas = linear_betas(10, 0.01, 0.2)
    d = GaussianDiffusion(betas, clip=None)
    g = torch.Generator().manual_seed(0)
    xt, eps, z = (torch.randn(2, 5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = 6
    b = [float(v) for v in betas]
    abar = math.prod(1 - v for v in b[:t + 1])
    abar_prev = math.prod(1 - v for v in b[:t])
    x0 = (xt - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    mean = (b[t] * math.sqrt(abar_prev) / (1 - abar)) * x0 + ((1 - abar_prev) * math.sqrt(1 - b[t]) / (1 - abar)) * xt
    var = b[t] * (1 - abar_prev) / (1 - abar)
    got = d.ddpm_step(eps, xt, torch.full((2,), t), z)
    torch.testing.assert_close(got, mean + math.sqrt(var) * z)
    # the same mean in the DDPM paper's form: (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
    torch.testing.assert_close(mean, (xt - b[t] / math.sqrt(1 - abar) * eps) / math.sqrt(1 - b[t]))
    # t = 0: no noise, the step returns the predicted x0 (clamped when clip is set)
    x0_at_0 = (xt - math.sqrt(b[0]) * eps) / math.sqrt(1 - b[0])
    torch.testing.assert_close(d.ddpm_step(eps, xt, torch.zeros(2, dtype=torch.long), z), x0_at_0)
    clipped = GaussianDiffusion(betas, clip=0.5).ddpm_step(eps, xt, torch.zeros(2, dtype=torch.long), z)
    torch.testing.assert_close(clipped, x0_at_0.clamp(-0.5, 0.5))


def test_ddim_with_an_exact_noise_oracle_returns_the_data():
    d = GaussianDiffusion(linear_betas(100), clip=None)
    x0 = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def oracle(xt, t):
        a = d.alphas_cumprod[t].reshape(-1, 1, 1)
        return (xt - a.sqrt() * x0) / (1 - a).sqrt()
    for steps in (1, 7):
        out = d.sample(oracle, (2, 7, 3), torch.Generator().manual_seed(0), sampler="ddim", steps=steps)
        torch.testing.assert_close(out.double(), x0, atol=1e-5, rtol=0)


def test_adaln_zero_starts_as_identity_and_the_model_predicts_zero():
    torch.manual_seed(0)
    blk = DiTBlock(24, 2)
    from mae_3d.diffusion import init_dit_weights
    init_dit_weights(blk)
    x, c = torch.randn(3, 10, 24), torch.randn(3, 24)
    assert torch.equal(blk(x, c), x)
    torch.nn.init.normal_(blk.adaLN_modulation[-1].bias)  # the zero init is what makes it the identity
    assert not torch.allclose(blk(x, c), x)
    model = FastDiT3D(FastDiT3DConfig(**TINY))
    eps = model.eps(torch.randn(2, 64, 3), torch.tensor([3, 40]))
    assert eps.shape == (2, 64, 3) and torch.equal(eps, torch.zeros_like(eps))


def test_voxelize_devoxelize_round_trip():
    r = 8
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(r ** 3, generator=g)[:40]  # one point per voxel, at the voxel's centre
    coords = torch.stack([flat // (r * r), flat // r % r, flat % r], -1).float()[None]
    feats = torch.randn(1, 40, 5, generator=g)
    grid, counts = voxelize(feats, coords, r)
    assert grid.shape == (1, 5, r, r, r) and int(counts.sum()) == 40
    torch.testing.assert_close(devoxelize(grid, coords), feats)
    # two points in one voxel: their mean
    two = torch.tensor([[[1.2, 2.0, 3.0], [0.8, 2.3, 2.9]]])
    grid2, counts2 = voxelize(torch.tensor([[[1.0], [3.0]]]), two, r)
    assert float(grid2[0, 0, 1, 2, 3]) == 2.0 and int(counts2[0, 1, 2, 3]) == 2
    # trilinear interpolation is exact on a linear field
    i, j, k = torch.meshgrid(*(torch.arange(r, dtype=torch.float32),) * 3, indexing="ij")
    field = (0.5 * i - 2 * j + 3 * k + 1)[None, None]
    pts = torch.rand(1, 50, 3, generator=g) * (r - 1)
    want = 0.5 * pts[..., 0] - 2 * pts[..., 1] + 3 * pts[..., 2] + 1
    torch.testing.assert_close(devoxelize(field, pts)[..., 0], want, atol=1e-4, rtol=0)
    # the reference's normalisation: centred, / (2 max norm), + 0.5, x r, clamped to [0, r - 1]
    vc = voxel_coords(torch.tensor([[[-1.0, 0, 0], [1.0, 0, 0]]]), r)
    assert vc[0, :, 0].tolist() == [0.0, r - 1] and vc[0, :, 1].tolist() == [r / 2, r / 2]


def test_training_loss_reads_only_kept_patches_and_sampling_runs():
    batch = {"points": torch.nn.functional.normalize(torch.randn(3, 64, 3), dim=-1)}
    for masking, full in (("none", True), ("voxel", False), ("random", False)):
        m = FastDiT3D(FastDiT3DConfig(**TINY, masking=masking))
        out = m(batch, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out.loss)
        assert (out.metrics["points_in_loss"] == 64) == full
        if masking == "voxel":  # the kept patches: voxel-aware counts of the noisy cloud's patches
            fg = out.extra["foreground"]
            assert out.metrics["kept_patches"] < fg.sum(1).float().mean()
    x = m.sample(2, 64, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 64, 3) and bool(x.abs().le(m.config.clip / m.config.data_scale + 1e-6).all())


def test_generate_writes_ply_and_a_picture(tmp_path):
    from mae_3d.cli import main
    from mae_3d.io import read_cloud

    run = tmp_path / "run"
    flags = ["--method", "fastdit-3d", "--voxel-size", "8", "--patch-size", "2", "--embed-dim", "24", "--depth", "1",
             "--num-heads", "2", "--decoder-depth", "1", "--window-size", "2", "--num-steps", "20",
             "--sample-steps", "2", "--num-points", "64", "--num-classes", "2", "--train-per-class", "2",
             "--test-per-class", "1", "--no-progress"]
    assert main(["pretrain", *flags, "--max-steps", "1", "--batch-size", "4", "--out", str(run)]) == 0
    assert (run / "pictures" / "samples.png").stat().st_size > 0
    assert main(["generate", "--run", str(run), "--out", str(tmp_path / "gen"), "--num", "3"]) == 0
    clouds = sorted((tmp_path / "gen").glob("*.ply"))
    assert len(clouds) == 3 and (tmp_path / "gen" / "samples.png").stat().st_size > 0
    assert np.asarray(read_cloud(clouds[0])).shape == (64, 3)
    assert main(["generate", "--run", str(run), "--out", str(tmp_path / "g2"), "--num", "0"]) == 2


@pytest.mark.parametrize("bad", [{"voxel_size": 10, "patch_size": 4}, {"window_size": 3}])
def test_bad_config_is_named(bad):
    from mae_core.errors import ConfigError
    with pytest.raises(ConfigError):
        FastDiT3D(FastDiT3DConfig(**{**TINY, **bad}))
