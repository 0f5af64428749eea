"""RandAugment as timm's ``rand-m6-mstd0.5-inc1``, the fine-tuning augmentation of the chest X-ray MAE recipe
(Xiao et al., WACV 2023: ``--aa 'rand-m6-mstd0.5-inc1'``), on uint8 image tensors (C, H, W).

timm's policy, reproduced op by op:

- two ops per image, drawn with replacement from the 15 "increasing" ops (:data:`OPS`);
- each op runs with probability 0.5;
- each run draws its magnitude from N(6, 0.5), clipped to [0, 10], and maps it to the op's argument with timm's
  level functions (:func:`level_args`; level = magnitude / 10): rotate 30 x level degrees, shear 0.3 x level,
  translate 0.45 x level of the side, each with a random sign; enhance factors 1 +- 0.9 x level (>= 0.1); posterize
  to 4 - int(4 x level) bits; solarize above 256 - int(256 x level); solarize-add int(110 x level) below 128;
- geometric ops use PIL's affine conventions (the inverse map of pixel centres, rotation about the image centre)
  and fill uncovered pixels with grey 128, as timm's ``img_mean`` fill does for a mean of 0.5.

Differences to timm: affine resampling is bilinear (timm: bicubic), the contrast op blends with the unrounded mean
grey value (PIL rounds it); torchvision's functional ops implement the other photometric ops as PIL does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
       "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
       "TranslateXRel", "TranslateYRel")
_ENHANCE = ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing")


def level_args(name: str, magnitude: float, sign: float = 1.0) -> tuple:
    """timm's level-to-argument map of op ``name`` at ``magnitude`` (0-10); ``sign`` (+-1) is the random negation
    timm applies to rotation, shear, translation and the enhance factors."""
    level = magnitude / 10.0
    if name == "Rotate":
        return (sign * 30.0 * level,)
    if name == "PosterizeIncreasing":
        return (4 - int(level * 4),)
    if name == "SolarizeIncreasing":
        return (256 - min(256, int(level * 256)),)
    if name == "SolarizeAdd":
        return (min(128, int(level * 110)),)
    if name in _ENHANCE:
        return (max(0.1, 1.0 + sign * 0.9 * level),)
    if name in ("ShearX", "ShearY"):
        return (sign * 0.3 * level,)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (sign * 0.45 * level,)
    return ()


def pil_affine(img: torch.Tensor, matrix, fill: float = 128.0) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f))`` on a uint8 (C, H, W) tensor: output pixel centre
    (x, y) samples the input at (a x + b y + c, d x + e y + f), bilinearly; outside pixels take ``fill``."""
    a, b, c, d, e, f = matrix
    _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    gx = (a * xs + b * ys + c) * (2.0 / w) - 1.0
    gy = (d * xs + e * ys + f) * (2.0 / h) - 1.0
    grid = torch.stack([gx, gy], -1)[None].float()
    x = img.float()[None] - fill
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0] + fill
    return out.round().clamp(0, 255).to(torch.uint8)


def rotate_matrix(degrees: float, w: int, h: int) -> tuple:
    """PIL ``Image.rotate(degrees)``'s inverse affine map (counter-clockwise about the image centre)."""
    t = -math.radians(degrees)
    a, b, d, e = math.cos(t), math.sin(t), -math.sin(t), math.cos(t)
    cx, cy = w / 2.0, h / 2.0
    return (a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy)


def apply_op(img: torch.Tensor, name: str, args: tuple, fill: float = 128.0) -> torch.Tensor:
    """Op ``name`` with timm arguments ``args`` on a uint8 (C, H, W) tensor."""
    from torchvision.transforms.v2 import functional as TF

    _, h, w = img.shape
    if name == "AutoContrast":
        return TF.autocontrast(img)
    if name == "Equalize":
        return TF.equalize(img)
    if name == "Invert":
        return TF.invert(img)
    if name == "PosterizeIncreasing":
        return TF.posterize(img, int(args[0]))
    if name == "SolarizeIncreasing":
        return torch.where(img >= args[0], 255 - img, img)
    if name == "SolarizeAdd":
        return torch.where(img < 128, (img.int() + args[0]).clamp_max(255).to(torch.uint8), img)
    if name == "ColorIncreasing":
        return img if img.shape[0] == 1 else TF.adjust_saturation(img, args[0])  # grey images: no colour
    if name == "ContrastIncreasing":
        return TF.adjust_contrast(img, args[0])
    if name == "BrightnessIncreasing":
        return TF.adjust_brightness(img, args[0])
    if name == "SharpnessIncreasing":
        return TF.adjust_sharpness(img, args[0])
    matrix = {"Rotate": lambda v: rotate_matrix(v, w, h), "ShearX": lambda v: (1, v, 0, 0, 1, 0),
              "ShearY": lambda v: (1, 0, 0, v, 1, 0), "TranslateXRel": lambda v: (1, 0, v * w, 0, 1, 0),
              "TranslateYRel": lambda v: (1, 0, 0, 0, 1, v * h)}[name](args[0])
    return pil_affine(img, matrix, fill)


class RandAugment:
    """``rand-m{magnitude}-mstd{magnitude_std}-inc1`` with ``num_ops`` ops, each applied with probability ``prob``
    (random draws from torch's global generator, so data-loader seeding covers them)."""

    def __init__(self, magnitude: float = 6.0, magnitude_std: float = 0.5, num_ops: int = 2, prob: float = 0.5,
                 fill: float = 128.0):
        self.magnitude, self.magnitude_std, self.num_ops, self.prob, self.fill = (magnitude, magnitude_std, num_ops,
                                                                                prob, fill)

    def draw_magnitude(self) -> float:
        m = self.magnitude + (self.magnitude_std * float(torch.randn(())) if self.magnitude_std > 0 else 0.0)
        return min(max(m, 0.0), 10.0)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for i in torch.randint(len(OPS), (self.num_ops,)).tolist():
            if float(torch.rand(())) > self.prob:
                continue
            sign = -1.0 if float(torch.rand(())) > 0.5 else 1.0
            img = apply_op(img, OPS[i], level_args(OPS[i], self.draw_magnitude(), sign), self.fill)
        return img

    def __repr__(self):
        return f"RandAugment(rand-m{self.magnitude:g}-mstd{self.magnitude_std:g}-inc1, n={self.num_ops}, p={self.prob})"
