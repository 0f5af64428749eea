"""Graph layers shared by the graph methods, as the GraphMAE code builds them (on PyTorch Geometric convolutions
over a plain ``edge_index``): a GAT stack (heads concatenated, feature + attention dropout, PReLU, optional last
activation), a GIN stack (2-layer MLP per layer, norm + activation applied to the node function), dense GIN layers
for fixed small graphs (skeletons), and the scaled cosine error.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import DenseGINConv, GINConv

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


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


class _SquaredNorms(torch.autograd.Function):
    """``|W g_i|^2`` for every row of ``g`` as ``g_i^T (W^T W) g_i``, with a hand-written backward that uses
    ``d/dg = 2 (W^T W) g`` (already computed) and ``d/dW = 2 W g^T diag(c) g``: three products of D x D size instead
    of the five autograd would run."""

    @staticmethod
    def forward(ctx, g, w):
        q = g @ (w.t() @ w)
        ctx.save_for_backward(g, w, q)
        return (q * g).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        g, w, q = ctx.saved_tensors
        grad_g = 2 * grad[:, None] * q if ctx.needs_input_grad[0] else None
        grad_w = 2 * (w @ (g.t() @ (grad[:, None] * g))) if ctx.needs_input_grad[1] else None
        return grad_g, grad_w


def sce_loss_linear(g: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                    target_norm: torch.Tensor | None = None, alpha: float = 3.0) -> torch.Tensor:
    """:func:`sce_loss` of ``x_hat = g @ weight.T + bias`` against ``target`` without forming ``x_hat``.

    For a linear last layer that widens (``g`` (M, D) -> ``x_hat`` (M, F), F > D) and a sparse target (bag-of-words
    rows as a CSR tensor), the two terms of the cosine are computed in the narrow space:
    ``<x_hat, x> = g . (x @ W) + x . b`` (a sparse product) and
    ``|x_hat|^2 = g^T (W^T W) g + 2 g . (W^T b) + |b|^2`` (a D x D Gram matrix). Exact up to rounding; the
    forward + backward cost drops from ~6 M F D to ~2 F D^2 + ~4 M D^2 and no (M, F) tensor exists.
    ``target_norm`` (M,) are the rows' L2 norms (computed from ``target`` when omitted)."""
    if target.layout == torch.strided:
        tw = target @ weight
        tb = target @ bias if bias is not None else None
        tn = target.norm(dim=-1) if target_norm is None else target_norm
    else:
        tw = torch.sparse.mm(target, weight)
        tb = torch.sparse.mm(target, bias[:, None])[:, 0] if bias is not None else None
        if target_norm is None:
            vals = target.values()
            rows = torch.repeat_interleave(torch.arange(target.shape[0], device=vals.device),
                                           target.crow_indices().diff())
            target_norm = torch.zeros(target.shape[0], dtype=vals.dtype, device=vals.device).index_add_(
                0, rows, vals.square()).sqrt()
        tn = target_norm
    dot = (g * tw).sum(-1)
    sq = _SquaredNorms.apply(g, weight)
    if bias is not None:
        dot = dot + tb
        sq = sq + 2 * (g @ (weight.t() @ bias)) + bias.square().sum()
    # F.normalize semantics: x / max(|x|, 1e-12)
    cos = dot / (sq.clamp_min(1e-24).sqrt() * tn.clamp_min(1e-12))  # sqrt(max(sq, eps^2)): no inf grad at 0
    return (1 - cos).pow(alpha).mean()


