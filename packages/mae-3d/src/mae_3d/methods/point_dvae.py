"""Point-BERT's tokenizer: a discrete VAE over point groups (Yu et al., "Point-BERT: Pre-training 3D Point Cloud
Transformers with Masked Point Modeling", CVPR 2022; ``lulutang0608/Point-BERT``, ``models/dvae.py``).

    cloud --FPS G centres + kNN M points--> neighbourhoods (Point-MAE's grouping, ``group_points``)
    neighbourhood --mini-PointNet--> group embedding --DGCNN over the centres (k = 4)--> logits over N codes
    logits --Gumbel-softmax (temperature tau)--> soft one-hot --x codebook (N x C)--> DGCNN (k = 4) --> decoder
    decoder: MLP -> M/4 coarse points; folding with a 2 x 2 grid (+-0.05) -> M fine points, per group
    loss = Chamfer-L1(coarse) + Chamfer-L1(fine) + w_KL * KL(uniform || mean over the groups of softmax(logits))

The temperature follows a cosine from 1 to 0.0625 and the KL weight a cosine from 0 to 0.1, both driven by the
trainer's progress (``set_progress``). The reference counts iterations: tau reaches 0.0625 at iteration 100 000, the
KL weight is 0 for 10 000 iterations and reaches 0.1 at 110 000, of about 197 000 (300 epochs of ShapeNet-55 at
batch 64); here the same shape over the fractions 0-0.5 and 0.05-0.55 of training (``temp_until``,
``kl_from``, ``kl_until``). Point-BERT (``point-bert``) reads the argmax ids as its targets and copies the
mini-PointNet into its patch embedding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.contract import PretrainedMixin
from mae_core.errors import ConfigError, MaeError
from mae_core.masking import uniform_noise
from mae_core.models.mae import ModelOutput

from ..ops import chamfer_distance, knn
from .point_mae import MiniPointNet, PointMAE, scale_translate


@dataclass
class PointDVAEConfig:
    num_groups: int = field(32, "number of groups G (FPS centres; paper: 64 for 1024 points)", ge=1)
    group_size: int = field(32, "points per group M (kNN of each centre; a multiple of 4; paper: 32)", ge=4)
    pointnet_dims: list[int] = field([64, 128, 256], "mini-PointNet widths a, b, c (paper: 128 256 512)")
    encoder_dims: int = field(128, "group embedding width (paper: 256)", ge=1)
    num_tokens: int = field(1024, "codebook size N (paper: 8192)", ge=2)
    tokens_dims: int = field(128, "codebook vector width (paper: 256)", ge=1)
    decoder_dims: int = field(128, "width of the second DGCNN's output, the decoder's input (paper: 256)", ge=1)
    dgcnn_width: int = field(32, "DGCNN width w: layers 2w, 4w, 4w, 8w, concat 18w (paper: 128)", ge=4)
    decoder_hidden: int = field(128, "decoder MLP / folding widths (paper: 1024 / 512)", ge=1)
    dgcnn_k: int = field(4, "neighbours of each group centre in the DGCNN graph (paper: 4, the group itself included)",
                         ge=1)
    temp_start: float = field(1.0, "Gumbel-softmax temperature at the start", gt=0)
    temp_end: float = field(0.0625, "Gumbel-softmax temperature at the end of the anneal", gt=0)
    temp_until: float = field(0.5, "fraction of training over which the temperature anneals (cosine)", ge=0, le=1)
    kl_weight: float = field(0.1, "final weight of the KL to the uniform prior", ge=0)
    kl_from: float = field(0.05, "fraction of training before which the KL weight is 0", ge=0, le=1)
    kl_until: float = field(0.55, "fraction of training at which the KL weight reaches kl_weight (cosine)", ge=0, le=1)
    loss: str = field("l1", "Chamfer distance: l1 (the reference) or l2", choices=["l1", "l2"])
    augment: bool = field(False, "random scale / translation (the reference's dVAE run has none)")

    def validate(self, where: str = "model") -> None:
        if self.group_size % 4:
            raise ConfigError(f"{where}.group_size must be a multiple of 4 (the 2 x 2 folding), got {self.group_size}")
        for name in ("num_tokens", "decoder_dims"):  # GroupNorm(4) on the DGCNN outputs
            if getattr(self, name) % 4:
                raise ConfigError(f"{where}.{name} must be a multiple of 4 (GroupNorm of 4 groups), got "
                                  f"{getattr(self, name)}")
        if self.dgcnn_width % 2:
            raise ConfigError(f"{where}.dgcnn_width must be even (GroupNorm of 4 groups), got {self.dgcnn_width}")
        if self.kl_until < self.kl_from:
            raise ConfigError(f"{where}.kl_until ({self.kl_until}) must not be before kl_from ({self.kl_from})")


def cosine_ramp(start: float, end: float, t: float) -> float:
    """The reference's schedule: ``end + (start - end) * (1 + cos(pi t)) / 2`` for t in [0, 1], clamped outside."""
    t = min(max(t, 0.0), 1.0)
    return end + (start - end) * (1.0 + math.cos(math.pi * t)) / 2.0


