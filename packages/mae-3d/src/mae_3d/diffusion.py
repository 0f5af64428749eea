"""Diffusion pieces of DiT-3D / FastDiT-3D (``DiT-3D/DiT-3D``: ``train.py`` ``GaussianDiffusion``, ``models/dit3d.py``
and ``models/dit3d_window_attn.py``). No other method of the library uses them, so they live in mae-3d.

Schedule (``GaussianDiffusion``): betas linear from 1e-4 to 0.02 over T = 1000 steps (``get_betas('linear')``),
computed in float64; eps prediction; ``fixedsmall`` variance (the posterior variance, its log clipped at 1e-20);
the predicted x0 clamped to +-``clip`` before the posterior mean. DDPM ancestral sampling as ``p_sample_loop``;
DDIM (Song et al. 2021, eta = 0 deterministic) on an evenly spaced subset of the steps, which the reference lacks.

Blocks: ``DiTBlock`` is the adaLN-Zero block (shift / scale / gate for attention and MLP regressed from the condition
by SiLU + Linear, that Linear zero-initialised so every block starts as the identity); ``FinalLayer`` the adaLN
LayerNorm + Linear (both zero-initialised); the condition is the sinusoidal timestep embedding through an MLP plus
a class embedding (one extra null class for classifier-free guidance, dropped with ``class_dropout``). A block may
attend inside 3-D windows of the patch grid (``window``), and its MLP may be a mixture of experts (FastDiT-3D's
option: a softmax router, the top-k experts of each token, their outputs weighted by the renormalised gates).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from mae_core.layers import Attention, Mlp
from mae_core.models.latent_ae import gaussian_noise


# ---- the noise schedule ---------------------------------------------------------------------------------------------
def linear_betas(num_steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    return torch.linspace(start, end, num_steps, dtype=torch.float64)


class GaussianDiffusion:
    """q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0) and the samplers, every table kept in float64 and read as
    float32 (the reference casts its tables to float32 too)."""

    def __init__(self, betas: torch.Tensor, clip: float | None = None):
        self.betas = b = betas.double()
        self.num_steps = len(b)
        self.clip = clip
        self.alphas_cumprod = ac = torch.cumprod(1 - b, 0)
        self.alphas_cumprod_prev = acp = torch.cat([ac.new_ones(1), ac[:-1]])
        self.posterior_variance = b * (1 - acp) / (1 - ac)
        self.posterior_log_variance = self.posterior_variance.clamp_min(1e-20).log()
        self.posterior_coef_x0 = b * acp.sqrt() / (1 - ac)
        self.posterior_coef_xt = (1 - acp) * (1 - b).sqrt() / (1 - ac)

    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return table.to(x.device)[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ac = self.alphas_cumprod
        return self._at(ac.sqrt(), t, x0) * x0 + self._at((1 - ac).sqrt(), t, x0) * noise

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ac = self.alphas_cumprod
        return self._at((1 / ac).sqrt(), t, xt) * xt - self._at((1 / ac - 1).sqrt(), t, xt) * eps

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at(self.posterior_coef_x0, t, xt) * x0 + self._at(self.posterior_coef_xt, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, xt), self._at(self.posterior_log_variance, t, xt)

    def ddpm_step(self, eps: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_{t-1} = posterior mean at the predicted (clamped) x0 + exp(log-variance / 2) noise, no noise at t = 0."""
        x0 = self.predict_x0(xt, t, eps)
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        mean, _, logvar = self.q_posterior(x0, xt, t)
        nonzero = (t != 0).to(xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))
        return mean + nonzero * (0.5 * logvar).exp() * noise

    def ddim_step(self, eps: torch.Tensor, xt: torch.Tensor, t: int, t_prev: int, eta: float = 0.0,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """One DDIM step from t to t_prev (t_prev = -1: to the data, abar = 1)."""
        tt = torch.full((xt.shape[0],), t, dtype=torch.long, device=xt.device)
        x0 = self.predict_x0(xt, tt, eps)
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
            eps = (xt - self.alphas_cumprod[t].sqrt().item() * x0) / (1 - self.alphas_cumprod[t]).sqrt().item()
        a_t = float(self.alphas_cumprod[t])
        a_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        out = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        return out + sigma * noise if sigma > 0 and noise is not None else out

    @torch.no_grad()
    def sample(self, eps_fn, shape, generator=None, device="cpu", sampler: str = "ddim", steps: int = 50,
               eta: float = 0.0) -> torch.Tensor:
        """x_T ~ N(0, I), then ``steps`` DDIM steps or all T DDPM steps; ``eps_fn(x_t, t (B,)) -> eps``."""
        x = gaussian_noise(shape, generator, device)
        if sampler == "ddpm":
            for t in reversed(range(self.num_steps)):
                tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
                x = self.ddpm_step(eps_fn(x, tt), x, tt, gaussian_noise(shape, generator, device))
            return x
        ts = torch.linspace(0, self.num_steps - 1, max(1, min(steps, self.num_steps))).round().long().tolist()
        ts = sorted(set(ts), reverse=True)
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
            noise = gaussian_noise(shape, generator, device) if eta > 0 else None
            x = self.ddim_step(eps_fn(x, tt), x, t, t_prev, eta, noise)
        return x


# ---- conditioning --------------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """GLIDE's sinusoidal embedding of (B,) timesteps: [cos(t f), sin(t f)], f = max_period ** (-i / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], -1) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ---- blocks ----------------------------------------------------------------------------------------------------------
def window_partition(x: torch.Tensor, grid: tuple[int, int, int], w: int) -> torch.Tensor:
    """(B, X*Y*Z, D) tokens of a grid -> (B * windows, w^3, D), windows of w x w x w patches (grid divisible by w)."""
    b, _, d = x.shape
    gx, gy, gz = grid
    x = x.reshape(b, gx // w, w, gy // w, w, gz // w, w, d).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(-1, w ** 3, d)


def window_unpartition(x: torch.Tensor, grid: tuple[int, int, int], w: int) -> torch.Tensor:
    gx, gy, gz = grid
    d = x.shape[-1]
    x = x.reshape(-1, gx // w, gy // w, gz // w, w, w, w, d).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(-1, gx * gy * gz, d)


class MoEMlp(nn.Module):
    """Mixture-of-experts MLP: a linear router, softmax gates, each token through its top-k experts (dense compute:
    every expert runs on every token, the unused outputs weighted 0; fine at this size)."""

    def __init__(self, dim: int, hidden: int, experts: int, top_k: int = 1):
        super().__init__()
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(Mlp(dim, hidden, act_layer=nn.GELU) for _ in range(experts))
        self.top_k = min(top_k, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.router(x).softmax(-1)
        top, idx = gates.topk(self.top_k, -1)
        weights = torch.zeros_like(gates).scatter(-1, idx, top / top.sum(-1, keepdim=True))
        return sum(weights[..., i:i + 1] * e(x) for i, e in enumerate(self.experts))


class DiTBlock(nn.Module):
    """adaLN-Zero block: x + gate_a * Attn(modulate(LN(x))) then x + gate_m * MLP(modulate(LN(x))); LayerNorms
    without affine weights; with ``window`` (grid, w) the attention runs inside w^3 windows of the patch grid."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, window: tuple | None = None,
                 experts: int = 0, top_k: int = 1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = MoEMlp(dim, hidden, experts, top_k) if experts > 1 else Mlp(dim, hidden, act_layer=nn.GELU)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.window = window

    def forward(self, x: torch.Tensor, c: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        h = modulate(self.norm1(x), shift_a, scale_a)
        if self.window is not None:
            grid, w = self.window
            h = window_unpartition(self.attn(window_partition(h, grid, w)), grid, w)
        else:
            h = self.attn(h, attn_mask=attn_mask)
        x = x + gate_a.unsqueeze(1) * h
        return x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def init_dit_weights(model: nn.Module) -> None:
    """The reference's ``initialize_weights``: xavier-uniform weights and zero biases on every Linear, then the
    timestep MLP at N(0, 0.02) and every adaLN modulation and the final layer zeroed (adaLN-Zero)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, TimestepEmbedder):
            for i in (0, 2):
                nn.init.normal_(m.mlp[i].weight, std=0.02)
        elif isinstance(m, (DiTBlock, FinalLayer)):
            nn.init.zeros_(m.adaLN_modulation[-1].weight)
            nn.init.zeros_(m.adaLN_modulation[-1].bias)
            if isinstance(m, FinalLayer):
                nn.init.zeros_(m.linear.weight)
                nn.init.zeros_(m.linear.bias)
