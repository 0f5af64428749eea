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


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _spmm(a, b) if a.layout == torch.sparse_csr else a @ b


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a^T @ b`` for a dense or sparse ``a``."""
    return torch.sparse.mm(a.t(), b) if a.layout != torch.strided else a.t() @ b


class _SCELinear(torch.autograd.Function):
    """The loss of :func:`sce_loss_linear` with a hand-written backward (``target`` and its norms are constants).

    Forward: ``tw = x @ W``, ``dot = g . tw (+ x . b)``, ``q = g (W^T W)``, ``sq = g . q (+ 2 g . W^T b + |b|^2)``,
    ``cos = dot / (sqrt(sq) |x|)``, ``loss = mean((1 - cos)^alpha)``. Backward, with ``gamma = dloss / dcos``,
    ``d_dot = gamma / (sqrt(sq) |x|)`` and ``d_sq = -gamma cos / (2 sq)``:
    ``dg = d_dot tw + 2 d_sq (q + W^T b)``, ``dW = x^T (d_dot g) + 2 W g^T (d_sq g) + 2 b (d_sq^T g)``,
    ``db = x^T d_dot + 2 W g^T d_sq + 2 b sum(d_sq)`` -- the row scalings and sums written out once instead of
    autograd's chain of broadcast products."""

    @staticmethod
    def forward(ctx, g, weight, bias, target, tn, alpha):
        tw = _mm(target, weight)
        dot = (g * tw).sum(-1)
        q = g @ (weight.t() @ weight)
        sq = (q * g).sum(-1)
        u = None
        if bias is not None:
            u = weight.t() @ bias
            dot = dot + _mm(target, bias[:, None])[:, 0]
            sq = sq + 2 * (g @ u) + bias.square().sum()
        sq_c = sq.clamp_min(1e-24)  # F.normalize semantics: x / max(|x|, 1e-12); no inf gradient at 0
        den = sq_c.sqrt() * tn.clamp_min(1e-12)
        cos = dot / den
        ctx.save_for_backward(g, weight, bias, target, tw, q, u, sq, sq_c, den, cos)
        ctx.alpha = alpha
        return (1 - cos).pow(alpha).mean()

    @staticmethod
    def backward(ctx, grad):
        g, weight, bias, target, tw, q, u, sq, sq_c, den, cos = ctx.saved_tensors
        a, m = ctx.alpha, g.shape[0]
        gamma = grad * (-a / m) * (1 - cos).pow(a - 1)
        d_dot = gamma / den
        d_sq = torch.where(sq > 1e-24, -gamma * cos / (2 * sq_c), 0.0)
        grad_g = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_g = torch.addcmul(tw * d_dot[:, None], q if u is None else q + u, d_sq[:, None], value=2.0)
        if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
            d = g.shape[1]
            y = torch.empty(m, d + 1, dtype=g.dtype, device=g.device)  # [d_dot g | d_dot]: one sparse product
            torch.mul(g, d_dot[:, None], out=y[:, :d])
            y[:, d] = d_dot
            xy = _mm_t(target, y)
            sg = g.t() @ (d_sq[:, None] * g)  # g^T diag(d_sq) g
            sgs = g.t() @ d_sq
            if ctx.needs_input_grad[1]:
                grad_w = torch.addmm(xy[:, :d], weight, sg, alpha=2.0)
                if bias is not None:
                    grad_w.addr_(bias, sgs, alpha=2.0)
            if bias is not None and ctx.needs_input_grad[2]:
                grad_b = xy[:, d] + 2.0 * (weight @ sgs) + 2.0 * d_sq.sum() * bias
        return grad_g, grad_w, grad_b, None, None, None


def sce_loss_linear(g: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                    target_norm: torch.Tensor | None = None, alpha: float = 3.0) -> torch.Tensor:
    """:func:`sce_loss` of ``x_hat = g @ weight.T + bias`` against ``target`` without forming ``x_hat``.

    For a linear last layer that widens (``g`` (M, D) -> ``x_hat`` (M, F), F > D) and a sparse target (bag-of-words
    rows as a CSR tensor), the two terms of the cosine are computed in the narrow space:
    ``<x_hat, x> = g . (x @ W) + x . b`` (a sparse product) and
    ``|x_hat|^2 = g^T (W^T W) g + 2 g . (W^T b) + |b|^2`` (a D x D Gram matrix). Exact up to rounding; the
    forward + backward cost drops from ~6 M F D to ~2 F D^2 + ~4 M D^2 and no (M, F) tensor exists. The target is
    a constant (no gradient); the backward is written out (:class:`_SCELinear`).
    ``target_norm`` (M,) are the rows' L2 norms (computed from ``target`` when omitted)."""
    if target_norm is None:
        if target.layout == torch.strided:
            target_norm = target.norm(dim=-1)
        else:
            vals = target.values()
            rows = torch.repeat_interleave(torch.arange(target.shape[0], device=vals.device),
                                           target.crow_indices().diff())
            target_norm = torch.zeros(target.shape[0], dtype=vals.dtype, device=vals.device).index_add_(
                0, rows, vals.square()).sqrt()
    return _SCELinear.apply(g, weight, bias, target.detach(), target_norm.detach(), float(alpha))


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


