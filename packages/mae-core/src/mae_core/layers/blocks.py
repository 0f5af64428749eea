"""Transformer layers in the timm vocabulary: Attention (fused qkv, SDPA; attention maps on request), CrossAttention,
Mlp, DropPath, LayerScale, pre-norm Block and CrossBlock. Norm, activation, attention and MLP layers are injectable."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def LayerNorm(dim: int, eps: float = 1e-6, **kw) -> nn.LayerNorm:
    """LayerNorm with eps 1e-6, as in MAE and timm ViTs (the default norm layer everywhere)."""
    return nn.LayerNorm(dim, eps=eps, **kw)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        return drop_path(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: Callable[..., nn.Module] = nn.GELU, drop: float = 0.0, bias: bool = True):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def attention_probs(q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    scale: float | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask)`` (B, heads, Lq, Lk), the probabilities ``F.scaled_dot_product_attention``
    uses: ``scale`` defaults to ``head_dim ** -0.5``; a bool ``attn_mask`` (True = may attend) sets the other logits
    to -inf, a float mask is added. Logits and softmax are computed in float32 (then cast back to ``q``'s dtype)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)).float() * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    return logits.softmax(-1).to(q.dtype)


def cls_attention(attn: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """The attention of the first (cls) token to the patch tokens: row 0 of ``attn`` (B, heads, L, L) without the
    ``num_prefix_tokens`` prefix columns, (B, heads, L - prefix)."""
    if num_prefix_tokens < 1:
        raise ValueError("cls_attention needs a prefix (cls) token, the encoder has num_prefix_tokens=0")
    return attn[:, :, 0, num_prefix_tokens:]


def _zero_key_bias_grad(dim: int, grad: torch.Tensor) -> torch.Tensor:
    grad = grad.clone()
    grad[dim:2 * dim] = 0
    return grad


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and ``F.scaled_dot_product_attention``.

    The key part of the qkv bias has no effect on the output (softmax is invariant to a per-query constant), so its
    gradient is pure rounding noise; it is kept at its value (zero at init) by zeroing that gradient. This keeps the
    timm / MAE weight layout while making training reproducible across process counts.

    ``attn_mask``: bool (True = may attend) or additive float, broadcastable to (B, heads, L, L).
    ``extra_kv``: optional (B, M, D) tokens that every query may also attend to (memory slots).
    ``return_attention=True`` returns ``(out, attn)`` with the attention probabilities ``attn`` (B, heads, L, L [+ M]),
    computed explicitly as ``softmax(q k^T * scale + mask)`` (see :func:`attention_probs`); the default path is
    ``F.scaled_dot_product_attention`` alone. With attention dropout the returned maps are the probabilities before
    dropout, and the dropout mask differs from SDPA's.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, qk_norm: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_layer: Callable[..., nn.Module] = LayerNorm):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if qkv_bias:
            self.qkv.bias.register_hook(partial(_zero_key_bias_grad, dim))
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None, return_attention: bool = False):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if extra_kv is not None:
            ek, ev = extra_kv  # (B, heads, M, hd)
            k, v = torch.cat([k, ek], 2), torch.cat([v, ev], 2)
        if return_attention:
            attn = attention_probs(q, k, attn_mask)
            w = F.dropout(attn, self.attn_drop, self.training) if self.attn_drop else attn
            x = w.to(v.dtype) @ v
            return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c))), attn
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class CrossAttention(nn.Module):
    """Queries from ``x``, keys / values from ``context`` (fused kv projection), SDPA."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, context_dim: int | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        m = context.shape[1]
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(context).reshape(b, m, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=attn_mask,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(LS(Attn(LN(x)))), then the same with the MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_norm: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, init_values: float | None = None,
                 drop_path: float = 0.0, act_layer: Callable[..., nn.Module] = nn.GELU,
                 norm_layer: Callable[..., nn.Module] = LayerNorm,
                 attn_layer: Callable[..., nn.Module] = Attention, mlp_layer: Callable[..., nn.Module] = Mlp):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm,
                               attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_attention: bool = False,
                **attn_kw):
        """``return_attention=True`` returns ``(x, attn)``, the attention probabilities of this block (the
        attention layer must accept ``return_attention``, as :class:`Attention` does)."""
        if return_attention:
            y, attn = self.attn(self.norm1(x), attn_mask=attn_mask, return_attention=True, **attn_kw)
            x = x + self.drop_path1(self.ls1(y))
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))), attn
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, **attn_kw)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class CrossBlock(nn.Module):
    """Self-attention over ``x``, then cross-attention from ``x`` to ``context``, then MLP (all pre-norm).

    The SiamMAE / CropMAE decoder block and the multi-level decoder block of MemMC-MAE.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 context_dim: int | None = None, drop_path: float = 0.0, init_values: float | None = None,
                 act_layer: Callable[..., nn.Module] = nn.GELU, norm_layer: Callable[..., nn.Module] = LayerNorm,
                 self_attention: bool = True):
        super().__init__()
        self.self_attention = self_attention
        if self_attention:
            self.norm1 = norm_layer(dim)
            self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
            self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm_q = norm_layer(dim)
        self.norm_ctx = norm_layer(context_dim or dim)
        self.cross = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, context_dim=context_dim)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.ls3 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor, attn_mask: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.self_attention:
            x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask)))
        x = x + self.drop_path(self.ls2(self.cross(self.norm_q(x), self.norm_ctx(context), attn_mask=context_mask)))
        return x + self.drop_path(self.ls3(self.mlp(self.norm2(x))))


def init_weights(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
