"""Gradient reversal (Ganin & Lempitsky, 2015) and an adversarial linear head built on it.

``grad_reverse(x, lambd)`` is the identity going forward and multiplies the gradient by ``-lambd`` going back, as
FMAE-IAT's ``GradReverse`` (``models_vit.py``): a head behind it learns to predict a nuisance label (the subject)
while the features in front of it are pushed to make that prediction harder.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class GradReverse(torch.autograd.Function):
    """Forward: ``x`` unchanged. Backward: ``-lambd`` times the incoming gradient (no gradient for ``lambd``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * -ctx.lambd, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    return GradReverse.apply(x, lambd)


class AdversaryHead(nn.Module):
    """Linear head behind a gradient-reversal layer of strength ``lambd``: ``linear(grad_reverse(x, lambd))``.
    The head itself is trained normally on its own loss; what reaches ``x`` is that gradient times ``-lambd``."""

    def __init__(self, dim: int | None, num_classes: int, lambd: float = 1.0):
        super().__init__()
        self.lambd = float(lambd)
        self.linear = nn.LazyLinear(num_classes) if dim is None else nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(grad_reverse(x, self.lambd))

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"
