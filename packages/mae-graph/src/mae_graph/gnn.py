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

    def __len__(self):
        return self.src.numel()

    def adj(self, values: torch.Tensor) -> torch.Tensor:
        """(N, N) CSR with ``values`` (one per edge) at [dst, src]."""
        return torch.sparse_csr_tensor(self.crow, self.src, values.contiguous(), (self.num_nodes,) * 2)

    def adj_t(self, values: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`adj`."""
        return torch.sparse_csr_tensor(self.crow_t, self.col_t, values[self.perm_t].contiguous(),
                                       (self.num_nodes,) * 2)


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
    """``out[i, k] = sum_{j -> i} alpha[e, k] h[j, k]`` per head ``k`` as a sparse (CSR) x dense product, without an
    (E, H, C) message tensor. Backward: ``grad_h = A^T grad`` (sparse product), ``grad_alpha[e] =
    <grad[dst_e], h[src_e]>`` (sampled dense-dense product on the edge pattern)."""

    @staticmethod
    def forward(ctx, alpha, h, edges):
        ctx.save_for_backward(alpha, h)
        ctx.edges = edges
        return torch.stack([torch.sparse.mm(edges.adj(alpha[:, k]), h[:, k].contiguous())
                            for k in range(h.shape[1])], 1)

    @staticmethod
    def backward(ctx, grad):
        alpha, h = ctx.saved_tensors
        e = ctx.edges
        grad = grad.contiguous()
        g_alpha = g_h = None
        heads = h.shape[1]
        if ctx.needs_input_grad[1]:
            g_h = torch.stack([torch.sparse.mm(e.adj_t(alpha[:, k]), grad[:, k]) for k in range(heads)], 1)
        if ctx.needs_input_grad[0]:
            pattern = e.adj(torch.zeros(len(e), dtype=grad.dtype, device=grad.device))
            g_alpha = torch.stack([torch.sparse.sampled_addmm(pattern, grad[:, k].contiguous(),
                                                              h[:, k].t().contiguous()).values()
                                   for k in range(heads)], 1)
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
        return self.attn_drop(edge_softmax(scores, dst, n))

    def forward(self, x: torch.Tensor | None, edges: GraphEdges, proj: torch.Tensor | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (N, in_dim) or ``proj`` = ``project(x)``; ``edges`` = :class:`GraphEdges`. Returns (N or |rows|,
        heads * out_per_head), before the activation."""
        H, C = self.heads, self.out_per_head
        n = edges.num_nodes
        if proj is None and rows is not None and self.in_dim < C:  # widening layer, few rows wanted
            w = self.weight.view(H, C, self.in_dim)
            v_src = torch.einsum("hcd,hc->hd", w, self.att_src[0])  # attention vectors in input space
            v_dst = torch.einsum("hcd,hc->hd", w, self.att_dst[0])
            alpha = self._alpha(x @ v_src.t(), x @ v_dst.t(), edges.src, edges.dst, n)
            agg = edge_aggregate(alpha, x.unsqueeze(1).expand(n, H, self.in_dim), edges)[rows]
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
        return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), self.drop(x.values()), x.shape)

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
                x = conv(self.drop(x), edges, rows=r)
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
