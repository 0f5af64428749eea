"""Grid probe: per-pixel segmentation from frozen patch tokens, scored by Dice.

Works on any model with ``token_grid(batch) -> ((B, L, D) patch tokens, grid)`` and a data set whose samples carry
a per-pixel class map (``seg``, (H, W) long, the grid times a whole patch). The head is SETR-naive in its smallest
form: every token's features, standardised with the training tokens' mean and variance, go through one linear layer
to the class logits of each of the patch's pixels (``patch_h x patch_w x classes`` outputs), rearranged into a
logit map; cross-entropy over the pixels, AdamW with a cosine learning rate, the encoder frozen. The score is the
Dice of every foreground class (``1..C-1``) pooled over the test pixels (``dice``: their mean; for a boundary map,
the boundary Dice), and the mIoU over every class, background included (``miou``).

Registered as the ``segmentation`` probe of every domain (``mae-core probe --probe segmentation``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import MaeError
from ..layers import unpatchify


def dice_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float]:
    """Dice ``2 |P & T| / (|P| + |T|)`` of classes ``1..num_classes-1`` over all pixels (1.0 when a class is in
    neither)."""
    out = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        denom = int(p.sum()) + int(t.sum())
        out.append(2 * int((p & t).sum()) / denom if denom else 1.0)
    return out


def iou_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float | None]:
    """IoU ``|P & T| / |P | T|`` of every class ``0..num_classes-1`` (background included) over all pixels; None for
    a class in neither. ``miou`` = the mean over the classes that are not None (the usual semantic-segmentation
    mIoU over a test set)."""
    out = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        union = int((p | t).sum())
        out.append(int((p & t).sum()) / union if union else None)
    return out


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    ious = [v for v in iou_scores(pred, target, num_classes) if v is not None]
    return sum(ious) / len(ious) if ious else 0.0


class GridSegmentationHead(nn.Module):
    """Standardised token features -> linear -> (B, classes, H, W) logits."""

    def __init__(self, dim: int, patch: tuple[int, int], num_classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.patch, self.num_classes = tuple(patch), num_classes
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.head = nn.Linear(dim, math.prod(patch) * num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        return unpatchify(self.head((tokens - self.mean) / self.std), self.patch, grid, self.num_classes)


def segmentation_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                       grid, num_classes: int | None = None, epochs: int = 100, lr: float = 1e-2,
                       weight_decay: float = 1e-4, batch_size: int = 64, seed: int = 0) -> dict:
    """Train the grid head on frozen tokens ``x_train`` (N, L, D) against pixel maps ``y_train`` (N, H, W); Dice and
    pixel accuracy on the test set."""
    grid = tuple(grid)
    if x_train.ndim != 3 or x_train.shape[1] != math.prod(grid):
        raise MaeError(f"segmentation probe: tokens {tuple(x_train.shape)} do not fill the grid {grid}")
    size = tuple(y_train.shape[1:])
    if len(size) != len(grid) or any(s % g for s, g in zip(size, grid)):
        raise MaeError(f"segmentation probe: pixel maps {size} are not a whole number of patches of the grid {grid}")
    patch = tuple(s // g for s, g in zip(size, grid))
    num_classes = int(num_classes or int(y_train.max()) + 1)
    flat = x_train.reshape(-1, x_train.shape[-1]).float()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = GridSegmentationHead(x_train.shape[-1], patch, num_classes, flat.mean(0), flat.std(0) + 1e-6)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(x_train)
    steps = epochs * math.ceil(n / batch_size)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            loss = F.cross_entropy(head(x_train[idx].float(), grid), y_train[idx].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        pred = torch.cat([head(x_test[i:i + 256].float(), grid).argmax(1) for i in range(0, len(x_test), 256)])
    dice = dice_scores(pred, y_test, num_classes)
    return {"dice": sum(dice) / len(dice) if dice else 0.0, "dice_per_class": [round(d, 4) for d in dice],
            "miou": mean_iou(pred, y_test, num_classes),
            "pixel_acc": float((pred == y_test).float().mean()), "final_loss": float(loss.detach())}


def probe_segmentation(model, train_set, test_set, cfg, cache) -> dict:
    """The ``segmentation`` probe: frozen ``token_grid`` tokens of both splits (cached per probe run), the grid head
    on the training split's ``seg`` maps (already cut to ``--label-fraction`` by the probe command), Dice on the test
    split."""
    from .prototypical import extract_token_grids
    from .probes import dataset_collate

    if len(train_set) and "seg" not in train_set[0]:
        raise MaeError(f"{type(train_set).__name__}: the samples have no 'seg' pixel map for the segmentation probe")
    for split, ds in (("train_seg", train_set), ("test_seg", test_set)):
        if split not in cache:
            cache[split] = extract_token_grids(model, ds, cfg.probe_batch_size, cfg.device, dataset_collate(ds),
                                               progress=True, label_key="seg")
    xtr, ytr, grid = cache["train_seg"]
    xte, yte, _ = cache["test_seg"]
    return segmentation_probe(xtr, ytr, xte, yte, grid, epochs=cfg.probe_epochs or 100,
                              lr=cfg.probe_lr or 1e-2, seed=cfg.probe_seed)
