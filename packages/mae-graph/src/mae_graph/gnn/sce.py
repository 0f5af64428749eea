"""The scaled cosine error of GraphMAE, and its exact form for a widening linear last layer and a sparse
target computed in the narrow space."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .sparse import _spmm


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
