"""VectorNet parts (Gao et al., CVPR 2020), as the trajectory-MAE reference builds on them (denseTNT's VectorNet):

* :class:`PolylineSubgraph` -- every vector of a polyline is a node of a fully connected subgraph; each layer
  encodes the nodes (Linear + LayerNorm + ReLU to ``hidden / 2``), max-pools them per polyline (PyG ``scatter``,
  ``reduce="max"``) and concatenates the pooled vector to every node; the polyline feature is the max over its nodes
  after the last layer (VectorNet's subgraph, three layers). Only valid vectors become nodes.
* :class:`GlobalGraph` -- self-attention over the polyline features of a scene, with padding and dropped polylines
  masked out of the keys (VectorNet's one-layer global interaction graph; the reference's ``GlobalGraph`` is
  single-head attention).
* :class:`ResidualHead` -- ``h + MLP(h)`` then a linear map: the reference's ``Pre_Train_DecoderRes``.
* :class:`MultiModalHead` -- the fine-tuning head: K trajectories of T points and K mode logits from the focal
  agent's feature.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from mae_core.layers.blocks import Attention


def mlp(din: int, dout: int) -> nn.Sequential:
    """The reference's ``MLP``: Linear + LayerNorm + ReLU."""
    return nn.Sequential(nn.Linear(din, dout), nn.LayerNorm(dout), nn.ReLU())


class PolylineSubgraph(nn.Module):
    def __init__(self, in_dim: int, hidden: int, depth: int = 3):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"the polyline subgraph concatenates two halves: hidden must be even, got {hidden}")
        self.hidden = hidden
        self.layers = nn.ModuleList([mlp(in_dim if i == 0 else hidden, hidden // 2) for i in range(depth)])

    def forward(self, vectors: torch.Tensor, vector_mask: torch.Tensor) -> torch.Tensor:
        """(B, P, V, F) vectors, (B, P, V) bool -> (B, P, hidden) polyline features (zero for empty polylines)."""
        from torch_geometric.utils import scatter  # here, not at import: PyG loads torch._dynamo

        b, p, v, _ = vectors.shape
        flat = vector_mask.reshape(-1).nonzero().squeeze(1)
        index = flat // v  # polyline (over the batch) of each node
        h = vectors.reshape(b * p * v, -1)[flat]
        for layer in self.layers:
            h = layer(h)
            pooled = scatter(h, index, dim=0, dim_size=b * p, reduce="max")
            h = torch.cat([h, pooled[index]], dim=-1)
        out = scatter(h, index, dim=0, dim_size=b * p, reduce="max")
        return out.reshape(b, p, self.hidden)


class GlobalGraph(nn.Module):
    def __init__(self, hidden: int, heads: int = 1, depth: int = 1):
        super().__init__()
        self.layers = nn.ModuleList([Attention(hidden, num_heads=heads, qkv_bias=False) for _ in range(depth)])

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """(B, P, D) polyline features, (B, P) bool (True = may be attended) -> (B, P, D)."""
        am = key_mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attn_mask=am)
        return x


class ResidualHead(nn.Module):
    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.mlp = mlp(hidden, hidden)
        self.fc = nn.Linear(hidden, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h + self.mlp(h))


class MultiModalHead(nn.Module):
    """(B, D) -> trajectories (B, K, T, 2) and mode logits (B, K)."""

    def __init__(self, hidden: int, modes: int = 6, steps: int = 30):
        super().__init__()
        self.modes, self.steps = modes, steps
        self.traj = nn.Sequential(mlp(hidden, hidden), ResidualHead(hidden, modes * steps * 2))
        self.score = nn.Sequential(mlp(hidden, hidden), nn.Linear(hidden, modes))

    def forward(self, h: torch.Tensor):
        return self.traj(h).reshape(-1, self.modes, self.steps, 2), self.score(h)