def csr_rows(x: torch.Tensor, rows: torch.Tensor, empty: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``rows`` of a CSR tensor ``x`` as a new (len(rows), F) CSR tensor (the values keep their autograd
    history); rows at the positions ``empty`` are left empty (all zero)."""
    crow, col, val = x.crow_indices(), x.col_indices(), x.values()
    lengths = (crow[1:] - crow[:-1])[rows]
    if empty is not None:
        lengths[empty] = 0
    new_crow = torch.zeros(len(rows) + 1, dtype=crow.dtype, device=crow.device)
    new_crow[1:] = lengths.cumsum(0)
    total = int(new_crow[-1])
    starts = torch.repeat_interleave(crow[:-1][rows], lengths, output_size=total)
    offs = torch.arange(total, device=crow.device) - torch.repeat_interleave(new_crow[:-1], lengths,
                                                                              output_size=total)
    idx = starts + offs
    return torch.sparse_csr_tensor(new_crow, col[idx], val[idx], (len(rows), x.shape[1]))


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout with the keep mask drawn by ``torch.rand`` (about 2x faster than ``F.dropout``'s bernoulli
    on CPU); same distribution: each element kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``."""
    if not training or p == 0:
        return x
    if p >= 1:
        return x * 0
    return x * ((torch.rand_like(x) >= p).to(x.dtype) * (1.0 / (1.0 - p)))


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


class GraphEdges:
    """A graph's edges for attention layers: self loops removed, one per node added (GraphMAE's graphs:
    ``remove_self_loop().add_self_loop()``), sorted by (destination, source); plus the CSR structures of the
    adjacency (rows = destinations) and of its transpose, built once per graph."""

    def __init__(self, edge_index: torch.Tensor, num_nodes: int):
        n = num_nodes
        keep = edge_index[0] != edge_index[1]
        loops = torch.arange(n, device=edge_index.device)
        src = torch.cat([edge_index[0][keep], loops])
        dst = torch.cat([edge_index[1][keep], loops])
        order = torch.argsort(dst * n + src)
        self.src, self.dst, self.num_nodes = src[order].contiguous(), dst[order].contiguous(), n
        self.crow = torch.zeros(n + 1, dtype=torch.long, device=src.device)
        self.crow[1:] = torch.bincount(self.dst, minlength=n).cumsum(0)
        self.perm_t = torch.argsort(self.src * n + self.dst)
        self.crow_t = torch.zeros(n + 1, dtype=torch.long, device=src.device)
        self.crow_t[1:] = torch.bincount(self.src, minlength=n).cumsum(0)
        self.col_t = self.dst[self.perm_t].contiguous()
        self._heads: dict = {}

    def __len__(self):
        return self.src.numel()

    def head_structure(self, heads: int) -> tuple:
        """CSR structures of the block-diagonal ``(N * heads, N * heads)`` adjacency that aggregates all heads in one
        sparse product over ``(N * heads, C)`` rows (row ``i * heads + k`` = node i, head k): ``(crow, col, idx,
        crow_t, col_t, idx_t)``, where ``idx`` / ``idx_t`` index the flattened ``(E, heads)`` attention. Cached."""
        if heads not in self._heads:
            H, n = heads, self.num_nodes
            dev = self.src.device
            deg = self.crow.diff()
            deg_t = self.crow_t.diff()
            k = torch.arange(H, device=dev)

            def expand(crow, deg, node_of_edge, other_of_edge, edge_ids):
                e = torch.arange(len(node_of_edge), device=dev)
                first = crow[:-1][node_of_edge]  # start of the node's block
                pos = first[:, None] * H + k[None, :] * deg[node_of_edge][:, None] + (e - first)[:, None]
                idx = torch.empty(len(e) * H, dtype=torch.long, device=dev)
                col = torch.empty_like(idx)
                idx[pos.flatten()] = (edge_ids[:, None] * H + k[None, :]).flatten()
                col[pos.flatten()] = (other_of_edge[:, None] * H + k[None, :]).flatten()
                crow_h = torch.zeros(n * H + 1, dtype=torch.long, device=dev)
                crow_h[1:] = deg.repeat_interleave(H).cumsum(0)
                return crow_h, col, idx

            a = expand(self.crow, deg, self.dst, self.src, torch.arange(len(self), device=dev))
            b = expand(self.crow_t, deg_t, self.src[self.perm_t], self.col_t, self.perm_t)
            self._heads[H] = (*a, *b)
        return self._heads[heads]


def prepare_edges(edge_index: torch.Tensor, num_nodes: int) -> GraphEdges:
    return GraphEdges(edge_index, num_nodes)


def edge_softmax(scores: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Softmax of edge scores ``(E, H)`` over the incoming edges of every destination node (vectorised:
    ``scatter_reduce`` amax for stability, ``index_add`` for the normaliser)."""
    idx = dst[:, None].expand_as(scores)
    smax = torch.full((num_nodes, scores.shape[1]), float("-inf"), dtype=scores.dtype, device=scores.device)
    smax = smax.scatter_reduce(0, idx, scores.detach(), reduce="amax", include_self=True)
    e = (scores - smax[dst]).exp()
    denom = torch.zeros_like(smax).index_add_(0, dst, e)
    return e / (denom[dst] + 1e-16)


class _EdgeAggregate(torch.autograd.Function):
    """``out[i, k] = sum_{j -> i} alpha[e, k] h[j, k]`` for all heads ``k`` as ONE sparse (CSR) x dense product: the
    block-diagonal ``(N H, N H)`` adjacency of :meth:`GraphEdges.head_structure` times ``h`` viewed as ``(N H, C)``;
    no (E, H, C) message tensor. Backward: ``grad_h = A^T grad`` (sparse product), ``grad_alpha[e, k] =
    <grad[dst_e, k], h[src_e, k]>`` (sampled dense-dense product on the edge pattern)."""

    @staticmethod
    def forward(ctx, alpha, h, edges):
        n, heads, c = h.shape
        crow, col, idx = edges.head_structure(heads)[:3]
        h2 = h.reshape(n * heads, c)
        ctx.save_for_backward(alpha, h2)
        ctx.edges = edges
        adj = torch.sparse_csr_tensor(crow, col, alpha.reshape(-1)[idx], (n * heads,) * 2)
        return torch.sparse.mm(adj, h2).view(n, heads, c)

    @staticmethod
    def backward(ctx, grad):
        alpha, h2 = ctx.saved_tensors
        n, heads, c = grad.shape
        crow, col, idx, crow_t, col_t, idx_t = ctx.edges.head_structure(heads)
        grad2 = grad.reshape(n * heads, c)
        g_alpha = g_h = None
        if ctx.needs_input_grad[1]:
            adj_t = torch.sparse_csr_tensor(crow_t, col_t, alpha.reshape(-1)[idx_t], (n * heads,) * 2)
            g_h = torch.sparse.mm(adj_t, grad2).view(n, heads, c)
        if ctx.needs_input_grad[0]:
            pattern = torch.sparse_csr_tensor(crow, col, torch.zeros(len(idx), dtype=grad.dtype, device=grad.device),
                                              (n * heads,) * 2)
            vals = torch.sparse.sampled_addmm(pattern, grad2, h2.t()).values()
            g_alpha = torch.empty(alpha.numel(), dtype=grad.dtype, device=grad.device)
            g_alpha[idx] = vals
            g_alpha = g_alpha.view_as(alpha)
        return g_alpha, g_h, None


def edge_aggregate(alpha: torch.Tensor, h: torch.Tensor, edges: GraphEdges) -> torch.Tensor:
    """(E, H) attention x (N, H, C) features -> (N, H, C) sums over the incoming edges."""
    return _EdgeAggregate.apply(alpha, h, edges)


class GATLayer(nn.Module):
    """One GAT layer as GraphMAE's ``GATConv``: a bias-free projection to ``heads`` x ``out_per_head``, additive
    attention ``leaky_relu(a_src . Wh_j + a_dst . Wh_i)`` softmaxed over the incoming edges (self loops included),
    attention dropout, heads concatenated, bias. Xavier-normal init with gain 1.414 (the authors' ``reset_parameters``).

    The edge work is vectorised: scores by gather, softmax by ``scatter_reduce`` / ``index_add``, aggregation as a
    sparse CSR x dense product per head (:func:`edge_aggregate`). Two exact shortcuts:

    * ``project`` accepts a sparse CSR ``x`` (``x @ W.T`` as a sparse-dense product) and :meth:`forward` takes the
      projected features (``proj=``), so a sparse input is never densified;
    * ``forward(..., rows=r)`` returns only the output rows ``r``; when the layer widens (``in_dim < out_per_head``,
      e.g. the decoder 512 -> 1433) it aggregates the *inputs* over the edges and projects afterwards
      (``sum_j a_ij W h_j = W sum_j a_ij h_j``; the attention logits use ``W_h^T a``), and only for ``rows``.
    """

    def __init__(self, in_dim: int, out_per_head: int, heads: int = 1, attn_drop: float = 0.0,
                 negative_slope: float = 0.2):
        super().__init__()
        self.in_dim, self.out_per_head, self.heads = in_dim, out_per_head, heads
        self.negative_slope = negative_slope
        self.attn_drop = nn.Dropout(attn_drop)
        self.weight = nn.Parameter(torch.empty(heads * out_per_head, in_dim))
        self.att_src = nn.Parameter(torch.empty(1, heads, out_per_head))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_per_head))
        self.bias = nn.Parameter(torch.zeros(heads * out_per_head))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_normal_(self.weight, gain=1.414)
        nn.init.xavier_normal_(self.att_src, gain=1.414)
        nn.init.xavier_normal_(self.att_dst, gain=1.414)
        nn.init.zeros_(self.bias)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` for a dense or sparse (CSR / COO) ``x``."""
        if x.layout != torch.strided:
            return torch.sparse.mm(x, self.weight.t())
        return F.linear(x, self.weight)

    def _alpha(self, s_src: torch.Tensor, s_dst: torch.Tensor, src, dst, n: int) -> torch.Tensor:
        scores = F.leaky_relu(s_src[src] + s_dst[dst], self.negative_slope)
        return dropout(edge_softmax(scores, dst, n), self.attn_drop.p, self.training)

    def aggregate_inputs(self, x: torch.Tensor, edges: GraphEdges, rows: torch.Tensor) -> torch.Tensor:
        """``sum_j a_ij x_j`` per head for the nodes ``rows``: (|rows|, heads, in_dim), the layer's output before
        the projection and bias (``forward(x, edges, rows=rows)`` = this projected by each head's ``W``, plus bias).
        The attention logits are computed in input space, through ``W_h^T a``."""
        H, C, n = self.heads, self.out_per_head, edges.num_nodes
        w = self.weight.view(H, C, self.in_dim)
        v_src = torch.einsum("hcd,hc->hd", w, self.att_src[0])  # attention vectors in input space
        v_dst = torch.einsum("hcd,hc->hd", w, self.att_dst[0])
        alpha = self._alpha(x @ v_src.t(), x @ v_dst.t(), edges.src, edges.dst, n)
        return edge_aggregate(alpha, x.unsqueeze(1).expand(n, H, self.in_dim), edges)[rows]

    def forward(self, x: torch.Tensor | None, edges: GraphEdges, proj: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (N, in_dim) or ``proj`` = ``project(x)``; ``edges`` = :class:`GraphEdges`. Returns (N or |rows|,
        heads * out_per_head), before the activation."""
        H, C = self.heads, self.out_per_head
        n = edges.num_nodes
        if proj is None and rows is not None and self.in_dim < C:  # widening layer, few rows wanted
            agg = self.aggregate_inputs(x, edges, rows)
            w = self.weight.view(H, C, self.in_dim)
            return torch.einsum("nhd,hcd->nhc", agg, w).reshape(len(rows), H * C) + self.bias
        h = (self.project(x) if proj is None else proj).view(n, H, C)
        s_src = (h * self.att_src).sum(-1)
        s_dst = (h * self.att_dst).sum(-1)
        alpha = self._alpha(s_src, s_dst, edges.src, edges.dst, n)
        out = edge_aggregate(alpha, h, edges).reshape(n, H * C) + self.bias
        return out if rows is None else out[rows]


class GAT(nn.Module):
    """GraphMAE's GAT: ``num_layers`` :class:`GATLayer` with ``heads`` heads of ``hidden // heads`` units each,
    concatenated; dropout on every layer's input features (``in_drop``) and attention (``attn_drop``); PReLU between
    layers and, for an encoder (``last_activation=True``), after the last one. ``out_dim`` is the total width of the
    last layer (``out_heads`` heads of ``out_dim // out_heads`` units, concatenated).

    ``forward(x, edge_index)`` adds the self loops itself (cached per ``edge_index``); ``x`` may be a sparse CSR
    tensor (first layer = sparse product, its values get the input dropout), or ``proj0`` may give the first
    layer's projected input directly. ``rows`` restricts the last layer's output to those nodes."""

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
            self.layers.append(GATLayer(d, o // h, h, attn_drop, negative_slope))
            act = activation if (not last or last_activation) else None
            self.acts.append(_NormAct(norm if (not last or last_activation) else None, act, o))
            d = o
        self._edge_cache: tuple | None = None

    def edges(self, edge_index: torch.Tensor, num_nodes: int) -> GraphEdges:
        key = (edge_index.data_ptr(), edge_index.shape, edge_index._version, num_nodes, edge_index.device)
        if self._edge_cache is None or self._edge_cache[0] != key:
            self._edge_cache = (key, GraphEdges(edge_index, num_nodes))
        return self._edge_cache[1]

    def sparse_dropout(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop.p == 0:
            return x
        return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), dropout(x.values(), self.drop.p), x.shape)

    def forward(self, x, edge_index, return_hidden: bool = False, proj0: torch.Tensor | None = None,
                rows: torch.Tensor | None = None, num_nodes: int | None = None):
        n = num_nodes if num_nodes is not None else (proj0.shape[0] if proj0 is not None else x.shape[0])
        edges = self.edges(edge_index, n)
        hidden = []
        for i, (conv, act) in enumerate(zip(self.layers, self.acts)):
            r = rows if i == len(self.layers) - 1 else None
            if i == 0 and proj0 is not None:
                x = conv(None, edges, proj=proj0, rows=r)
            elif x.layout == torch.sparse_csr:
                x = conv(None, edges, proj=conv.project(self.sparse_dropout(x)), rows=r)
            else:
                x = conv(dropout(x, self.drop.p, self.training), edges, rows=r)
            x = act(x)
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
