"""Sparse (masked) convolutional networks for SparK (Tian et al., ICLR 2023; keyu-tian/SparK ``encoder.py``): turn a
dense CNN (torchvision or MONAI, 1, 2 or 3 spatial axes) into its sparse version in place.

A :class:`SparseContext` holds the visible ("active") cells of the current batch, (B, 1, *grid) bool, on the coarse
masking grid. :func:`sparsify` then

- re-applies the mask after every convolution and pooling layer: a forward hook multiplies the layer's output by
  the mask resized (nearest, i.e. each grid cell repeated) to the output's size, so masked positions stay zero;
- replaces every BatchNorm by a :class:`SparseBatchNorm` with the same parameters and buffers (same state-dict keys)
  that normalises over the active positions only (batch statistics and running statistics), the masked positions
  staying zero.

Activations, residual sums and identity shortcuts keep zeros at zero, so the whole network computes on the visible
cells only. With ``context.active = None`` the same modules compute densely (fine-tuning, ``encode``).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

MASKED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
                 nn.AvgPool2d, nn.AvgPool3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SparseContext:
    """The active cells of the batch being computed: ``active`` (B, 1, *grid) bool, or None (dense)."""

    def __init__(self):
        self.active: torch.Tensor | None = None

    def at(self, size) -> torch.Tensor:
        """The active mask resized to ``size`` (each grid cell repeated), (B, 1, *size) bool."""
        a = self.active
        if tuple(a.shape[2:]) == tuple(size):
            return a
        return F.interpolate(a.float(), size=tuple(size), mode="nearest").bool()


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the active positions only (BatchNorm1d on the (N_active, C) rows); zero elsewhere. Dense
    (over every position) when the context has no mask."""

    def __init__(self, num_features: int, context: SparseContext, **kw):
        super().__init__(num_features, **kw)
        self.context = context

    @classmethod
    def from_dense(cls, bn: nn.Module, context: SparseContext) -> "SparseBatchNorm":
        out = cls(bn.num_features, context, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats)
        out.load_state_dict(bn.state_dict())
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return super().forward(x)
        if self.context.active is None:
            return super().forward(x.flatten(2)).reshape(x.shape)
        keep = self.context.at(x.shape[2:])[:, 0]  # (B, *S)
        rows = x.movedim(1, -1)  # (B, *S, C)
        out = torch.zeros_like(rows)
        out[keep] = super().forward(rows[keep])
        return out.movedim(-1, 1)


def _mask_output(context: SparseContext, module, inputs, output):
    if context.active is None:
        return output
    return output * context.at(output.shape[2:]).to(output.dtype)


def sparsify(model: nn.Module, context: SparseContext) -> nn.Module:
    """Make ``model`` sparse in place (see the module docstring) and return it. Idempotent per module."""
    for name, child in list(model.named_children()):
        if isinstance(child, BATCH_NORMS) and not isinstance(child, SparseBatchNorm):
            setattr(model, name, SparseBatchNorm.from_dense(child, context))
        else:
            sparsify(child, context)
    if isinstance(model, MASKED_LAYERS) and not getattr(model, "_sparse_hook", False):
        model.register_forward_hook(partial(_mask_output, context))
        model._sparse_hook = True
    return model