def gumbel_temperature(progress: float, c: PointDVAEConfig) -> float:
    """Temperature at ``progress``: cosine from ``temp_start`` to ``temp_end`` over [0, temp_until], then constant."""
    t = progress / c.temp_until if c.temp_until > 0 else 1.0
    return cosine_ramp(c.temp_start, c.temp_end, t)


def kl_weight(progress: float, c: PointDVAEConfig) -> float:
    """KL weight at ``progress``: 0 before ``kl_from``, cosine up to ``kl_weight`` at ``kl_until``, then constant."""
    if progress < c.kl_from:
        return 0.0
    span = c.kl_until - c.kl_from
    return cosine_ramp(0.0, c.kl_weight, (progress - c.kl_from) / span if span > 0 else 1.0)


def gumbel_softmax(logits: torch.Tensor, tau: float, generator=None) -> torch.Tensor:
    """``softmax((logits + g) / tau)`` with Gumbel noise g = -log(-log u) drawn from ``generator`` (the reference:
    ``F.gumbel_softmax(hard=False)``, which draws from the global RNG)."""
    u = uniform_noise(logits.shape, generator, logits.device).to(logits.dtype).clamp(1e-10, 1 - 1e-7)
    return F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """The reference's term: ``KL(uniform || q)`` with q the softmax averaged over the groups of each cloud,
    summed over the codes and averaged over the clouds (``F.kl_div(log q, log u, log_target=True, 'batchmean')``)."""
    n = logits.shape[-1]
    log_q = torch.log(F.softmax(logits, dim=-1).mean(dim=1))
    return (-math.log(n) - log_q).sum(-1).mean() / n


