"""GraphMAE's GAT: the attention layer and the stack."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import _NormAct
from .dropout import dropout, keep_mask
from .sparse import GraphEdges, edge_aggregate, edge_softmax, sparse_mm


class _Logits(torch.autograd.Function):
    """``(h @ a, h)``: the attention logits of ``h`` for a skinny ``a`` (D, K), K = a few columns, and ``h``
    itself (which the aggregation then uses). The product runs as ``(a^T h^T)^T`` with the backward
    ``grad_a = (grad^T h)^T``: the layouts in which the BLAS handles skinny products well (on CPU ~4x faster than
    ``h @ a`` and ~10x faster than autograd's ``h^T @ grad``); the two gradients of ``h`` are summed in one
    ``addmm`` instead of a product plus a sum. The logits are returned in column-major layout."""

    @staticmethod
    def forward(ctx, h, a):
        ctx.save_for_backward(h, a)
        return (a.t() @ h.t()).t(), h.view_as(h)

    @staticmethod
    def backward(ctx, grad_s, grad_h):
        h, a = ctx.saved_tensors
        g_h = g_a = None
        if ctx.needs_input_grad[0]:
            g_h = grad_s @ a.t() if grad_h is None else torch.addmm(grad_h, grad_s, a.t())
        if ctx.needs_input_grad[1]:
            g_a = (grad_s.t() @ h).t()
        return g_h, g_a


def attention_logits(h: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h @ a, h)`` through :class:`_Logits`: use the returned ``h`` downstream so both gradients meet there."""
    return _Logits.apply(h, a)


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

    def project(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``x @ (scale * W).T`` for a dense or sparse (CSR) ``x``. ``scale`` is the inverted-dropout factor of an
        input that was only masked (``x * keep``): scaling the (small) weight instead of ``x`` saves a pass over
        the activations and is the same product."""
        w = self.weight if scale == 1.0 else self.weight * scale
        if x.layout != torch.strided:
            return sparse_mm(x, w.t())
        return F.linear(x, w)

    def attention_matrix(self) -> torch.Tensor:
        """The attention vectors as a block-diagonal ``(heads * out_per_head, 2 * heads)`` matrix (head k's rows hold
        ``a_src[k]`` in column ``2k`` and ``a_dst[k]`` in column ``2k + 1``): one product ``h @ A`` gives every
        head's source and destination logits (instead of two broadcast multiply-and-sum passes over ``h``)."""
        return torch.block_diag(*torch.stack([self.att_src[0], self.att_dst[0]], -1).unbind(0))

    def input_attention_matrix(self) -> torch.Tensor:
        """``W^T A`` (in_dim, 2 * heads): the attention logits computed from the layer's *input*
        (``x @ W^T A = (x @ W^T) @ A``), for the widening decoder that aggregates before projecting."""
        return self.weight.t() @ self.attention_matrix()

    def _alpha(self, s: torch.Tensor, src, dst, n: int) -> torch.Tensor:
        """Attention (E, heads) from the logits ``s`` (N, 2 * heads; columns 2k / 2k + 1 = head k's source /
        destination logit): leaky ReLU, softmax over each node's incoming edges, attention dropout."""
        s = s.view(n, self.heads, 2)
        scores = F.leaky_relu(s[:, :, 0][src] + s[:, :, 1][dst], self.negative_slope)
        return dropout(edge_softmax(scores, dst, n), self.attn_drop.p, self.training)

    def aggregate_inputs(self, x: torch.Tensor, edges: GraphEdges, rows: torch.Tensor) -> torch.Tensor:
        """``sum_j a_ij x_j`` per head for the nodes ``rows``: (|rows|, heads, in_dim), the layer's output before
        the projection and bias (``forward(x, edges, rows=rows)`` = this projected by each head's ``W``, plus bias).
        The attention logits are computed in input space, through ``W_h^T a``."""
        H, n = self.heads, edges.num_nodes
        s, x = attention_logits(x, self.input_attention_matrix())
        alpha = self._alpha(s, edges.src, edges.dst, n)
        return edge_aggregate(alpha, x.unsqueeze(1).expand(n, H, self.in_dim), edges)[rows]

    def aggregate_between(self, x_src: torch.Tensor, src_nodes: torch.Tensor, dst_nodes: torch.Tensor,
                          edges: GraphEdges) -> torch.Tensor:
        """:meth:`aggregate_inputs` (one head) for an input that is zero outside the rows ``src_nodes``, given as
        those rows ``x_src`` (|src_nodes|, in_dim), for output nodes ``dst_nodes`` disjoint from them (GraphMAE's
        decoder after the re-mask: kept nodes in, masked nodes out). The softmax still runs over every incoming
        edge (a zero input has logit 0), but only the edges from ``src_nodes`` to ``dst_nodes`` are aggregated:
        no (N, in_dim) input is built and a quarter of the edges is summed. Returns (|dst_nodes|, in_dim)."""
        if self.heads != 1:
            raise ValueError("aggregate_between is for one-head layers")
        n = edges.num_nodes
        s_src, x_src = attention_logits(x_src, self.input_attention_matrix())  # (|src|, 2)
        s = s_src.new_zeros(n, 2).index_copy(0, src_nodes, s_src)
        alpha = self._alpha(s, edges.src, edges.dst, n)
        agg = edges.between(dst_nodes, src_nodes)
        return edge_aggregate(alpha, x_src.unsqueeze(1), agg)[:, 0]

    def forward(self, x: torch.Tensor | None, edges: GraphEdges, proj: torch.Tensor | None = None,
                rows: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
        """``x`` (N, in_dim) or ``proj`` = ``project(x)``; ``edges`` = :class:`GraphEdges`; ``scale`` multiplies
        ``x`` (see :meth:`project`). Returns (N or |rows|, heads * out_per_head), before the activation."""
        H, C = self.heads, self.out_per_head
        n = edges.num_nodes
        if proj is None and rows is not None and self.in_dim < C:  # widening layer, few rows wanted
            agg = self.aggregate_inputs(x if scale == 1.0 else x * scale, edges, rows)
            w = self.weight.view(H, C, self.in_dim)
            return torch.einsum("nhd,hcd->nhc", agg, w).reshape(len(rows), H * C) + self.bias
        s, h = attention_logits(self.project(x, scale) if proj is None else proj, self.attention_matrix())
        alpha = self._alpha(s, edges.src, edges.dst, n)
        out = edge_aggregate(alpha, h.view(n, H, C), edges).reshape(n, H * C) + self.bias
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
                 negative_slope: float = 0.2, last_activation: bool = True, norm: str | None = None,
                 residual: bool = False):
        super().__init__()
        if hidden % heads or out_dim % out_heads:
            raise ValueError(f"hidden {hidden} / out_dim {out_dim} must be divisible by the number of heads")
        self.layers = nn.ModuleList()
        self.acts = nn.ModuleList()
        # residual (GraphMAE's GATConv res_fc, added before norm + activation): every encoder layer; a decoder's
        # last layer has none (the authors' last_residual = encoding and residual)
        self.res = nn.ModuleList()
        self.drop = nn.Dropout(in_drop)
        d = in_dim
        for i in range(num_layers):
            last = i == num_layers - 1
            h, o = (out_heads, out_dim) if last else (heads, hidden)
            self.layers.append(GATLayer(d, o // h, h, attn_drop, negative_slope))
            use_res = residual and (not last or last_activation)
            self.res.append((nn.Identity() if d == o else nn.Linear(d, o, bias=False)) if use_res else None)
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
            if self.res[i] is not None:  # dense input only (GraphMAE turns the sparse path off with a residual)
                xin = self.drop(x)
                x = conv(xin, edges, rows=r)
                res = self.res[i](xin)
                x = act(x + (res if r is None else res[r]))
                hidden.append(x)
                continue
            if i == 0 and proj0 is not None:
                x = conv(None, edges, proj=proj0, rows=r)
            elif x.layout == torch.sparse_csr:
                x = conv(None, edges, proj=conv.project(self.sparse_dropout(x)), rows=r)
            elif self.training and self.drop.p > 0:
                keep, scale = keep_mask(x.shape, self.drop.p, x.device, x.dtype)
                x = conv(x * keep, edges, rows=r, scale=scale)  # = conv(dropout(x)): the 1/(1-p) goes on W
            else:
                x = conv(x, edges, rows=r)
            x = act(x)
            hidden.append(x)
        return (x, hidden) if return_hidden else x
