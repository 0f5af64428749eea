"""Sparse building blocks of the attention layers: CSR x dense products written straight into their output,
CSR row selection, a graph's edge structures (self loops, CSR and transpose, per-head block-diagonal
layouts, restrictions to node subsets), the edge softmax and the attention-weighted aggregation."""
from __future__ import annotations

import warnings

import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


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


def crow_of(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers (n + 1,) of entries whose row ids ``rows`` are sorted."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return crow


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
        self.crow = crow_of(self.dst, n)
        self.perm_t = torch.argsort(self.src * n + self.dst)
        self.crow_t = crow_of(self.src, n)  # bincount: the order of the sources does not matter
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


def edge_softmax(scores: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Softmax of edge scores ``(E, H)`` over the incoming edges of every destination node (vectorised:
    ``scatter_reduce`` amax for stability, ``index_add`` for the normaliser)."""
    idx = dst[:, None].expand_as(scores)
    smax = torch.full((num_nodes, scores.shape[1]), float("-inf"), dtype=scores.dtype, device=scores.device)
    smax = smax.scatter_reduce(0, idx, scores.detach(), reduce="amax", include_self=True)
    e = (scores - smax[dst]).exp()
    denom = torch.zeros_like(smax).index_add_(0, dst, e)
    return e / (denom[dst] + 1e-16)


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
    def from_pairs(cls, rows: torch.Tensor, cols: torch.Tensor, idx: torch.Tensor, shape) -> Aggregation:
        """From entries sorted by ``rows`` (output rows ``rows``, input rows ``cols``, attention index ``idx``)."""
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


def edge_aggregate(alpha: torch.Tensor, h: torch.Tensor, edges: GraphEdges | Aggregation) -> torch.Tensor:
    """(E, H) attention x (N, H, C) features -> (N, H, C) sums over the incoming edges (``edges`` = a graph's
    :class:`GraphEdges`), or over the entries of an :class:`Aggregation` (rows = its output rows)."""
    agg = edges if isinstance(edges, Aggregation) else edges.head_structure(h.shape[1])
    return _EdgeAggregate.apply(alpha, h, agg)
