"""The DAVIS metrics of video object segmentation (Perazzi et al., CVPR 2016; Pont-Tuset et al., 2017), as the
DAVIS 2017 evaluation code (``davis2017/metrics.py``) defines them, on boolean masks:

- region similarity J: the Jaccard index |pred & true| / |pred | true| (1 when both masks are empty);
- contour accuracy F: the F-measure of boundary precision and recall. Boundaries are one-pixel maps
  (``seg2bmap``: a pixel is on the boundary when it differs from its right, lower or lower-right neighbour, the last
  row / column compared along the edge only); a boundary pixel of one mask is matched when a boundary pixel of the
  other lies within ``ceil(0.008 * image diagonal)`` pixels (dilation by a disk of that radius); precision is the
  matched fraction of the predicted boundary, recall that of the true one; an empty predicted boundary gives
  precision 1 and recall 0 (the reverse when the true one is empty), both empty give 1;
- J&F: the mean of J and F. A sequence's J (F) is the mean over its frames without the first (given) and the last
  one, as the semi-supervised DAVIS evaluation.

No maintained implementation (``davis2017``, which also needs OpenCV and scikit-image) is a dependency here, so
these follow the reference definitions and are pinned by hand-computed tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jaccard(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Region similarity J of two boolean (H, W) masks."""
    pred, true = pred.bool(), true.bool()
    union = (pred | true).sum().item()
    return 1.0 if union == 0 else (pred & true).sum().item() / union


def seg2bmap(seg: torch.Tensor) -> torch.Tensor:
    """One-pixel boundary map of a boolean (H, W) mask, as DAVIS's ``_seg2bmap`` at full resolution."""
    seg = seg.bool()
    e = torch.zeros_like(seg)
    s = torch.zeros_like(seg)
    se = torch.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> torch.Tensor:
    """The disk structuring element of scikit-image: the points with x^2 + y^2 <= r^2."""
    r = torch.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a boolean (H, W) map by ``disk(radius)`` (outside the image counts as empty)."""
    k = disk(radius).float()[None, None]
    out = F.conv2d(mask.float()[None, None], k, padding=radius)
    return out[0, 0] > 0.5


def boundary_pixels(shape, bound_th: float = 0.008) -> int:
    """The matching distance in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def f_measure(pred: torch.Tensor, true: torch.Tensor, bound_th: float = 0.008) -> float:
    """Contour accuracy F of two boolean (H, W) masks."""
    r = boundary_pixels(tuple(pred.shape), bound_th)
    fg, gt = seg2bmap(pred), seg2bmap(true)
    n_fg, n_gt = int(fg.sum()), int(gt.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0:
        return 0.0  # precision 1, recall 0
    if n_gt == 0:
        return 0.0  # precision 0, recall 1
    precision = (fg & dilate(gt, r)).sum().item() / n_fg
    recall = (gt & dilate(fg, r)).sum().item() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def sequence_jf(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    """(J, F) of one object over a sequence of boolean (T, H, W) masks: means over frames 1 .. T-2 (DAVIS's
    semi-supervised protocol drops the given first frame and the last one); frames 1 .. T-1 when T < 3."""
    frames = range(1, len(true) - 1) if len(true) >= 3 else range(1, len(true))
    js = [jaccard(pred[i], true[i]) for i in frames]
    fs = [f_measure(pred[i], true[i]) for i in frames]
    return sum(js) / len(js), sum(fs) / len(fs)
