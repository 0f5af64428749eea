"""Imputation metrics (PSNR / SSIM inside a mask) against MONAI's implementations on random volumes with ties."""
import math

import pytest
import torch
from monai.metrics import PSNRMetric, SSIMMetric, compute_ssim_and_cs

from mae_medical.metrics import psnr_in_mask, ssim_in_mask


def _volumes(seed: int, shape=(13, 12, 14)):
    """Quantised random volumes (many equal values) with a constant block, and a random mask."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randint(0, 6, shape, generator=g).double() / 5
    pred = (real + 0.3 * torch.randn(shape, generator=g, dtype=torch.double)).round(decimals=1)
    real[2:7, 3:9, 4:10] = 0.4  # flat region: zero variance in the window
    pred[2:7, 3:9, 4:10] = 0.4
    mask = torch.rand(shape, generator=g) < 0.6
    real[~mask] *= 3  # the range outside the mask is larger: the data range must come from inside it
    return pred, real, mask


@pytest.mark.parametrize("seed", range(4))
def test_psnr_in_mask_equals_monai(seed):
    pred, real, mask = _volumes(seed)
    rng = float(real[mask].max() - real[mask].min())
    want = PSNRMetric(max_val=rng)(pred[mask][None], real[mask][None]).item()
    assert psnr_in_mask(pred, real, mask) == pytest.approx(want, abs=1e-9)
    mse = float(((pred[mask] - real[mask]) ** 2).mean())  # and the textbook formula
    assert psnr_in_mask(pred, real, mask) == pytest.approx(10 * math.log10(rng**2 / mse), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_ssim_in_mask_equals_monai_uniform_window(seed):
    """Inside the volume (windows that need no padding) our map is MONAI's uniform-window SSIM map."""
    pred, real, mask = _volumes(seed)
    p = 3  # 7^3 window
    interior = torch.zeros_like(mask)
    interior[p:-p, p:-p, p:-p] = True
    m = mask & interior
    rng = float(real[m].max() - real[m].min())
    ssim_map, _ = compute_ssim_and_cs(pred[None, None], real[None, None], 3, (7, 7, 7), (1.5,) * 3, data_range=rng,
                                      kernel_type="uniform")
    want = ssim_map[0, 0][m[p:-p, p:-p, p:-p]].double().mean().item()
    assert ssim_in_mask(pred, real, m) == pytest.approx(want, abs=1e-5)
    # all interior voxels: MONAI's metric class itself
    rng = float(real[interior].max() - real[interior].min())
    metric = SSIMMetric(spatial_dims=3, data_range=rng, kernel_type="uniform", win_size=7)
    want = metric(pred[None, None].float(), real[None, None].float()).item()
    assert ssim_in_mask(pred, real, interior) == pytest.approx(want, abs=1e-5)


def test_ssim_identical_volumes_is_one():
    pred, real, mask = _volumes(0)
    assert ssim_in_mask(real, real, mask) == pytest.approx(1.0, abs=1e-12)
