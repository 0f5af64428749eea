"""Reconstruction targets and losses shared by the methods."""
from __future__ import annotations

import torch


def normalize_patches(target: torch.Tensor, eps: float = 1e-6, channels: int | None = None,
                      per_channel: bool = False, return_stats: bool = False):
    """Per-patch normalisation of a (B, L, P) target.

    ``per_channel=False`` (MAE ``norm_pix_loss``): ``(x - mean) / sqrt(var + eps)`` over all P values, var unbiased.
    ``per_channel=True`` (VideoMAE): values ordered (..., C) are normalised per channel over the patch's pixels with
    ``(x - mean) / (std + eps)``, std unbiased. ``return_stats`` also returns (mean, scale) to undo it.
    """
    if per_channel:
        if channels is None:
            raise ValueError("per_channel normalisation needs the channel count")
        b, length, p = target.shape
        t = target.reshape(b, length, p // channels, channels)
        mean = t.mean(dim=-2, keepdim=True)
        scale = t.var(dim=-2, unbiased=True, keepdim=True).sqrt() + eps
        out = ((t - mean) / scale).reshape(b, length, p)
        stats = (mean.expand_as(t).reshape(b, length, p), scale.expand_as(t).reshape(b, length, p))
    else:
        mean = target.mean(dim=-1, keepdim=True)
        scale = (target.var(dim=-1, keepdim=True) + eps).sqrt()
        out = (target - mean) / scale
        stats = (mean, scale)
    return (out, stats) if return_stats else out


def masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of a (B, L) per-token loss over the tokens where mask == 1."""
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MAE loss: per-token mean squared error, averaged over masked tokens only (mask 1 = masked)."""
    return masked_mean(((pred - target) ** 2).mean(dim=-1), mask)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mean((pred - target).abs().mean(dim=-1), mask)
