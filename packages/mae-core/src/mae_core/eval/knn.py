"""Weighted k-nearest-neighbour classification on frozen features (cosine similarity, votes exp(sim / T))."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_classify(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> dict:
    num_classes = num_classes or int(max(y_train.max(), y_test.max())) + 1
    xtr = F.normalize(x_train.float(), dim=1)
    xte = F.normalize(x_test.float(), dim=1)
    k = min(k, len(xtr))
    correct = 0
    for i in range(0, len(xte), chunk):
        sim = xte[i:i + chunk] @ xtr.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes)
        votes.scatter_add_(1, y_train[idx].long(), (top / temperature).exp())
        correct += int((votes.argmax(1) == y_test[i:i + chunk].long()).sum())
    return {"acc": correct / max(len(xte), 1)}
