"""GraphMAE's GIN (sparse edges, PyG ``GINConv``) and dense GIN layers for fixed small graphs."""
from __future__ import annotations

import torch.nn as nn

from .common import _NormAct


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
                 dense: bool = False, residual: bool = False):
        from torch_geometric.nn import DenseGINConv, GINConv  # here, not at import: PyG loads torch._dynamo

        super().__init__()
        self.dense = dense
        self.drop = nn.Dropout(in_drop)
        self.layers = nn.ModuleList()
        self.post = nn.ModuleList()
        # residual (GraphMAE's GINConv res_fc on the layer's dropped-out input, added after norm + activation); a
        # decoder's last layer has none
        self.res = nn.ModuleList()
        d = in_dim
        for i in range(num_layers):
            last = i == num_layers - 1
            o = out_dim if last else hidden
            mlp = gin_mlp(d, hidden, o, activation, norm)
            conv = DenseGINConv(mlp, eps=0.0, train_eps=False) if dense else GINConv(mlp, eps=0.0, train_eps=False)
            self.layers.append(conv)
            self.post.append(_NormAct(norm, activation, o) if (not last or last_activation) else nn.Identity())
            use_res = residual and (not last or last_activation)
            self.res.append((nn.Identity() if d == o else nn.Linear(d, o, bias=False)) if use_res else None)
            d = o

    def forward(self, x, edge_index_or_adj, return_hidden: bool = False):
        hidden = []
        for conv, post, res in zip(self.layers, self.post, self.res):
            xin = self.drop(x)
            x = post(conv(xin, edge_index_or_adj))
            if res is not None:
                x = x + res(xin)
            hidden.append(x)
        return (x, hidden) if return_hidden else x
