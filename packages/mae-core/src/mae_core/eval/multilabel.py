"""Multi-label detection metrics (facial action units and the like): per-label F1 averaged over the labels, at a fixed
threshold and at the best threshold shared by all labels (FMAE-IAT's ``AU_evaluate``: thresholds 0.01 ... 0.99)."""
from __future__ import annotations

import torch


def f1_per_label(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(L,) F1 of each label column, a sample predicted positive when ``probs >= threshold``. A column with no
    positive in either prediction or truth scores 0, as scikit-learn's ``f1_score`` (zero_division=0)."""
    pred = probs.detach().reshape(probs.shape[0], -1).double() >= threshold
    y = labels.detach().reshape(labels.shape[0], -1).bool()
    tp = (pred & y).sum(0).double()
    fp = (pred & ~y).sum(0).double()
    fn = (~pred & y).sum(0).double()
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.zeros_like(den))


def mean_f1(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> float:
    """Macro F1 over the label columns at ``threshold``."""
    return float(f1_per_label(probs, labels, threshold).mean())


def best_threshold_f1(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(macro F1, threshold) at the threshold in 0.01, 0.02, ..., 0.99 (one for every label) with the highest macro
    F1; the first of equal ones. The reference picks it on the test set itself, so it is an optimistic number."""
    best, at = -1.0, 0.5
    for i in range(1, 100):
        f = mean_f1(probs, labels, i / 100)
        if f > best:
            best, at = f, i / 100
    return best, at
