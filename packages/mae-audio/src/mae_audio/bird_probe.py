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

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.eval.prototypical import PrototypicalHead, asymmetric_loss, prototypical_probe


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


def bird_mae_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, grid,
                   num_classes: int, num_prototypes: int = 20, epochs: int = 30, proto_lr: float = 0.05,
                   head_lr: float = 0.01, ortho_weight: float = 1.0, weight_decay: float = 1e-4,
                   batch_size: int = 64, seed: int = 0, multilabel: bool = False, device="cpu",
                   return_head: bool = False):
    """mae-core's prototypical probe training (AdamW, prototypes and last layer with their own learning rates,
    cosine schedule) with the reference's head, loss and weight; reports test accuracy or AUC, mAP and cmAP."""
    return prototypical_probe(x_train, y_train, x_test, y_test, grid, num_classes, num_prototypes=num_prototypes,
                              epochs=epochs, proto_lr=proto_lr, head_lr=head_lr, ortho_weight=ortho_weight,
                              weight_decay=weight_decay, batch_size=batch_size, seed=seed, multilabel=multilabel,
                              device=device, return_head=return_head, head_cls=ReferencePrototypicalHead,
                              multilabel_loss=asymmetric_loss_mean, extra_metrics=average_precisions)
