"""Reconstruction targets and losses shared by the methods (and InfoNCE for the contrastive ones)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float | torch.Tensor = 0.1,
             negatives: torch.Tensor | None = None, symmetric: bool = False, self_negatives: bool = False,
             reduction: str = "mean") -> torch.Tensor:
    """InfoNCE over in-batch positives: row i of ``query`` (B, D) and row i of ``keys`` (B, D) are a positive pair;
    every other key is a negative (CPC / MoCo / SimCLR / CLIP).

    Both sides are L2-normalised here (in float32), and the logits are cosine similarities / ``temperature`` (a
    float, or a tensor for a learned temperature). ``negatives`` (M, D) adds extra negatives for every query (a
    :class:`~mae_core.layers.FeatureQueue`'s ``features``; detached by the caller as needed). ``self_negatives``
    also uses the other queries as negatives (with ``symmetric``: SimCLR's NT-Xent over 2B views, 2B - 2 negatives
    each). ``symmetric`` averages the loss of both directions (query -> keys and keys -> query, each side with the
    extra negatives), as CLIP. ``reduction``: ``"mean"`` or ``"none"`` ((B,) per query, (2B,) when symmetric:
    query rows first).
    """
    if query.ndim != 2 or query.shape != keys.shape:
        raise ValueError(f"info_nce needs query and keys of the same (B, D) shape, got {tuple(query.shape)} and "
                         f"{tuple(keys.shape)}")
    q, k = F.normalize(query.float(), dim=-1), F.normalize(keys.float(), dim=-1)
    n = F.normalize(negatives.float(), dim=-1) if negatives is not None else None
    target = torch.arange(q.shape[0], device=q.device)

    def one_side(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = [a @ b.T]
        if self_negatives:  # the other anchors, without the anchor itself
            logits.append((a @ a.T).masked_fill(torch.eye(len(a), dtype=torch.bool, device=a.device), float("-inf")))
        if n is not None:
            logits.append(a @ n.T)
        return F.cross_entropy(torch.cat(logits, dim=1) / temperature, target, reduction="none")

    loss = torch.cat([one_side(q, k), one_side(k, q)]) if symmetric else one_side(q, k)
    if reduction == "none":
        return loss
    if reduction != "mean":
        raise ValueError(f"info_nce reduction must be 'mean' or 'none', got {reduction!r}")
    return loss.mean()
