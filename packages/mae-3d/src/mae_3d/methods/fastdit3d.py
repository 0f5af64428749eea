"""FastDiT-3D: a masked diffusion transformer for point clouds (Mo et al., "Fast Training of Diffusion Transformer
with Extreme Masking for 3D Point Clouds Generation", ECCV 2024), on the DiT-3D base (``DiT-3D/DiT-3D``,
``models/dit3d.py``, ``models/dit3d_window_attn.py``, ``train.py``).

    x0 = cloud x data_scale; t ~ U{0..T-1}; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps        (mae_3d.diffusion)
    x_t --voxelise (r^3, the noisy coordinates as features)--> 3-D patches (p^3) --Conv3d--> tokens + 3-D sin-cos
    masking: voxel-aware (FastDiT-3D): of the patches holding no point (background) keep 1 %, of the occupied ones
             (foreground) keep 5 % (at least one); or random (a ratio over all patches); or none (DiT-3D)
    encoder: DiT blocks (adaLN-Zero on timestep + class embedding) on the kept patches only
    decoder: [MASK] at the dropped patches, + pos, light DiT blocks with 3-D window attention, final adaLN layer
    -> per-voxel eps (p^3 x 3 per patch) --trilinear devoxelise at each noisy point--> eps per point
    loss = MSE(eps_pred, eps) over the points of the kept patches (every point without masking)

Sampling runs every patch (no masking) through DDIM (default) or the full DDPM chain. ``generate`` (mae-3d command,
:mod:`mae_3d.generate`) writes the sampled clouds as PLY and a picture.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.contract import PretrainedMixin
from mae_core.errors import ConfigError, MaeError
from mae_core.layers import PatchEmbed3d, patchify, sincos_pos_embed, unpatchify
from mae_core.masking import gather_tokens, random_masking, uniform_noise
from mae_core.models.latent_ae import gaussian_noise
from mae_core.models.mae import ModelOutput

from ..diffusion import DiTBlock, FinalLayer, GaussianDiffusion, TimestepEmbedder, init_dit_weights, linear_betas
from ..voxels import devoxelize, voxel_coords, voxelize


@dataclass
class FastDiT3DConfig:
    voxel_size: int = field(16, "voxel grid resolution r (paper: 32 to 128)", ge=2)
    patch_size: int = field(2, "3-D patch edge p in voxels (DiT-3D S/4 at 32^3: 8^3 patches; here 16 / 2 = 8^3)", ge=1)
    embed_dim: int = field(96, "transformer width (DiT-S: 384)", ge=6)
    depth: int = field(4, "encoder DiT blocks (on the kept patches)", ge=1)
    num_heads: int = field(4, "attention heads", ge=1)
    mlp_ratio: float = field(4.0, "MLP hidden width / embed_dim", gt=0)
    decoder_depth: int = field(2, "decoder DiT blocks (on every patch, window attention)", ge=1)
    window_size: int = field(4, "decoder window edge in patches (0 = global attention)", ge=0)
    masking: str = field("voxel", "voxel (FastDiT-3D's voxel-aware), random, or none (DiT-3D)",
                         choices=["voxel", "random", "none"])
    bg_mask_ratio: float = field(0.99, "voxel-aware: fraction of background (empty) patches dropped", ge=0, le=1)
    fg_mask_ratio: float = field(0.95, "voxel-aware: fraction of foreground (occupied) patches dropped", ge=0, le=1)
    random_mask_ratio: float = field(0.75, "random masking: fraction of all patches dropped", ge=0, lt=1)
    num_classes: int = field(1, "classes of the label condition (1 = unconditional, one category)", ge=1)
    class_dropout: float = field(0.1, "probability of the null class in training (classifier-free guidance)",
                                 ge=0, le=1)
    moe_experts: int = field(0, "mixture-of-experts MLPs with this many experts (0 = dense MLP)", ge=0)
    moe_top_k: int = field(1, "experts per token with --moe-experts", ge=1)
    num_steps: int = field(1000, "diffusion steps T", ge=2)
    beta_start: float = field(1e-4, "first beta of the linear schedule", gt=0, lt=1)
    beta_end: float = field(0.02, "last beta of the linear schedule", gt=0, lt=1)
    data_scale: float = field(2.5, "clouds (unit sphere) are multiplied by this before diffusion (about unit std, "
                                   "as the reference's globally standardised ShapeNet)", gt=0)
    clip: float = field(2.5, "predicted x0 clamped to +-clip in sampling (the data range; reference: 0.5)", gt=0)
    sampler: str = field("ddim", "sampler of pictures / generate: ddim or ddpm (all num_steps)",
                         choices=["ddim", "ddpm"])
    sample_steps: int = field(50, "DDIM steps", ge=1)

    def validate(self, where: str = "model") -> None:
        if self.voxel_size % self.patch_size:
            raise ConfigError(f"{where}.voxel_size ({self.voxel_size}) must be divisible by patch_size "
                              f"({self.patch_size})")
        g = self.voxel_size // self.patch_size
        if self.window_size and g % self.window_size:
            raise ConfigError(f"{where}.window_size ({self.window_size}) must divide the patch grid ({g})")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"{where}.embed_dim ({self.embed_dim}) must be divisible by num_heads "
                              f"({self.num_heads})")
        if self.beta_end < self.beta_start:
            raise ConfigError(f"{where}.beta_end must not be below beta_start")


def keep_count(n: torch.Tensor, ratio: float, at_least: int = 0) -> torch.Tensor:
    """floor(n (1 - ratio)) per sample (MAE's int(L (1 - ratio))), at least ``at_least`` and at most n."""
    k = torch.floor(n.double() * (1 - ratio) + 1e-6).long()
    return torch.minimum(k.clamp_min(at_least), n.long())


def voxel_aware_masking(fg: torch.Tensor, bg_ratio: float, fg_ratio: float, generator=None):
    """Keep floor(n_bg (1 - bg_ratio)) of each sample's background patches and max(1, floor(n_fg (1 - fg_ratio)))
    of its foreground ones, uniformly at random. Returns ``ids_keep`` (B, K) with K the largest kept count, ``valid``
    (B, K) (False on the padding of samples that keep fewer) and ``mask`` (B, L), 1 = dropped."""
    b, length = fg.shape
    u = uniform_noise((b, length), generator, fg.device)
    rank_fg = torch.argsort(torch.argsort(u + 2.0 * (~fg), 1), 1)  # foreground first, random order
    rank_bg = torch.argsort(torch.argsort(u + 2.0 * fg, 1), 1)
    n_fg = fg.sum(1)
    k_fg = keep_count(n_fg, fg_ratio, at_least=1)
    k_bg = keep_count(length - n_fg, bg_ratio)
    keep = (fg & (rank_fg < k_fg[:, None])) | (~fg & (rank_bg < k_bg[:, None]))
    k = keep.sum(1)
    order = torch.argsort((~keep).float() * 2.0 + u, 1)
    ids_keep = order[:, :int(k.max())]
    valid = torch.arange(ids_keep.shape[1], device=fg.device)[None] < k[:, None]
    return ids_keep, valid, (~keep).float()


class FastDiT3D(PretrainedMixin, nn.Module):
    method_name = "fastdit-3d"

    def __init__(self, config: FastDiT3DConfig):
        super().__init__()
        self.config = c = config
        c.validate()
        g = c.voxel_size // c.patch_size
        self.grid = (g, g, g)
        self.patch_embed = PatchEmbed3d(c.patch_size, 3, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.grid)[None], persistent=False)
        self.t_embedder = TimestepEmbedder(c.embed_dim)
        self.y_embedder = nn.Embedding(c.num_classes + 1, c.embed_dim)  # + the null class
        self.blocks = nn.ModuleList(DiTBlock(c.embed_dim, c.num_heads, c.mlp_ratio, experts=c.moe_experts,
                                             top_k=c.moe_top_k) for _ in range(c.depth))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        window = (self.grid, c.window_size) if c.window_size and c.window_size < g else None
        self.decoder_blocks = nn.ModuleList(DiTBlock(c.embed_dim, c.num_heads, c.mlp_ratio, window=window,
                                                     experts=c.moe_experts, top_k=c.moe_top_k)
                                            for _ in range(c.decoder_depth))
        self.final_layer = FinalLayer(c.embed_dim, c.patch_size ** 3 * 3)
        init_dit_weights(self)
        w = self.patch_embed.proj.weight.data  # the reference: the patch conv initialised like a Linear
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.y_embedder.weight, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.diffusion = GaussianDiffusion(linear_betas(c.num_steps, c.beta_start, c.beta_end), clip=c.clip)

    # ---- the denoiser -------------------------------------------------------------------------------------------
    def condition(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.t_embedder(t) + self.y_embedder(y)

    def tokens(self, xt: torch.Tensor):
        """Noisy points (B, N, 3) -> patch tokens (B, L, D), foreground patches (B, L), voxel coordinates."""
        c = self.config
        coords = voxel_coords(xt, c.voxel_size)
        grid, counts = voxelize(xt, coords, c.voxel_size)
        fg = patchify(counts[:, None], c.patch_size).sum(-1) > 0
        return self.patch_embed(grid) + self.pos_embed, fg, coords

    def run_blocks(self, tokens, cond, ids_keep=None, valid=None):
        """Encoder on the kept tokens, decoder on all: (B, L, D) -> (eps grid (B, 3, r, r, r), encoder tokens)."""
        b, length, d = tokens.shape
        x = tokens if ids_keep is None else gather_tokens(tokens, ids_keep)
        attn_mask = None if valid is None or bool(valid.all()) else valid[:, None, None, :]
        for blk in self.blocks:
            x = blk(x, cond, attn_mask)
        enc = x
        if ids_keep is not None:
            v = valid.to(x.dtype)[..., None] if valid is not None else torch.ones_like(x[..., :1])
            idx = ids_keep[..., None]
            full = x.new_zeros(b, length, d).scatter_add(1, idx.expand(-1, -1, d), x * v)
            hit = x.new_zeros(b, length, 1).scatter_add(1, idx, v)
            x = torch.where(hit > 0, full, self.mask_token.to(x.dtype))
        x = x + self.pos_embed  # the decoder's position embedding (MAE), on every path: sampling sees the same
        for blk in self.decoder_blocks:
            x = blk(x, cond)
        out = self.final_layer(x, cond)
        return unpatchify(out, self.config.patch_size, self.grid, 3), enc, out

    def eps(self, xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Noise prediction on every patch (sampling): (B, N, 3) at timesteps (B,) -> (B, N, 3)."""
        y = torch.zeros_like(t) if y is None else y
        tok, _, coords = self.tokens(xt)
        grid, _, _ = self.run_blocks(tok, self.condition(t, y))
        return devoxelize(grid, coords)

    # ---- training ---------------------------------------------------------------------------------------------------
    def mask(self, fg: torch.Tensor, generator=None):
        c = self.config
        b, length = fg.shape
        if c.masking == "voxel":
            return voxel_aware_masking(fg, c.bg_mask_ratio, c.fg_mask_ratio, generator)
        if c.masking == "random" and c.random_mask_ratio > 0:
            m = random_masking(b, length, c.random_mask_ratio, generator, fg.device)
            return m.ids_keep, None, m.mask
        return None, None, fg.new_zeros(b, length, dtype=torch.float)

    def labels(self, batch: dict, b: int, device) -> torch.Tensor:
        y = batch.get("label")
        if self.config.num_classes == 1 or y is None:
            return torch.zeros(b, dtype=torch.long, device=device)
        return torch.as_tensor(y, device=device).long().clamp(0, self.config.num_classes - 1)

    def points(self, batch: dict) -> torch.Tensor:
        pts = batch.get("points") if isinstance(batch, dict) else None
        if pts is None or pts.ndim != 3 or pts.shape[-1] != 3:
            raise MaeError("fastdit-3d needs batch['points'] of shape (B, N, 3)")
        return pts.float()

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        x0 = self.points(batch) * c.data_scale
        b, dev = x0.shape[0], x0.device
        t = (uniform_noise((b,), generator, dev) * c.num_steps).long().clamp_max(c.num_steps - 1)
        noise = gaussian_noise(x0.shape, generator, dev)
        xt = self.diffusion.q_sample(x0, t, noise)
        y = self.labels(batch, b, dev)
        if self.training and c.class_dropout > 0:
            y = torch.where(uniform_noise((b,), generator, dev) < c.class_dropout, c.num_classes, y)
        tok, fg, coords = self.tokens(xt)
        ids_keep, valid, mask = self.mask(fg, generator)
        grid, _, _ = self.run_blocks(tok, self.condition(t, y), ids_keep, valid)
        pred = devoxelize(grid, coords)
        # the patch of each noisy point; a point counts when its patch was kept
        p, g = c.patch_size, self.grid[0]
        v = torch.round(coords).long() // p
        seen = 1 - torch.gather(mask, 1, (v[..., 0] * g + v[..., 1]) * g + v[..., 2])
        err = ((pred - noise) ** 2).mean(-1)
        loss = (err * seen).sum() / seen.sum().clamp_min(1)
        kept = (1 - mask).sum(1)
        return ModelOutput(loss=loss, pred=pred, mask=mask, target=noise,
                           extra={"t": t, "foreground": fg},
                           metrics={"kept_patches": float(kept.mean()),
                                    "foreground_patches": float(fg.sum(1).float().mean()),
                                    "points_in_loss": float(seen.sum(1).mean())})

    # ---- sampling ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num: int, num_points: int, generator=None, sampler: str | None = None, steps: int | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """(num, num_points, 3) clouds in the data's units (divided by data_scale)."""
        c = self.config
        dev = self.pos_embed.device
        y = torch.zeros(num, dtype=torch.long, device=dev) if labels is None else labels.to(dev)
        x = self.diffusion.sample(lambda xt, t: self.eps(xt, t, y), (num, num_points, 3), generator, dev,
                                  sampler or c.sampler, steps or c.sample_steps)
        return x / c.data_scale

    # ---- the contract ------------------------------------------------------------------------------------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """A generator has no probe features in the paper. Here: the clean cloud (t = 0, no masking) through the
        denoiser; the mean of the encoder tokens and the mean of the final layer's per-patch output (the latter
        because adaLN-Zero makes every block the identity at initialisation, so only the final layer learns at
        first)."""
        x0 = self.points(batch) * self.config.data_scale
        t = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        tok, _, _ = self.tokens(x0)
        _, enc, out = self.run_blocks(tok, self.condition(t, self.labels(batch, x0.shape[0], x0.device)))
        return torch.cat([enc.mean(1), out.mean(1)], -1)

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.embed_dim + self.config.patch_size ** 3 * 3

    def num_layers(self) -> int:
        return self.config.depth + self.config.decoder_depth + 1

    def layer_id(self, name: str) -> int:
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        if name.startswith("decoder_blocks."):
            return self.config.depth + int(name.split(".")[1]) + 1
        if name.startswith(("final_layer", "mask_token")):
            return self.num_layers()
        return 0