class DGCNN(nn.Module):
    """The reference's DGCNN over group centres: 4 edge convolutions on the k-NN graph of the centres (edge feature
    [f_j - f_i, f_i], 1x1 conv, GroupNorm(4), LeakyReLU 0.2, max over the k neighbours), concat, 1x1 conv to
    ``out_dim``. Widths w, 2w, 4w, 4w, 8w (the reference: w = 128)."""

    def __init__(self, in_dim: int, out_dim: int, w: int, k: int):
        super().__init__()
        self.k = k
        self.input_trans = nn.Linear(in_dim, w)

        def layer(i, o):
            return nn.Sequential(nn.Linear(i, o, bias=False), _GroupNorm(o), nn.LeakyReLU(0.2))
        self.layers = nn.ModuleList([layer(2 * w, 2 * w), layer(4 * w, 4 * w), layer(8 * w, 4 * w),
                                     layer(8 * w, 8 * w)])
        self.out = layer(18 * w, out_dim)

    def forward(self, f: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """(B, G, C) features at (B, G, 3) centres -> (B, G, out_dim)."""
        with torch.no_grad():
            idx = knn(centers, centers, min(self.k, centers.shape[1]))  # (B, G, k), the centre itself first
        f = self.input_trans(f)
        feats = []
        for layer in self.layers:
            nb = torch.gather(f[:, None].expand(-1, f.shape[1], -1, -1), 2,
                              idx[..., None].expand(-1, -1, -1, f.shape[-1]))  # (B, G, k, C)
            centre = f[:, :, None].expand_as(nb)
            f = layer(torch.cat([nb - centre, centre], -1)).max(dim=2).values
            feats.append(f)
        return self.out(torch.cat(feats, -1))


class _GroupNorm(nn.Module):
    """GroupNorm(4) over the channel of (..., C) features (the reference's ``nn.GroupNorm(4, C)`` on (B, C, G, k))."""

    def __init__(self, c: int):
        super().__init__()
        self.gn = nn.GroupNorm(4, c)

    def forward(self, x):
        shape = x.shape  # (B, G[, k], C): normalised over G (and k) and the channels of each group of channels
        y = self.gn(x.reshape(shape[0], -1, shape[-1]).transpose(1, 2))
        return y.transpose(1, 2).reshape(shape)


class FoldingDecoder(nn.Module):
    """The reference's decoder: an MLP gives M/4 coarse points per group, each carries a 2 x 2 grid (+-0.05); a
    point-wise MLP (with BatchNorm) on [feature, grid, coarse point] gives the offset of the M fine points."""

    def __init__(self, dim: int, group_size: int, hidden: int):
        super().__init__()
        self.num_coarse = group_size // 4
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, 3 * self.num_coarse))
        self.final = nn.Sequential(nn.Conv1d(dim + 5, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                   nn.Conv1d(hidden, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                   nn.Conv1d(hidden, 3, 1))
        a = torch.linspace(-0.05, 0.05, 2)
        self.register_buffer("seed", torch.stack([a.repeat(2), a.repeat_interleave(2)]), persistent=False)  # (2, 4)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, G, D) -> coarse (B, G, M/4, 3), fine (B, G, M, 3), relative to the group centres."""
        b, g, d = feat.shape
        f = feat.reshape(b * g, d)
        coarse = self.mlp(f).reshape(b * g, self.num_coarse, 3)
        m = 4 * self.num_coarse
        centre = coarse[:, :, None].expand(-1, -1, 4, -1).reshape(b * g, m, 3).transpose(1, 2)  # (BG, 3, M)
        seed = self.seed[:, None].expand(-1, self.num_coarse, -1).reshape(1, 2, m).expand(b * g, -1, -1)
        x = torch.cat([f[:, :, None].expand(-1, -1, m), seed.to(f.dtype), centre], 1)
        fine = self.final(x) + centre
        return coarse.reshape(b, g, -1, 3), fine.transpose(1, 2).reshape(b, g, m, 3)


class PointDVAE(PretrainedMixin, nn.Module):
    method_name = "point-dvae"
    pool = "max+mean"

    def __init__(self, config: PointDVAEConfig):
        super().__init__()
        self.config = c = config
        if len(c.pointnet_dims) != 3:
            raise MaeError(f"model.pointnet_dims needs 3 widths, got {c.pointnet_dims}")
        c.validate()
        self.patch_embed = MiniPointNet(c.encoder_dims, c.pointnet_dims)  # the reference's dvae.encoder
        self.dgcnn_1 = DGCNN(c.encoder_dims, c.num_tokens, c.dgcnn_width, c.dgcnn_k)
        self.codebook = nn.Parameter(torch.randn(c.num_tokens, c.tokens_dims))
        self.dgcnn_2 = DGCNN(c.tokens_dims, c.decoder_dims, c.dgcnn_width, c.dgcnn_k)
        self.decoder = FoldingDecoder(c.decoder_dims, c.group_size, c.decoder_hidden)
        self.progress = 0.0

    def set_progress(self, p: float) -> None:
        """Called by the trainer before every forward: drives the temperature and the KL weight."""
        self.progress = float(p)

    points = PointMAE.points  # (B, N, 3) checked against the groups
    group = PointMAE.group  # (neighbourhoods (B, G, M, 3) relative to their centres, centres (B, G, 3))

    def logits(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """(B, G, N) code logits of the groups (what Point-BERT's targets are the argmax of)."""
        return self.dgcnn_1(self.patch_embed(neighborhood), centers)

    @torch.no_grad()
    def token_ids(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        return self.logits(neighborhood, centers).argmax(-1)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        pts = self.points(batch)
        if self.training and c.augment:
            pts = scale_translate(pts, generator)
        neighborhood, centers = self.group(pts)
        logits = self.logits(neighborhood, centers)
        tau, w = gumbel_temperature(self.progress, c), kl_weight(self.progress, c)
        soft = gumbel_softmax(logits, tau, generator)
        coarse, fine = self.decoder(self.dgcnn_2(soft @ self.codebook, centers))
        b, g = centers.shape[:2]
        gt = neighborhood.reshape(b * g, -1, 3)
        rec_coarse = chamfer_distance(coarse.reshape(b * g, -1, 3), gt, c.loss).mean()
        rec_fine = chamfer_distance(fine.reshape(b * g, -1, 3), gt, c.loss).mean()
        kl = kl_to_uniform(logits)
        loss = rec_coarse + rec_fine + w * kl
        with torch.no_grad():
            ids = logits.argmax(-1)
            used = torch.bincount(ids.flatten(), minlength=c.num_tokens).float()
            p = used / used.sum()
            perplexity = torch.exp(-(p * p.clamp_min(1e-12).log()).sum())
        return ModelOutput(loss=loss, pred=fine.flatten(2), mask=torch.ones(b, g, device=pts.device),
                           target=neighborhood.flatten(2), extra={"centers": centers, "ids": ids},
                           metrics={"chamfer_coarse": rec_coarse.detach(), "chamfer_fine": rec_fine.detach(),
                                    "kl": kl.detach(), "temperature": tau, "kl_weight": w,
                                    "codes_used": int((used > 0).sum()), "code_perplexity": perplexity})

    # ---- downstream: the group embeddings (what Point-BERT starts from), pooled over the groups --------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        neighborhood, centers = self.group(self.points(batch))
        pool = pool or self.pool
        if pool == "tokens":  # the soft histogram of the codes
            return F.softmax(self.logits(neighborhood, centers), -1).mean(1)
        f = self.patch_embed(neighborhood)
        if pool == "max+mean":
            return torch.cat([f.max(1).values, f.mean(1)], -1)
        raise MaeError(f"unknown pool {pool!r} for point-dvae (max+mean: group embeddings, tokens: code histogram)")

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.num_tokens if (pool or self.pool) == "tokens" else 2 * self.config.encoder_dims

    def num_layers(self) -> int:
        return 2

    def layer_id(self, name: str) -> int:
        return 0 if name.startswith("patch_embed") else 1
