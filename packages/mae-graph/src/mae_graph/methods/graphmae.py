"""GraphMAE (Hou et al., KDD 2022), following the authors' code (THUDM/GraphMAE, ``PreModel``).

Per forward pass (= one epoch for a node-level graph, one mini-batch of graphs for graph-level data):

1. ``mask_rate`` of the nodes are masked (``mae_core.masking.random_masking`` over the nodes = tokens, with the
   generator the trainer passes in). Of the masked nodes, ``int(replace_rate * M)`` get the input features of
   random nodes of the graph; the others get zeros + the learnable [MASK] vector ``enc_mask_token``.
2. The encoder (GAT for node-level, GIN for graph-level) runs on the corrupted features.
3. Re-mask: ``encoder_to_decoder`` (bias-free linear) and the rows of the masked nodes are set to zero.
4. A one-layer decoder (GAT with one head / GIN) reconstructs the input features; the scaled cosine error
   ``mean((1 - cos(x_hat, x)) ** alpha)`` over the masked nodes is the loss (or MSE). ``pred`` / ``target`` are
   the reconstructed / original features of the masked nodes (in node order).

Speed (exact reformulations, no approximation): with sparse bag-of-words features (Cora: 1.3 % nonzero) the first
GAT layer's projection is a sparse CSR x dense product, the corrupted input is never built densely ([MASK] rows are
``token @ W``, replaced rows gather other nodes' sparse rows); the GAT decoder reconstructs only the masked rows and,
as it widens (hidden -> input dim), aggregates before projecting (see :class:`mae_graph.gnn.GATLayer`). One
difference from the dense path: the input dropout is applied to the nodes' features but not to the [MASK] vector.

``encode`` embeds the unmasked graph with the encoder: node embeddings of ``batch["node_index"]`` for node-level
data, pooled per graph (mean / max / sum, ``pooling``) for graph-level batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.masking import random_masking
from mae_core.contract import PretrainedMixin
from mae_core.errors import MaeError
from mae_core.models import ModelOutput

from ..gnn import GAT, GIN, csr_rows, keep_mask, sce_loss, sce_loss_linear


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
    residual: bool = field(False, "residual connection in every encoder layer (the authors' --residual)")
    drop_edge_rate: float = field(0.0, "pretraining: each edge dropped with this probability per forward pass, "
                                       "then one self loop per node added (the authors' drop_edge)")
    concat_hidden: bool = field(False, "the decoder reads all encoder layers concatenated (the authors' "
                                       "--concat_hidden; encode still returns the last layer)")
    mask_rate: float = field(0.5, "fraction of nodes masked (in (0, 1): the loss is over the masked nodes)")
    replace_rate: float = field(0.05, "share of masked nodes given a random node's features instead of [MASK]")
    loss_fn: str = field("sce", "sce (scaled cosine error) or mse", choices=["sce", "mse"])
    alpha_l: float = field(3.0, "SCE exponent alpha")
    sparse_input: float = field(0.1, "GAT encoder: when fewer than this share of the input features are nonzero "
                                     "(bag-of-words), the first layer multiplies a sparse x (0 = always dense)")
    token_dropout: bool = field(False, "sparse path: give each [MASK] row its own input dropout, exactly as the "
                                       "authors' dense input (costs a dense (masked x in_dim x hidden) product, "
                                       "about two fifths more epoch time on Cora); off = every [MASK] row is token @ W")
    decay_all: bool = field(True, "weight decay on every parameter (biases, PReLU slopes, [MASK] token), as the "
                                  "authors' Adam does; off = mae-core's default groups (no decay on 1-D params)")
    pooling: str = field("mean", "graph readout for graph-level encode: mean, max or sum",
                         choices=["mean", "max", "sum"])
    # node-classification evaluation protocol (probe `logreg`); kept with the model as in the paper's configs
    lr_f: float = field(0.01, "logreg probe: Adam learning rate")
    weight_decay_f: float = field(1e-4, "logreg probe: weight decay")
    max_epoch_f: int = field(300, "logreg probe: epochs")
    probe_seeds: int = field(20, "logreg probe: seeds averaged (mean +- std)")

    def validate(self, where: str = "model") -> None:
        """A mask rate of 0 masks no node: the loss (a mean over the masked nodes) would be NaN."""
        from mae_core.config import check_range
        from mae_core.errors import ConfigError

        if self.mask_rate <= 0 or self.mask_rate >= 1:
            raise ConfigError(f"{where}.mask_rate: {self.mask_rate} masks {'no' if self.mask_rate <= 0 else 'every'}"
                              " node, so there is nothing to reconstruct from; give a rate in (0, 1), e.g. 0.5")
        check_range(self.replace_rate, {"ge": 0, "le": 1}, f"{where}.replace_rate")
        check_range(self.drop_edge_rate, {"ge": 0, "lt": 1}, f"{where}.drop_edge_rate")


class GraphMAE(PretrainedMixin, nn.Module):
    def __init__(self, config: GraphMAEConfig):
        super().__init__()
        self.config = c = config
        if c.encoder == "gat":
            self.encoder = GAT(c.in_dim, c.num_hidden, c.num_hidden, c.num_layers, c.num_heads, c.num_heads,
                               c.activation, c.in_drop, c.attn_drop, c.negative_slope, last_activation=True,
                               norm=c.norm, residual=c.residual)
        else:
            self.encoder = GIN(c.in_dim, c.num_hidden, c.num_hidden, c.num_layers, c.activation, c.norm, c.in_drop,
                               last_activation=True, residual=c.residual)
        if c.decoder == "gat":
            self.decoder = GAT(c.num_hidden, c.num_hidden, c.in_dim, 1, c.num_heads, c.num_out_heads, c.activation,
                               c.in_drop, c.attn_drop, c.negative_slope, last_activation=False)
        else:
            self.decoder = GIN(c.num_hidden, c.num_hidden, c.in_dim, 1, c.activation, c.norm, c.in_drop,
                               last_activation=False)
        self.enc_mask_token = nn.Parameter(torch.zeros(1, c.in_dim))
        enc_width = c.num_hidden * (c.num_layers if c.concat_hidden else 1)
        self.encoder_to_decoder = nn.Linear(enc_width, c.num_hidden, bias=False)

    @property
    def decay_all_params(self) -> bool:  # read by mae_core.train.param_groups
        return self.config.decay_all

    # ---- masking ----------------------------------------------------------------------------------------------------
    def draw_mask(self, n: int, generator=None, device=None):
        """``(mask (N,) bool, token_nodes, noise_nodes, source)``: ``mask_rate`` of the nodes masked; of the ``M``
        masked nodes ``int(replace_rate * M)`` (``noise_nodes``) take the features of the random nodes ``source``,
        the rest (``token_nodes``) get zeros + [MASK]."""
        info = random_masking(1, n, self.config.mask_rate, generator=generator, device=device)
        mask = info.mask[0].bool()
        masked = mask.nonzero().flatten()
        m = masked.numel()
        n_noise = int(self.config.replace_rate * m)
        if n_noise > 0:
            perm = random_masking(1, m, 0.0, generator=generator, device=device).ids_keep[0]
            noise_nodes, token_nodes = masked[perm[:n_noise]], masked[perm[n_noise:]]
            source = random_masking(1, n, 0.0, generator=generator, device=device).ids_keep[0][:n_noise]
        else:
            token_nodes, noise_nodes, source = masked, masked[:0], masked[:0]
        return mask, token_nodes, noise_nodes, source

    def mask_nodes(self, x: torch.Tensor, generator=None):
        """Dense corruption. Returns (corrupted x, mask (N,) bool, token_nodes, noise_nodes)."""
        mask, token_nodes, noise_nodes, source = self.draw_mask(x.shape[0], generator, x.device)
        out = x.clone()
        out[token_nodes] = 0.0
        if noise_nodes.numel():
            out[noise_nodes] = x[source]
        out[token_nodes] += self.enc_mask_token.to(out.dtype)
        return out, mask, token_nodes, noise_nodes

    # ---- sparse first layer -----------------------------------------------------------------------------------------
    def sparse_features(self, x: torch.Tensor) -> torch.Tensor | None:
        """``x`` as a CSR tensor when the GAT encoder should take the sparse path (share of nonzeros below
        ``sparse_input``), else None. Cached per input tensor, so it is built once per dataset, not per epoch."""
        c = self.config
        if c.encoder != "gat" or c.sparse_input <= 0 or x.layout != torch.strided or c.residual:
            return None
        key = (x.data_ptr(), tuple(x.shape), x._version, x.device)
        cache = getattr(self, "_csr_cache", None)
        if cache is None or cache[0] != key:
            nnz = int(torch.count_nonzero(x))
            csr = x.to_sparse_csr() if nnz < self.config.sparse_input * x.numel() else None
            cache = (key, csr)
            object.__setattr__(self, "_csr_cache", cache)  # a cache, not a parameter / buffer
        return cache[1]

    def corrupted_projection(self, xs: torch.Tensor, token_nodes, noise_nodes, source) -> torch.Tensor:
        """First GAT layer's projection of the corrupted input without densifying it: rows of the kept nodes are
        ``x_i @ W``, replaced nodes get another node's sparse row (then the same input dropout), [MASK] rows are
        ``token @ W``. Equal to ``project(dropout(corrupted x))`` except that the [MASK] vector is not dropped out,
        unless ``token_dropout`` is set: then each [MASK] row is ``(keep_i * token) @ W / (1 - p)`` (exact)."""
        n = xs.shape[0]
        rows = torch.arange(n, device=xs.device)
        rows[noise_nodes] = source
        xc = csr_rows(xs, rows, empty=token_nodes)
        first = self.encoder.layers[0]
        proj = first.project(self.encoder.sparse_dropout(xc))
        token = self.enc_mask_token.to(proj.dtype)
        p = self.encoder.drop.p
        if self.config.token_dropout and self.training and p > 0:
            keep, scale = keep_mask((len(token_nodes), token.shape[1]), p, proj.device, proj.dtype)
            token_rows = first.project(keep * token, scale)
        else:
            token_rows = first.project(token).expand(len(token_nodes), -1)
        return proj.index_copy_(0, token_nodes, token_rows)  # in place: a fresh tensor

    def drop_edges(self, edge_index: torch.Tensor, n: int, generator=None) -> torch.Tensor:
        """The authors' ``drop_edge``: every edge kept with probability ``1 - drop_edge_rate`` (one draw per edge
        from ``generator``), then one self loop per node added (a GAT keeps exactly one loop per node anyway)."""
        draw = torch.rand(edge_index.shape[1], generator=generator, device=edge_index.device)
        keep = draw >= self.config.drop_edge_rate
        loops = torch.arange(n, device=edge_index.device).expand(2, n)
        return torch.cat([edge_index[:, keep], loops], 1)

    # ---- contract ----------------------------------------------------------------------------------------------------
    def forward(self, batch: dict, generator=None) -> ModelOutput:
        g = batch["graph"]
        x, edge_index = g.x.float(), g.edge_index
        n = x.shape[0]
        xs = self.sparse_features(x)
        if xs is not None:
            mask, token_nodes, noise_nodes, source = self.draw_mask(n, generator, x.device)
        else:
            use_x, mask, token_nodes, noise_nodes = self.mask_nodes(x, generator)
        if self.config.drop_edge_rate > 0:  # encoder and decoder both see the thinned graph, as the authors'
            edge_index = self.drop_edges(edge_index, n, generator)
        if xs is not None:
            enc, hidden = self.encoder(None, edge_index, return_hidden=True, num_nodes=n,
                                       proj0=self.corrupted_projection(xs, token_nodes, noise_nodes, source))
        else:
            enc, hidden = self.encoder(use_x, edge_index, return_hidden=True)
        if self.config.concat_hidden:
            enc = torch.cat(hidden, 1)
        masked = mask.nonzero().flatten()
        if masked.numel() == 0:  # the loss is a mean over the masked nodes: say why instead of a NaN loss
            raise MaeError(f"mask_rate={self.config.mask_rate} masks no node of this {n}-node batch, so the loss is "
                           "undefined; raise --mask-rate (or use larger graphs / batches)")
        extra = {"token_nodes": token_nodes, "noise_nodes": noise_nodes, "masked_nodes": masked}
        metrics = {"masked_nodes": float(masked.numel())}
        if xs is not None and self.fused_decoder():
            loss, x_rec = self.fused_decode(enc, edge_index, mask, masked, xs)
            x_init = x[masked] if x_rec is not None else None
            return ModelOutput(loss=loss, pred=x_rec, mask=mask.float(), target=x_init, metrics=metrics, extra=extra)
        rep = self.encoder_to_decoder(enc)
        rep = rep.masked_fill(mask[:, None], 0.0)  # re-mask
        if self.config.decoder == "gat":  # only the masked rows are reconstructed (all the loss needs)
            x_rec = self.decoder(rep, edge_index, rows=masked)
        else:
            x_rec = self.decoder(rep, edge_index)[masked]
        x_init = x[masked]
        if self.config.loss_fn == "sce":
            loss = sce_loss(x_rec, x_init, self.config.alpha_l)
        else:
            loss = F.mse_loss(x_rec, x_init)
        return ModelOutput(loss=loss, pred=x_rec, mask=mask.float(), target=x_init, metrics=metrics, extra=extra)

    # ---- fused decoder + loss (sparse bag-of-words input) -------------------------------------------------------------
    def fused_decoder(self) -> bool:
        """The decoder and loss can run in the hidden space: a one-head widening GAT decoder, SCE loss."""
        c = self.config
        return (c.decoder == "gat" and c.num_out_heads == 1 and c.loss_fn == "sce" and c.num_hidden < c.in_dim
                and isinstance(self.decoder.acts[0].act, nn.Identity) and isinstance(self.decoder.acts[0].norm,
                                                                                     nn.Identity))

    def fused_decode(self, enc: torch.Tensor, edge_index: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor,
                     xs: torch.Tensor):
        """Re-mask + decoder + SCE, equal to the plain path (up to rounding) but cheaper:

        * ``encoder_to_decoder`` runs on the kept nodes only (the masked rows are zeroed right after), and so does
          the decoder's input dropout (dropout of a zero row is zero);
        * the decoder aggregates its inputs over the edges into the masked nodes, and only from the kept nodes (the
          others' inputs are zero: :meth:`GATLayer.aggregate_between`), and the SCE is computed from that aggregate
          and the decoder's linear map (:func:`sce_loss_linear`): the (masked nodes x input features)
          reconstruction is never formed while training.

        Returns ``(loss, x_rec)``; ``x_rec`` (the reconstruction of the masked nodes) only in eval mode, else None."""
        kept = (~mask).nonzero().flatten()
        layer = self.decoder.layers[0]
        p = self.decoder.drop.p
        weight = self.encoder_to_decoder.weight
        if self.training and p > 0:  # decoder input dropout; its 1/(1-p) scale goes on the linear map before it
            keep, scale = keep_mask((len(kept), weight.shape[0]), p, enc.device, enc.dtype)
            rep_kept = F.linear(enc[kept], weight * scale) * keep
        else:
            rep_kept = F.linear(enc[kept], weight)
        # re-mask: the masked nodes' decoder inputs are zero, so only edges kept -> masked carry anything
        g = layer.aggregate_between(rep_kept, kept, masked, self.decoder.edges(edge_index, enc.shape[0]))
        loss = sce_loss_linear(g, layer.weight, layer.bias, csr_rows(xs, masked), alpha=self.config.alpha_l)
        x_rec = None if self.training else F.linear(g, layer.weight, layer.bias)
        return loss, x_rec

    def embed(self, batch: dict) -> torch.Tensor:
        g = batch["graph"]
        x = g.x.float()
        if self.config.encoder != "gat":
            return self.encoder(x, g.edge_index)
        xs = self.sparse_features(x)
        return self.encoder(x if xs is None else xs, g.edge_index, num_nodes=x.shape[0])

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        h = self.embed(batch)
        if "node_index" in batch:
            return h[batch["node_index"]]
        g = batch["graph"]
        b = g.batch if getattr(g, "batch", None) is not None else torch.zeros(h.shape[0], dtype=torch.long,
                                                                               device=h.device)
        pool = pool if pool in ("mean", "max", "sum") else self.config.pooling
        from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

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
