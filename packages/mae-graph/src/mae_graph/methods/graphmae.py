"""GraphMAE (Hou et al., KDD 2022), following the authors' code (THUDM/GraphMAE, ``PreModel``).

Per forward pass (= one epoch for a node-level graph, one mini-batch of graphs for graph-level data):

1. ``mask_rate`` of the nodes are masked (``mae_core.masking.random_masking`` over the nodes = tokens, with the
   generator the trainer passes in). Of the masked nodes, ``int(replace_rate * M)`` get the input features of
   random nodes of the graph; the others get zeros + the learnable [MASK] vector ``enc_mask_token``.
2. The encoder (GAT for node-level, GIN for graph-level) runs on the corrupted features.
3. Re-mask: ``encoder_to_decoder`` (bias-free linear) and the rows of the masked nodes are set to zero.
4. A one-layer decoder (GAT with one head / GIN) reconstructs the input features; the scaled cosine error
   ``mean((1 - cos(x_hat, x)) ** alpha)`` over the masked nodes is the loss (or MSE).

``encode`` embeds the unmasked graph with the encoder: node embeddings of ``batch["node_index"]`` for node-level
data, pooled per graph (mean / max / sum, ``pooling``) for graph-level batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from mae_core.config import field
from mae_core.masking import random_masking
from mae_core.models import ModelOutput

from ..gnn import GAT, GIN, sce_loss


@dataclass
class GraphMAEConfig:
    in_dim: int = field(100, "input feature dimension (set from the data)")
    encoder: str = field("gat", "encoder GNN: gat (node-level) or gin (graph-level)", choices=["gat", "gin"])
    decoder: str = field("gat", "decoder GNN (one layer): gat or gin", choices=["gat", "gin"])
    num_hidden: int = field(256, "hidden width (GAT: heads x units per head, concatenated)")
    num_layers: int = field(2, "encoder layers")
    num_heads: int = field(4, "GAT encoder heads")
    num_out_heads: int = field(1, "GAT decoder heads")
    activation: str = field("prelu", "activation", choices=["prelu", "relu", "elu", "gelu"])
    in_drop: float = field(0.2, "dropout on every layer's input features")
    attn_drop: float = field(0.1, "GAT attention dropout")
    negative_slope: float = field(0.2, "GAT leaky-relu slope")
    norm: str | None = field(None, "normalisation inside the GNN: none, batchnorm or layernorm")
    mask_rate: float = field(0.5, "fraction of nodes masked")
    replace_rate: float = field(0.05, "share of masked nodes given a random node's features instead of [MASK]")
    loss_fn: str = field("sce", "sce (scaled cosine error) or mse", choices=["sce", "mse"])
    alpha_l: float = field(3.0, "SCE exponent alpha")
    pooling: str = field("mean", "graph readout for graph-level encode: mean, max or sum",
                         choices=["mean", "max", "sum"])
    # node-classification evaluation protocol (probe `logreg`); kept with the model as in the paper's configs
    lr_f: float = field(0.01, "logreg probe: Adam learning rate")
    weight_decay_f: float = field(1e-4, "logreg probe: weight decay")
    max_epoch_f: int = field(300, "logreg probe: epochs")
    probe_seeds: int = field(20, "logreg probe: seeds averaged (mean +- std)")


class GraphMAE(nn.Module):
    def __init__(self, config: GraphMAEConfig):
        super().__init__()
        self.config = c = config
        if c.encoder == "gat":
            self.encoder = GAT(c.in_dim, c.num_hidden, c.num_hidden, c.num_layers, c.num_heads, c.num_heads,
                               c.activation, c.in_drop, c.attn_drop, c.negative_slope, last_activation=True,
                               norm=c.norm)
        else:
            self.encoder = GIN(c.in_dim, c.num_hidden, c.num_hidden, c.num_layers, c.activation, c.norm, c.in_drop,
                               last_activation=True)
        if c.decoder == "gat":
            self.decoder = GAT(c.num_hidden, c.num_hidden, c.in_dim, 1, c.num_heads, c.num_out_heads, c.activation,
                               c.in_drop, c.attn_drop, c.negative_slope, last_activation=False)
        else:
            self.decoder = GIN(c.num_hidden, c.num_hidden, c.in_dim, 1, c.activation, c.norm, c.in_drop,
                               last_activation=False)
        self.enc_mask_token = nn.Parameter(torch.zeros(1, c.in_dim))
        self.encoder_to_decoder = nn.Linear(c.num_hidden, c.num_hidden, bias=False)

    # ---- masking ----------------------------------------------------------------------------------------------------
    def mask_nodes(self, x: torch.Tensor, generator=None):
        """Returns (corrupted x, mask (N,) bool, token_nodes, noise_nodes)."""
        n = x.shape[0]
        info = random_masking(1, n, self.config.mask_rate, generator=generator, device=x.device)
        mask = info.mask[0].bool()
        masked = mask.nonzero().flatten()
        m = masked.numel()
        n_noise = int(self.config.replace_rate * m)
        out = x.clone()
        if n_noise > 0:
            perm = random_masking(1, m, 0.0, generator=generator, device=x.device).ids_keep[0]
            noise_nodes, token_nodes = masked[perm[:n_noise]], masked[perm[n_noise:]]
            source = random_masking(1, n, 0.0, generator=generator, device=x.device).ids_keep[0][:n_noise]
            out[token_nodes] = 0.0
            out[noise_nodes] = x[source]
        else:
            token_nodes, noise_nodes = masked, masked[:0]
            out[token_nodes] = 0.0
        out[token_nodes] += self.enc_mask_token.to(out.dtype)
        return out, mask, token_nodes, noise_nodes

    # ---- contract ----------------------------------------------------------------------------------------------------
    def forward(self, batch: dict, generator=None) -> ModelOutput:
        g = batch["graph"]
        x, edge_index = g.x.float(), g.edge_index
        use_x, mask, token_nodes, noise_nodes = self.mask_nodes(x, generator)
        enc = self.encoder(use_x, edge_index)
        rep = self.encoder_to_decoder(enc)
        rep = rep.masked_fill(mask[:, None], 0.0)  # re-mask
        recon = self.decoder(rep, edge_index)
        x_rec, x_init = recon[mask], x[mask]
        if self.config.loss_fn == "sce":
            loss = sce_loss(x_rec, x_init, self.config.alpha_l)
        else:
            loss = F.mse_loss(x_rec, x_init)
        return ModelOutput(loss=loss, pred=recon, mask=mask.float(), target=x,
                           metrics={"masked_nodes": float(mask.sum())},
                           extra={"token_nodes": token_nodes, "noise_nodes": noise_nodes})

    def embed(self, batch: dict) -> torch.Tensor:
        g = batch["graph"]
        return self.encoder(g.x.float(), g.edge_index)

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        h = self.embed(batch)
        if "node_index" in batch:
            return h[batch["node_index"]]
        g = batch["graph"]
        b = g.batch if getattr(g, "batch", None) is not None else torch.zeros(h.shape[0], dtype=torch.long,
                                                                               device=h.device)
        pool = pool if pool in ("mean", "max", "sum") else self.config.pooling
        return {"mean": global_mean_pool, "max": global_max_pool, "sum": global_add_pool}[pool](h, b)

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.num_hidden

    def num_layers(self) -> int:
        return self.config.num_layers + 1

    def layer_id(self, name: str) -> int:
        if name.startswith("encoder.layers.") or name.startswith("encoder.acts.") or name.startswith("encoder.post."):
            return int(name.split(".")[2]) + 1
        if name.startswith("enc_mask_token"):
            return 0
        return self.num_layers()
