"""Batched image augmentations on tensors, driven by uniform numbers the caller draws (from the trainer's
generator, so views are reproducible and independent of the process split): random resized crops with flips,
colour jitter, grey-scale. Every function works on a whole (B, C, H, W) batch at once, one parameter row per image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def random_boxes(u: torch.Tensor, scale, aspect) -> torch.Tensor:
    """(B, 4) uniform numbers -> boxes (cx, cy, half-width, half-height) in [-1, 1] coordinates of the parent.

    The area fraction is uniform in ``scale``, the aspect ratio log-uniform in ``aspect`` (as torchvision's
    RandomResizedCrop); sides larger than the parent are clipped to it and the box lies inside the parent."""
    area = scale[0] + u[:, 0] * (scale[1] - scale[0])
    log_r = math.log(aspect[0]) + u[:, 1] * (math.log(aspect[1]) - math.log(aspect[0]))
    r = log_r.exp()
    w = (area * r).sqrt().clamp_max(1.0)
    h = (area / r).sqrt().clamp_max(1.0)
    cx = (2 * u[:, 2] - 1) * (1 - w)
    cy = (2 * u[:, 3] - 1) * (1 - h)
    return torch.stack([cx, cy, w, h], dim=1)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear crops of (B, C, H, W) at boxes (cx, cy, hw, hh), resized to ``size`` (an int for squares, or
    (height, width)), in one batched call; ``flip`` (B,) bool mirrors those crops left-right."""
    b, c = images.shape[:2]
    out_h, out_w = (size, size) if isinstance(size, int) else size
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = boxes[:, 2], boxes[:, 0]
    theta[:, 1, 1], theta[:, 1, 2] = boxes[:, 3], boxes[:, 1]
    if flip is not None:
        theta[:, 0, 0] = torch.where(flip, -theta[:, 0, 0], theta[:, 0, 0])
    grid = F.affine_grid(theta, (b, c, out_h, out_w), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) luma."""
    w = images.new_tensor(GREY).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def _hue_matrices(angle: torch.Tensor) -> torch.Tensor:
    """(B,) angles in radians -> (B, 3, 3) RGB maps that rotate the chroma plane of YIQ (a linear hue shift)."""
    t = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    t_inv = torch.linalg.inv(t)
    cos, sin = angle.double().cos(), angle.double().sin()
    rot = torch.zeros(len(angle), 3, 3, dtype=torch.float64, device=angle.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return t_inv.to(angle.device) @ rot @ t.to(angle.device)


def color_jitter(images: torch.Tensor, u: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1) -> torch.Tensor:
    """Colour jitter of (B, C, H, W) images in [0, 1] from (B, 4) uniform numbers, applied in the fixed order
    brightness, contrast, saturation, hue (each result clipped to [0, 1]).

    Factors are uniform in ``[1 - s, 1 + s]``: brightness scales the pixels, contrast blends with the image's mean
    luma, saturation with each pixel's luma; the hue shift (uniform in ``[-hue, hue]`` of a full turn) rotates the
    chroma plane of YIQ, a linear stand-in for torchvision's HSV hue shift. Saturation and hue need 3 channels and
    are skipped otherwise (contrast then blends with the mean over all channels)."""
    b = images.shape[0]
    view = (b, 1, 1, 1)
    rgb = images.shape[1] == 3
    x = (images * (1 + brightness * (2 * u[:, 0] - 1)).view(view)).clamp(0, 1)
    mean = (grayscale(x) if rgb else x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * (1 + contrast * (2 * u[:, 1] - 1)).view(view) + mean).clamp(0, 1)
    if not rgb:
        return x
    g = grayscale(x)
    x = ((x - g) * (1 + saturation * (2 * u[:, 2] - 1)).view(view) + g).clamp(0, 1)
    if hue > 0:
        m = _hue_matrices(2 * math.pi * hue * (2 * u[:, 3] - 1)).to(x.dtype)
        x = torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)
    return x


def simclr_view(images: torch.Tensor, u: torch.Tensor, mean, std, scale=(0.2, 1.0), aspect=(3 / 4, 4 / 3),
                flip_prob: float = 0.5, jitter_prob: float = 0.8, jitter=(0.4, 0.4, 0.4, 0.1),
                grayscale_prob: float = 0.2) -> torch.Tensor:
    """One SimCLR view of every normalised image (B, C, H, W) from (B, 11) uniform numbers: random resized crop
    (``u[:, :4]``), horizontal flip (``u[:, 4]``), colour jitter with probability ``jitter_prob`` (``u[:, 5]``,
    factors ``u[:, 6:10]``), grey-scale with probability ``grayscale_prob`` (``u[:, 10]``, 3 channels only).
    Colours are changed in pixel space (``x * std + mean``) and the view is normalised back."""
    b, c, h, w = images.shape
    m = images.new_tensor(mean).view(1, c, 1, 1)
    s = images.new_tensor(std).view(1, c, 1, 1)
    x = crop_resize(images, random_boxes(u[:, :4], scale, aspect), (h, w), flip=u[:, 4] < flip_prob)
    x = (x * s + m).clamp(0, 1)
    on = (u[:, 5] < jitter_prob).view(b, 1, 1, 1)
    x = torch.where(on, color_jitter(x, u[:, 6:10], *jitter), x)
    if c == 3:
        x = torch.where((u[:, 10] < grayscale_prob).view(b, 1, 1, 1), grayscale(x).expand_as(x), x)
    return (x - m) / s
