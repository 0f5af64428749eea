"""Image-quality metrics inside a mask (PSNR, 3-D SSIM) for imputation benchmarks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr_in_mask(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR over voxels where ``mask`` is true; the data range is the real image's range inside the mask."""
    m = mask.bool()
    p, r = pred[m].double(), real[m].double()
    mse = float(((p - r) ** 2).mean())
    rng = float(r.max() - r.min())
    return 10 * math.log10(rng**2 / max(mse, 1e-12))


def ssim_in_mask(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor, window: int = 7) -> float:
    """Mean of the local SSIM map (uniform ``window``^3, constants K1 = 0.01, K2 = 0.03 of the data range) over
    the voxels where ``mask`` is true. Volumes are (D, H, W)."""
    m = mask.bool()
    rng = float(real[m].max() - real[m].min())
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    x, y = pred.double()[None, None], real.double()[None, None]
    pad = window // 2

    def filt(t):
        return F.avg_pool3d(F.pad(t, (pad,) * 6, mode="replicate"), window, stride=1)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[0, 0][m].mean())
