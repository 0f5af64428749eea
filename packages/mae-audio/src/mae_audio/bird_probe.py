"""Bird-MAE's prototypical probe as the reference trains it (Rauch et al. 2025, after AudioProtoPNet).

Differences from mae-core's generic ``prototypical`` probe (which this reuses: the head, the similarity maps, the
asymmetric loss), all from the authors' code:

- the tokens are the *focal* tokens, the last layer's patch tokens minus its cls token (``focal_similarity: true``,
  the reference config); :meth:`AudioMAE.token_grid` gives them when ``probe_tokens`` is ``focal`` (the default);
- prototypes start as U[0, 1) (``torch.rand``), not as scaled normal noise;
- the orthogonality term is ``||G - I||_F / numel(G)`` with G the (classes, J, J) Gram matrices of each class's
  L2-normalised prototypes (the Frobenius norm, not its square, divided by C J^2), and it enters the loss with
  weight 1;
- the multi-label loss (asymmetric loss) is a mean over batch x classes, not a sum over classes;
- the report gives mAP (micro-averaged average precision over every clip-class pair) and cmAP (class-wise mean:
  average precision per class with a positive test clip, then the mean), both from scikit-learn's
  ``average_precision_score``, beside the mean AUC (multi-label) or the accuracy (single-label; the one-hot labels
  give mAP / cmAP there too).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.eval.linear import accuracy, mean_auc
from mae_core.eval.prototypical import PrototypicalHead, asymmetric_loss


class ReferencePrototypicalHead(PrototypicalHead):
    """:class:`~mae_core.eval.prototypical.PrototypicalHead` with the reference's U[0, 1) prototypes and its
    normalised orthogonality term."""

    def __init__(self, dim: int, num_classes: int, num_prototypes: int = 20, **kw):
        super().__init__(dim, num_classes, num_prototypes, **kw)
        self.prototypes = nn.Parameter(torch.rand(num_classes, num_prototypes, dim))

    def orthogonality(self) -> torch.Tensor:
        """||P_c P_c^T - I||_F over all classes together, divided by the number of entries (C J J)."""
        p = F.normalize(self.prototypes, dim=-1)
        g = p @ p.transpose(1, 2) - torch.eye(self.num_prototypes, device=p.device, dtype=p.dtype)
        return torch.linalg.vector_norm(g) / g.numel()


def asymmetric_loss_mean(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The asymmetric loss averaged over batch x classes (mae-core's sums over the classes)."""
    return asymmetric_loss(logits, targets) / logits.shape[-1]


def average_precisions(scores: torch.Tensor, labels: torch.Tensor) -> dict:
    """mAP (micro) and cmAP (macro over the classes with a positive) of (N, C) scores against (N, C) 0/1 labels
    (or (N,) class ids), with scikit-learn's ``average_precision_score``."""
    from sklearn.metrics import average_precision_score

    s = scores.detach().double().cpu().numpy()
    y = labels.detach().cpu()
    if y.ndim == 1:
        y = F.one_hot(y.long(), s.shape[1])
    y = y.numpy() > 0.5
    present = y.any(0)
    cmap = float(average_precision_score(y[:, present], s[:, present], average="macro")) if present.any() else 0.0
    return {"mAP": float(average_precision_score(y.ravel(), s.ravel())), "cmAP": cmap}


def _metrics(logits, y, multilabel):
    res = {"auc": mean_auc(torch.sigmoid(logits), y)} if multilabel else {"acc": accuracy(logits, y.long())}
    res.update(average_precisions(torch.sigmoid(logits) if multilabel else logits.softmax(-1), y))
    return res


def bird_mae_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, grid,
                   num_classes: int, num_prototypes: int = 20, epochs: int = 30, proto_lr: float = 0.05,
                   head_lr: float = 0.01, ortho_weight: float = 1.0, weight_decay: float = 1e-4,
                   batch_size: int = 64, seed: int = 0, multilabel: bool = False, device="cpu",
                   return_head: bool = False):
    """Train a :class:`ReferencePrototypicalHead` on frozen token grids (N, L, D) (AdamW, prototypes and last layer
    with their own learning rates, cosine schedule); report test accuracy or AUC, mAP and cmAP."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ReferencePrototypicalHead(x_train.shape[-1], num_classes, num_prototypes).to(device)
    opt = torch.optim.AdamW([
        {"params": [head.prototypes], "lr": proto_lr, "weight_decay": 0.0},
        {"params": [head.weight, head.bias], "lr": head_lr, "weight_decay": weight_decay},
    ])
    n = len(x_train)
    steps = max(1, epochs * math.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = []
    head.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            logits = head(xb, grid)
            cls = asymmetric_loss_mean(logits, yb) if multilabel else F.cross_entropy(logits, yb.long())
            loss = cls + ortho_weight * head.orthogonality()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        history.append(tot / n)
    head.eval()

    def predict(x):
        with torch.no_grad():
            return torch.cat([head(x[i:i + 256].to(device), grid).cpu() for i in range(0, len(x), 256)])

    res = _metrics(predict(x_test), y_test, multilabel)
    res.update({f"train_{k}": v for k, v in _metrics(predict(x_train), y_train, multilabel).items()})
    res["loss_first_epoch"], res["loss_last_epoch"] = history[0], history[-1]
    return (res, head) if return_head else res
