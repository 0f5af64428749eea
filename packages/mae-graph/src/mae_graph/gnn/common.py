"""Activations and norms as the GraphMAE code creates them, and the norm + activation block."""
from __future__ import annotations

import torch.nn as nn


def make_activation(name: str | None) -> nn.Module:
    if name in (None, "none", "identity"):
        return nn.Identity()
    if name == "prelu":
        return nn.PReLU()  # one slope per layer, as torch's default (GraphMAE create_activation)
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation {name!r}")


def make_norm(name: str | None, dim: int) -> nn.Module:
    if name in (None, "none"):
        return nn.Identity()
    if name == "batchnorm":
        return nn.BatchNorm1d(dim)
    if name == "layernorm":
        return nn.LayerNorm(dim)
    raise ValueError(f"unknown norm {name!r}")


class _NormAct(nn.Module):
    """Norm over the last dim for (N, F) or (B, N, F) inputs, then activation."""

    def __init__(self, norm: str | None, act: str | None, dim: int):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.act = make_activation(act)

    def forward(self, x):
        if isinstance(self.norm, nn.BatchNorm1d) and x.dim() == 3:
            x = self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        else:
            x = self.norm(x)
        return self.act(x)
