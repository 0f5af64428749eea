"""The Audio-MAE local decoder: Swin-style windowed attention over the (time, frequency) patch grid.

As the authors' decoder (``decoder_mode=1``: timm's Swin V2 "cr" block): windows of (4, 4) patches over
(time, frequency); every other block shifts the windows by (2, 0) (half a window along time, none along frequency)
with a cyclic roll and an additive -100 attention mask between tokens that the roll brought together from opposite
ends; scaled cosine attention (cos(q, k) / tau, tau a learned per-head temperature clamped at 0.01); a
relative-position bias per head from a small MLP (2 -> 384 -> heads, ReLU, dropout 0.1) over the log-spaced
relative coordinates ``sign(d) log(1 + |d|)`` of every pair of tokens in a window; post-norm residual branches
(``x + LN(attn(x))``, ``x + LN(mlp(x))``). A window larger than the grid is clipped to it (and then not shifted),
as the reference does; a grid that is not a multiple of the window is padded and the padding masked (the reference
only runs grids that divide).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.layers import LayerNorm, Mlp
from mae_core.masking import restore_tokens
from mae_core.models import MAEDecoder

MASK_VALUE = -100.0  # the reference's additive mask value
META_HIDDEN = 384  # hidden width of the position-bias MLP (the reference's meta_hidden_dim)


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, wh * ww, C); windows in row-major order over the grid, tokens row-major inside."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, wh * ww, C) -> (B, H, W, C)."""
    h, w = size
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_coords_log(window: tuple[int, int]) -> torch.Tensor:
    """(N * N, 2) log-spaced relative coordinates ``sign(d) log(1 + |d|)`` of token i to token j (row i * N + j,
    d = coord_i - coord_j) inside a window of N = wh * ww tokens, as the reference's position-bias MLP reads them."""
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).reshape(-1, 2).float()
    return torch.sign(rel) * torch.log1p(rel.abs())


def window_geometry(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]):
    """(window, shift, padded grid) for a grid: a window side longer than the grid is clipped to it, and that axis is
    not shifted (the reference's ``_calc_window_shift``); the grid is padded up to a multiple of the window."""
    win = tuple(min(g, w) for g, w in zip(grid, window))
    sh = tuple(0 if g <= w else s for g, w, s in zip(grid, win, shift))
    padded = tuple(-(-g // w) * w for g, w in zip(grid, win))
    return win, sh, padded


def shifted_window_mask(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]):
    """(nW, N, N) additive mask (0 or -100) of the windows of a grid rolled by ``-shift``, or None when nothing is
    masked. Two tokens of a window may attend to each other iff, on both axes, both are wrapped-around (moved from
    the start to the end by the roll) or neither is, and both are real (not padding) or both are padding. Without
    padding this is the mask of Swin's three-slice construction."""
    win, sh, padded = window_geometry(grid, window, shift)
    if not any(sh) and padded == tuple(grid):
        return None
    labels = []
    for g, p, s in zip(grid, padded, sh):
        r = torch.arange(p)
        orig = (r + s) % p  # the position each rolled slot holds
        labels.append((r >= p - s).long() + 2 * (orig >= g).long())
    region = (labels[0][:, None] * 4 + labels[1][None, :]).float()  # (Hp, Wp)
    win_ids = window_partition(region[None, :, :, None], win)[..., 0]  # (nW, N)
    diff = win_ids[:, None, :] - win_ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class WindowCosineAttention(nn.Module):
    """Scaled cosine window attention with the log-spaced continuous position bias (Swin V2 / the reference)."""

    def __init__(self, dim: int, num_heads: int, meta_hidden: int = META_HIDDEN):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.meta_mlp = Mlp(2, meta_hidden, num_heads, act_layer=nn.ReLU, drop=0.1)
        self.tau = nn.Parameter(torch.ones(num_heads))
        self._coords: dict = {}

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """(heads, N, N) relative-position bias of a window."""
        key = (tuple(window), str(self.tau.device))
        if key not in self._coords:
            self._coords[key] = relative_coords_log(window).to(self.tau.device)
        n = window[0] * window[1]
        return self.meta_mlp(self._coords[key]).transpose(0, 1).reshape(self.num_heads, n, n)

    def forward(self, x: torch.Tensor, window: tuple[int, int], mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B * nW, N, C) windows; mask (nW, N, N) additive or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        q = F.normalize(q, dim=-1) / self.tau.clamp(min=0.01).view(1, -1, 1, 1)
        k = F.normalize(k, dim=-1)
        bias = self.position_bias(window)[None]  # (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias + mask[:, None]).repeat(bw // nw, 1, 1, 1)  # (B * nW, heads, N, N), window-major per sample
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Post-norm Swin block over a (time, frequency) token grid: x + LN(W-MSA(x)), then x + LN(MLP(x))."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], shift: tuple[int, int],
                 mlp_ratio: float = 4.0, norm_layer=LayerNorm):
        super().__init__()
        self.window, self.shift = tuple(window), tuple(shift)
        self.attn = WindowCosineAttention(dim, num_heads)
        self.norm1 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = norm_layer(dim)
        self._masks: dict = {}

    def mask(self, grid, device):
        key = (tuple(grid), str(device))
        if key not in self._masks:
            m = shifted_window_mask(grid, self.window, self.shift)
            self._masks[key] = None if m is None else m.to(device)
        return self._masks[key]

    def window_attention(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, length, c = x.shape
        win, sh, padded = window_geometry(grid, self.window, self.shift)
        x = x.view(b, *grid, c)
        if padded != tuple(grid):
            x = F.pad(x, (0, 0, 0, padded[1] - grid[1], 0, padded[0] - grid[0]))
        if any(sh):
            x = torch.roll(x, shifts=(-sh[0], -sh[1]), dims=(1, 2))
        y = self.attn(window_partition(x, win), win, self.mask(grid, x.device))
        y = window_reverse(y, win, padded)
        if any(sh):
            y = torch.roll(y, shifts=sh, dims=(1, 2))
        return y[:, :grid[0], :grid[1]].reshape(b, length, c)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.norm1(self.window_attention(x, grid))
        return x + self.norm2(self.mlp(x))


class SwinDecoder(MAEDecoder):
    """MAE decoder with :class:`SwinBlock` s; block i shifts its windows by ``shift`` when i is odd. The prefix (cls)
    token is dropped before the blocks, as in the reference."""

    def __init__(self, embed_dim: int, decoder_dim: int, depth: int, num_heads: int, pred_dim: int, *,
                 grid: tuple[int, int], window: tuple[int, int] = (4, 4), shift: tuple[int, int] = (2, 0),
                 pos_embed: torch.Tensor | None = None, mlp_ratio: float = 4.0):
        super().__init__(embed_dim, decoder_dim, 0, num_heads, pred_dim, pos_embed=pos_embed, mlp_ratio=mlp_ratio)
        self.grid = tuple(grid)
        self.blocks = nn.ModuleList([SwinBlock(decoder_dim, num_heads, window, shift if i % 2 else (0, 0),
                                               mlp_ratio=mlp_ratio) for i in range(depth)])

    def forward(self, latent, ids_restore, pos=None, select=None, grid=None):
        x = self.embed(latent)
        x = restore_tokens(x[:, self.num_prefix_tokens:], self.mask_token, ids_restore)
        pos = self.pos_embed if pos is None else pos
        if pos is not None:
            x = x + pos
        grid = tuple(grid or self.grid)
        for blk in self.blocks:
            x = blk(x, grid)
        return self.pred(self.norm(x))