_DROP_BITS = 16  # keep masks compare 16-bit random integers against round(p * 2**16)


def keep_mask(shape, p: float, device=None, dtype=torch.float32) -> tuple[torch.Tensor, float]:
    """``(mask, scale)`` for inverted dropout: a 0 / 1 mask of ``shape`` (``dtype``; a float mask multiplies ~5x
    faster than a bool one on CPU), each element kept with probability ``1 - p'`` where ``p' = round(p * 2**16) /
    2**16`` (``p`` to 1 / 65536: 0.2 -> 0.199997), and ``scale = 1 / (1 - p')``. The bits come from ``random_()``
    on int64, split into three 16-bit draws each (the fourth 16 bits of ``random_()`` hold only 15 random bits),
    about 3x less generator work than ``torch.rand``'s one draw per element -- the generator is serial and
    dominated the dropout cost of the Cora layers."""
    n = 1
    for d in shape:
        n *= d
    cut = round(p * (1 << _DROP_BITS))
    draws = (n + 2) // 3
    bits = torch.empty(draws, dtype=torch.int64, device=device).random_().view(torch.int16).view(draws, 4)[:, :3]
    keep = torch.ge(bits, cut - (1 << (_DROP_BITS - 1)), out=torch.empty(draws, 3, dtype=dtype, device=device))
    return keep.view(-1)[:n].view(shape), (1 << _DROP_BITS) / ((1 << _DROP_BITS) - cut)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout with the keep mask of :func:`keep_mask` (about 3x less random-number work than
    ``F.dropout`` on CPU); each element kept with probability ``1 - p`` (``p`` to 1 / 65536) and scaled by
    ``1 / (1 - p)``."""
    if not training or p == 0:
        return x
    if p >= 1:
        return x * 0
    keep, scale = keep_mask(x.shape, p, x.device, x.dtype)
    return x * keep.mul_(scale)


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

    def head_structure(self, heads: int) -> Aggregation:
        """The block-diagonal ``(N * heads, N * heads)`` adjacency that aggregates all heads in one sparse product
        over ``(N * heads, C)`` rows (row ``i * heads + k`` = node i, head k), as an :class:`Aggregation` whose
        ``idx`` index the flattened ``(E, heads)`` attention. Cached."""
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
            self._heads[H] = Aggregation(*a, *b, (n * H, n * H))
        return self._heads[heads]

    def between(self, dst_nodes: torch.Tensor, src_nodes: torch.Tensor) -> Aggregation:
        """The one-head aggregation restricted to the edges from ``src_nodes`` into ``dst_nodes`` (both sorted
        node ids; disjoint sets as GraphMAE's masked / kept nodes): output row r = ``dst_nodes[r]``, input row c =
        ``src_nodes[c]``, ``idx`` = the edge ids (positions in the (E, 1) attention)."""
        n = self.num_nodes
        pos_dst = torch.full((n,), -1, dtype=torch.long, device=self.src.device)
        pos_dst[dst_nodes] = torch.arange(len(dst_nodes), device=pos_dst.device)
        pos_src = torch.full((n,), -1, dtype=torch.long, device=self.src.device)
        pos_src[src_nodes] = torch.arange(len(src_nodes), device=pos_src.device)
        r, c = pos_dst[self.dst], pos_src[self.src]
        sel = ((r >= 0) & (c >= 0)).nonzero().flatten()  # edges are sorted by destination: rows stay sorted
        return Aggregation.from_pairs(r[sel], c[sel], sel, (len(dst_nodes), len(src_nodes)))


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


def _spmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sparse CSR ``a`` x dense ``b`` (no autograd) written straight into a new tensor: ``torch.sparse.mm`` goes
    through ``addmm(zeros, a, b)``, which fills and copies an extra output-sized buffer."""
    out = torch.empty(a.shape[0], b.shape[1], dtype=b.dtype, device=b.device)
    return torch.addmm(out, a, b.contiguous(), beta=0, out=out)


class _SparseMM(torch.autograd.Function):
    """``a @ b`` for a constant sparse CSR ``a`` and a dense ``b`` (gradient for ``b`` only): the forward product
    is written straight into its output (:func:`_spmm`)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a)
        return _spmm(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, = ctx.saved_tensors
        return None, torch.sparse.mm(a.t(), grad)


def sparse_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sparse CSR ``a`` (treated as a constant: no gradient for its values) x dense ``b`` -> dense."""
    return _SparseMM.apply(a, b)


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


class Aggregation:
    """The sparsity structure of an attention aggregation ``out[r] = sum_e alpha[idx_e] h[c_e]`` as CSR arrays
    of the forward matrix (``crow``, ``col``, ``idx``: entry -> position in the flattened attention) and of its
    transpose (``crow_t``, ``col_t``, ``idx_t``), ``shape = (output rows, input rows)``."""

    def __init__(self, crow, col, idx, crow_t, col_t, idx_t, shape):
        if len(col) < 2**31 - 1 and max(shape) < 2**31 - 1:  # 32-bit indices: what MKL's sparse kernels take
            crow, col, crow_t, col_t = crow.int(), col.int(), crow_t.int(), col_t.int()
        self.crow, self.col, self.idx, self.crow_t, self.col_t, self.idx_t = crow, col, idx, crow_t, col_t, idx_t
        self.shape = tuple(shape)

    @classmethod
    def from_pairs(cls, rows: torch.Tensor, cols: torch.Tensor, idx: torch.Tensor, shape) -> "Aggregation":
        """From entries sorted by ``rows`` (output rows ``rows``, input rows ``cols``, attention index ``idx``)."""
        def crow_of(r, n):
            crow = torch.zeros(n + 1, dtype=torch.long, device=r.device)
            crow[1:] = torch.bincount(r, minlength=n).cumsum(0)
            return crow
        perm = torch.argsort(cols * shape[0] + rows)
        return cls(crow_of(rows, shape[0]), cols, idx, crow_of(cols[perm], shape[1]), rows[perm], idx[perm], shape)


class _EdgeAggregate(torch.autograd.Function):
    """``out[r, k] = sum alpha[e, k] h[j, k]`` over the entries of an :class:`Aggregation` (for all heads ``k``
    as ONE sparse (CSR) x dense product: rows of the structure index ``(node, head)`` pairs, ``h`` is viewed as
    ``(rows * heads, C)``); no (E, H, C) message tensor. Backward: ``grad_h = A^T grad`` (sparse product),
    ``grad_alpha = <grad[row], h[col]>`` per entry (sampled dense-dense product on the pattern)."""

    @staticmethod
    def forward(ctx, alpha, h, agg: Aggregation):
        n, heads, c = h.shape
        ctx.save_for_backward(alpha, h)
        ctx.agg = agg
        adj = torch.sparse_csr_tensor(agg.crow, agg.col, alpha.reshape(-1)[agg.idx], agg.shape)
        return _spmm(adj, h.reshape(n * heads, c)).view(agg.shape[0] // heads, heads, c)

    @staticmethod
    def backward(ctx, grad):
        alpha, h = ctx.saved_tensors
        agg = ctx.agg
        n, heads, c = h.shape
        grad2 = grad.reshape(-1, c)
        g_alpha = g_h = None
        if ctx.needs_input_grad[1]:
            adj_t = torch.sparse_csr_tensor(agg.crow_t, agg.col_t, alpha.reshape(-1)[agg.idx_t], agg.shape[::-1])
            g_h = _spmm(adj_t, grad2).view(n, heads, c)
        if ctx.needs_input_grad[0]:
            pattern = torch.sparse_csr_tensor(agg.crow, agg.col, torch.zeros(len(agg.idx), dtype=grad.dtype,
                                                                            device=grad.device), agg.shape)
            vals = torch.sparse.sampled_addmm(pattern, grad2, h.reshape(n * heads, c).t()).values()
            g_alpha = torch.zeros(alpha.numel(), dtype=grad.dtype, device=grad.device)
            g_alpha[agg.idx] = vals
            g_alpha = g_alpha.view_as(alpha)
        return g_alpha, g_h, None


def edge_aggregate(alpha: torch.Tensor, h: torch.Tensor, edges: "GraphEdges | Aggregation") -> torch.Tensor:
    """(E, H) attention x (N, H, C) features -> (N, H, C) sums over the incoming edges (``edges`` = a graph's
    :class:`GraphEdges`), or over the entries of an :class:`Aggregation` (rows = its output rows)."""
    agg = edges if isinstance(edges, Aggregation) else edges.head_structure(h.shape[1])
    return _EdgeAggregate.apply(alpha, h, agg)


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
            elif self.training and self.drop.p > 0:
                keep, scale = keep_mask(x.shape, self.drop.p, x.device, x.dtype)
                x = conv(x * keep, edges, rows=r, scale=scale)  # = conv(dropout(x)): the 1/(1-p) goes on W
            else:
                x = conv(x, edges, rows=r)
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
