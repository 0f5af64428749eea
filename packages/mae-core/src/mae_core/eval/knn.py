"""Weighted k-nearest-neighbour classification on frozen features (cosine similarity, votes exp(sim / T)).

``whiten > 0`` first PCA-whitens the features with statistics of the training features only (centre, rotate onto
the principal axes, divide each axis by sqrt(eigenvalue + whiten * largest eigenvalue)). Cosine similarity on raw
features is ruled by the few directions of largest variance, which for small MAE encoders are nuisance factors
(colour, brightness, background); whitening weighs every direction alike, the way the linear probe's BatchNorm
standardises it, and the shrinkage term keeps near-empty directions from being blown up into noise (PCA whitening
of retrieval descriptors, Jegou & Chum, ECCV 2012).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def pca_whiten(x_train: torch.Tensor, x_test: torch.Tensor, shrink: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Whiten both sets with the training set's mean and covariance (float64 eigendecomposition)."""
    xtr, xte = x_train.double(), x_test.double()
    mu = xtr.mean(0)
    xtr, xte = xtr - mu, xte - mu
    evals, evecs = torch.linalg.eigh(xtr.T @ xtr / max(len(xtr) - 1, 1))
    evals = evals.clamp_min(0)
    w = evecs / (evals + shrink * evals.max().clamp_min(1e-12)).sqrt()
    return (xtr @ w).float(), (xte @ w).float()


@torch.no_grad()
def knn_classify(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024,
                 whiten: float = 0.0) -> dict:
    num_classes = num_classes or int(max(y_train.max(), y_test.max())) + 1
    if whiten > 0:
        x_train, x_test = pca_whiten(x_train, x_test, whiten)
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
