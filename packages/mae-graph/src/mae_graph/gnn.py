"""Graph layers shared by the graph methods, as the GraphMAE code builds them (on PyTorch Geometric convolutions
over a plain ``edge_index``): a GAT stack (heads concatenated, feature + attention dropout, PReLU, optional last
activation), a GIN stack (2-layer MLP per layer, norm + activation applied to the node function), dense GIN layers
for fixed small graphs (skeletons), and the scaled cosine error.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import DenseGINConv, GATConv, GINConv


def make_activation(name: str | None, dim: int | None = None) -> nn.Module:
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


def sce_loss(x: torch.Tensor, y: torch.Tensor, alpha: float = 3.0) -> torch.Tensor:
    """Scaled cosine error (GraphMAE eq. 2): mean over rows of ``(1 - cos(x, y)) ** alpha``."""
    x = F.normalize(x, p=2, dim=-1)
    y = F.normalize(y, p=2, dim=-1)
    return (1 - (x * y).sum(dim=-1)).pow(alpha).mean()


class _NormAct(nn.Module):
    """Norm over the last dim for (N, F) or (B, N, F) inputs, then activation."""

    def __init__(self, norm: str | None, act: str | None, dim: int):
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.act = make_activation(act, dim)

    def forward(self, x):
        if isinstance(self.norm, nn.BatchNorm1d) and x.dim() == 3:
            x = self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        else:
            x = self.norm(x)
        return self.act(x)


class GAT(nn.Module):
    """GraphMAE's GAT: ``num_layers`` GATConv layers with ``heads`` heads of ``hidden // heads`` units each,
    concatenated; dropout on every layer's input features (``in_drop``) and attention (``attn_drop``); PReLU between
    layers and, for an encoder (``last_activation=True``), after the last one. ``out_dim`` is the total width of the
    last layer (``out_heads`` heads of ``out_dim // out_heads`` units, concatenated)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, heads: int, out_heads: int,
                 activation: str = "prelu", in_drop: float = 0.2, attn_drop: float = 0.1,
                 negative_slope: float = 0.2, last_activation: bool = True, norm: str | None = None):
        super().__init__()
        if hidden % heads or out_dim % out_heads:
            raise ValueError(f"hidden {hidden} / out_dim {out_dim} must be divisible by the number of heads")
        self.layers = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.drop = nn.Dropout(in_drop)
        d = in_dim
        for i in range(num_layers):
            last = i == num_layers - 1
            h, o = (out_heads, out_dim) if last else (heads, hidden)
            self.layers.append(GATConv(d, o // h, heads=h, concat=True, dropout=attn_drop,
                                       negative_slope=negative_slope, add_self_loops=True))
            act = activation if (not last or last_activation) else None
            self.acts.append(_NormAct(norm if (not last or last_activation) else None, act, o))
            d = o

    def forward(self, x, edge_index, return_hidden: bool = False):
        hidden = []
        for conv, act in zip(self.layers, self.acts):
            x = act(conv(self.drop(x), edge_index))
            hidden.append(x)
        return (x, hidden) if return_hidden else x


def gin_mlp(in_dim: int, hidden: int, out_dim: int, activation: str, norm: str | None) -> nn.Sequential:
    """GraphMAE's 2-layer MLP inside a GIN layer: Linear -> norm -> act -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), _NormAct(norm, activation, hidden), nn.Linear(hidden, out_dim))


class GIN(nn.Module):
    """GraphMAE's GIN (eps = 0, not learnt): every layer ``MLP(2)`` followed by norm + activation
    ("ApplyNodeFunc"); the last layer has them only for an encoder (``last_activation=True``). With
    ``dense=True`` the layers are :class:`DenseGINConv` on a fixed (V, V) adjacency, for batches of equal small
    graphs such as skeleton frames ``(B, V, F)``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int, activation: str = "prelu",
                 norm: str | None = "batchnorm", in_drop: float = 0.2, last_activation: bool = True,
                 dense: bool = False):
        super().__init__()
        self.dense = dense
        self.drop = nn.Dropout(in_drop)
        self.layers = nn.ModuleList()
        self.post = nn.ModuleList()
        d = in_dim
        for i in range(num_layers):
            last = i == num_layers - 1
            o = out_dim if last else hidden
            mlp = gin_mlp(d, hidden, o, activation, norm)
            conv = DenseGINConv(mlp, eps=0.0, train_eps=False) if dense else GINConv(mlp, eps=0.0, train_eps=False)
            self.layers.append(conv)
            self.post.append(_NormAct(norm, activation, o) if (not last or last_activation) else nn.Identity())
            d = o

    def forward(self, x, edge_index_or_adj, return_hidden: bool = False):
        hidden = []
        for conv, post in zip(self.layers, self.post):
            x = conv(self.drop(x), edge_index_or_adj)
            x = post(x)
            hidden.append(x)
        return (x, hidden) if return_hidden else x
