"""Linear probe as in the MAE paper: BatchNorm without affine parameters in front of a linear head, trained on
frozen features. Single-label (cross-entropy, accuracy) or multi-label (BCE, mean AUC)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LinearProbe(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.bn(x))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


def mean_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Macro ROC-AUC: scikit-learn's ``roc_auc_score`` per label column (tied scores count one half), averaged over
    the columns that have both positives and negatives; 0.0 when no column has both."""
    from sklearn.metrics import roc_auc_score

    s = scores.detach().reshape(scores.shape[0], -1).double().cpu().numpy()
    y = labels.detach().reshape(labels.shape[0], -1).bool().cpu().numpy()
    aucs = [float(roc_auc_score(y[:, j], s[:, j])) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return sum(aucs) / len(aucs) if aucs else 0.0


# the two ways of training the probe: (optimiser, epochs, lr at batch 256, warm-up epochs, weight decay)
RECIPES = {"adamw": ("adamw", 100, 1e-2, 0, 1e-4),   # this library's default: fast on small sets
           "mae": ("lars", 90, 0.1, 10, 0.0)}        # MAE main_linprobe.py: blr 0.1 x batch / 256, LARS, no decay


def linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 num_classes: int | None = None, epochs: int | None = None, lr: float | None = None,
                 weight_decay: float | None = None, batch_size: int = 256, seed: int = 0, multilabel: bool = False,
                 recipe: str = "adamw") -> dict:
    """Train BN + linear on frozen features; report test accuracy (or mean AUC). ``recipe``: ``"adamw"`` (AdamW,
    cosine schedule, 100 epochs, lr 1e-2) or ``"mae"`` (the MAE paper's linear-probe protocol: LARS with momentum
    0.9, lr 0.1 x batch / 256, no weight decay, 90 epochs of which 10 warm up, then a per-step half cosine).
    ``epochs`` / ``lr`` / ``weight_decay`` given explicitly override the recipe's."""
    from ..train.optim import LARS, cosine_lr, set_lr

    if recipe not in RECIPES:
        raise ValueError(f"unknown linear-probe recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    opt_name, r_epochs, r_lr, warmup, r_wd = RECIPES[recipe]
    epochs = r_epochs if epochs is None else epochs
    weight_decay = r_wd if weight_decay is None else weight_decay
    if lr is None:
        lr = r_lr * batch_size / 256 if opt_name == "lars" else r_lr
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        num_classes = num_classes or (y_train.shape[1] if multilabel else int(max(y_train.max(), y_test.max())) + 1)
        probe = LinearProbe(x_train.shape[1], num_classes)
    if opt_name == "lars":
        opt = LARS(probe.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(x_train)
    per_epoch = math.ceil(n / batch_size)
    steps = epochs * per_epoch
    warmup = min(warmup, epochs)
    probe.train()
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            # per-step schedule (warm-up, then half cosine) on fractional epochs, as the reference's
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue
            set_lr(opt, cosine_lr(step / per_epoch, steps / per_epoch, warmup, lr))
            step += 1
            logits = probe(x_train[idx])
            if multilabel:
                loss = F.binary_cross_entropy_with_logits(logits, y_train[idx].float())
            else:
                loss = F.cross_entropy(logits, y_train[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    probe.eval()
    with torch.no_grad():
        logits_te, logits_tr = probe(x_test), probe(x_train)
    if multilabel:
        return {"auc": mean_auc(torch.sigmoid(logits_te), y_test), "train_auc": mean_auc(torch.sigmoid(logits_tr), y_train)}
    return {"acc": accuracy(logits_te, y_test.long()), "train_acc": accuracy(logits_tr, y_train.long())}
