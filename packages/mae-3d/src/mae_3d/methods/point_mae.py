"""Point-MAE (Pang et al., "Masked Autoencoders for Point Cloud Self-supervised Learning", ECCV 2022).

    cloud (unit sphere) --FPS G centres + kNN M points--> G neighbourhoods relative to their centre
    neighbourhood --mini-PointNet--> one token; centre --MLP--> position, added before every block
    mask int(0.6 G) of the groups (random, or the groups nearest to a random centre), as the reference
    every group --mini-PointNet--> token (BatchNorm statistics over all groups, as the reference), visible ones kept
    visible tokens --encoder--> latent --decoder (mask tokens, positions before every block)--> M x 3 per group
    loss: Chamfer distance (L2: squared, mean both ways; or L1) between predicted and true masked neighbourhoods
    fine-tuning (``--pool cls+max``, the reference head): a cls token and position prepended, [cls, max over the
    groups] -> Linear-BN-ReLU-Dropout(0.5) x 2 (256 wide) -> mae-core's classifier (LayerNorm + Linear)

Built from mae-core parts: ``TransformerEncoder`` (``pos_every_block=True``) for encoder and decoder,
``mask_from_scores`` / ``random_masking`` with the trainer's generator, ``restore_tokens`` / ``gather_tokens``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.masking import MaskInfo, gather_tokens, mask_from_mask, mask_from_scores, restore_tokens, uniform_noise
from mae_core.models import ViTConfig
from mae_core.models.mae import MaskedAutoencoder, ModelOutput, TransformerEncoder

from ..ops import chamfer_distance, group_points


@dataclass
class PointMAEConfig(ViTConfig):
    __aliases__: ClassVar[dict] = {"decoder_dim": "decoder_embed_dim", "decoder_heads": "decoder_num_heads",
                                   "mask_type": "mask_strategy"}
    num_groups: int = field(32, "number of groups G (FPS centres; paper: 64 for 1024 points)")
    group_size: int = field(32, "points per group M (kNN of each centre)")
    embed_dim: int = field(192, "encoder width (paper: 384)")
    depth: int = field(4, "encoder blocks (paper: 12)")
    num_heads: int = field(3, "encoder attention heads (paper: 6)")
    pointnet_dims: list[int] = field([64, 128, 256], "mini-PointNet widths a, b, c: MLP 3-a-b, max-pool, concat, "
                                                    "MLP 2b-c-embed_dim, max-pool (paper: 128 256 512)")
    decoder_embed_dim: int = field(192, "decoder width (paper: 384)")
    decoder_depth: int = field(4, "decoder blocks")
    decoder_num_heads: int = field(3, "decoder attention heads (paper: 6)")
    mask_ratio: float = field(0.6, "fraction of groups hidden from the encoder: int(mask_ratio * G) of them, as the "
                                   "reference")
    mask_strategy: str = field("random", "random, or block (the groups nearest to a random centre)",
                               choices=["random", "block"])
    loss: str = field("l2", "Chamfer distance: l2 (squared distances) or l1", choices=["l2", "l1"])
    augment: bool = field(True, "random anisotropic scale (2/3..3/2) and translation (+-0.2) while pretraining")
    drop_path: float = field(0.1, "stochastic depth rate of the encoder")


CLS_HEAD_DIM = 256  # width of the reference fine-tuning head (pool cls+max), fixed in the reference


def point_mlp(in_dim: int, hidden: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out))


class _PointBN(nn.Module):
    """BatchNorm over the channel of (..., C) point features."""

    def __init__(self, c: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(c)

    def forward(self, x):
        return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class MiniPointNet(nn.Module):
    """Point-MAE's group embedding: shared MLP 3-a-b, max-pool, concat the pooled feature to every point,
    MLP 2b-c-out, max-pool -> one token per group. (B, G, M, 3) -> (B, G, out)."""

    def __init__(self, out_dim: int, dims=(128, 256, 512)):
        super().__init__()
        a, b, c = dims
        self.first = nn.Sequential(nn.Linear(3, a), _PointBN(a), nn.ReLU(inplace=True), nn.Linear(a, b))
        self.second = nn.Sequential(nn.Linear(2 * b, c), _PointBN(c), nn.ReLU(inplace=True), nn.Linear(c, out_dim))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        bsz, g, m, _ = groups.shape
        f = self.first(groups.reshape(bsz * g, m, 3))
        pooled = f.max(dim=1, keepdim=True).values
        f = self.second(torch.cat([pooled.expand(-1, m, -1), f], dim=-1))
        return f.max(dim=1).values.reshape(bsz, g, -1)


class PointDecoder(nn.Module):
    """Point-MAE decoder: mask tokens re-inserted at the masked groups, centre positions added before every block,
    final norm, then a linear head predicting the M x 3 points of each group. Returns (features (B, G, D) of the last
    block *before* the final norm (Point-CMAE's contrastive features, as the reference), pred (B, G, 3M))."""

    def __init__(self, embed_dim: int, dim: int, depth: int, heads: int, group_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = point_mlp(3, 128, dim)
        self.blocks = TransformerEncoder(dim, depth, heads, mlp_ratio=mlp_ratio, num_prefix_tokens=0,
                                         pos_every_block=True)
        self.head = nn.Linear(dim, 3 * group_size)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, centers: torch.Tensor, ids_restore: torch.Tensor):
        x = restore_tokens(self.embed(latent), self.mask_token, ids_restore)
        x, (raw,) = self.blocks(x, self.pos(centers), taps=[-1])
        return raw, self.head(x)


def scale_translate(points: torch.Tensor, generator=None) -> torch.Tensor:
    """Point-MAE's pretraining augmentation: per-axis scale U(2/3, 3/2) and translation U(-0.2, 0.2) per cloud."""
    b = points.shape[0]
    scale = 2 / 3 + (3 / 2 - 2 / 3) * uniform_noise((b, 1, 3), generator, points.device)
    shift = -0.2 + 0.4 * uniform_noise((b, 1, 3), generator, points.device)
    return points * scale.to(points.dtype) + shift.to(points.dtype)


def num_masked(groups: int, ratio: float) -> int:
    """``int(ratio * G)`` masked groups, as the reference (``_mask_center_rand`` / ``_mask_center_block``)."""
    if not 0.0 <= ratio < 1.0:
        raise MaeError(f"model.mask_ratio must be in [0, 1), got {ratio}")
    return int(ratio * groups)


def masked_ids(mask: MaskInfo) -> torch.Tensor:
    """(B, L - K) indices of the masked tokens (in the shuffled order after the kept ones)."""
    return torch.argsort(mask.ids_restore, dim=1)[:, mask.num_keep:]


class PointMAE(MaskedAutoencoder):
    method_name = "point-mae"
    pool = "max+mean"
    ddp_find_unused_parameters = True  # the fine-tuning cls token and head are not used by the pretraining loss

    def __init__(self, config: PointMAEConfig):
        super().__init__()
        self.config = c = config
        if len(c.pointnet_dims) != 3:
            raise MaeError(f"model.pointnet_dims needs 3 widths, got {c.pointnet_dims}")
        self.mask_ratio = c.mask_ratio
        self.patch_embed = MiniPointNet(c.embed_dim, c.pointnet_dims)
        self.pos_embed = point_mlp(3, 128, c.embed_dim)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          drop_path=c.drop_path, num_prefix_tokens=0, pos_every_block=True)
        self.build_decoder()
        self.init_weights()
        # the reference fine-tuning model's cls token / position and MLP head (used by pool "cls+max" only)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)
        h = CLS_HEAD_DIM
        self.cls_head = nn.Sequential(nn.Linear(2 * c.embed_dim, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True),
                                      nn.Dropout(0.5), nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True),
                                      nn.Dropout(0.5))

    def build_decoder(self) -> None:
        c = self.config
        self.decoder = PointDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads,
                                    c.group_size, c.mlp_ratio)

    # ---- grouping and masking ------------------------------------------------------------------------------------
    def points(self, batch: dict) -> torch.Tensor:
        pts = batch["points"]
        c = self.config
        if pts.ndim != 3 or pts.shape[-1] != 3:
            raise MaeError(f"points must be (B, N, 3), got {tuple(pts.shape)}")
        if pts.shape[1] < max(c.num_groups, c.group_size):
            raise MaeError(f"clouds have {pts.shape[1]} points, fewer than the {c.num_groups} groups / "
                           f"{c.group_size} points per group the model needs")
        return pts.float()

    def group(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(neighbourhoods (B, G, M, 3) relative to their centre, centres (B, G, 3))."""
        with torch.no_grad():
            return group_points(points, self.config.num_groups, self.config.group_size)

    def mask_groups(self, centers: torch.Tensor, generator=None, batch: dict | None = None) -> MaskInfo:
        if batch is not None and batch.get("mask") is not None:
            return mask_from_mask(batch["mask"].to(centers.device))
        b, g, _ = centers.shape
        keep = g - num_masked(g, self.mask_ratio)
        if self.config.mask_strategy == "block":
            start = (uniform_noise((b,), generator, centers.device) * g).long().clamp_max(g - 1)
            d = ((centers - centers[torch.arange(b, device=centers.device), start][:, None]) ** 2).sum(-1)
            return mask_from_scores(-d, keep)  # nearest to the random centre are masked
        return mask_from_scores(uniform_noise((b, g), generator, centers.device), keep)

    # ---- encoder / decoder -----------------------------------------------------------------------------------------
    def encode_visible(self, neighborhood: torch.Tensor, centers: torch.Tensor, mask: MaskInfo,
                       tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Every group is embedded (the mini-PointNet's BatchNorm sees all groups, as the reference), only the visible
        tokens are encoded: masked groups never reach the encoder. ``tokens``: the embedded groups, if done."""
        tokens = self.patch_embed(neighborhood) if tokens is None else tokens
        tokens = gather_tokens(tokens, mask.ids_keep)
        pos = self.pos_embed(gather_tokens(centers, mask.ids_keep))
        return self.encoder(tokens, pos)

    def reconstruction_loss(self, pred: torch.Tensor, neighborhood: torch.Tensor, mask: MaskInfo) -> torch.Tensor:
        """Chamfer distance between the predicted and the true points of the masked groups."""
        m = self.config.group_size
        ids = masked_ids(mask)
        p = gather_tokens(pred, ids).reshape(-1, m, 3)
        t = gather_tokens(neighborhood.flatten(2), ids).reshape(-1, m, 3)
        return chamfer_distance(p, t, self.config.loss).mean()

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        pts = self.points(batch)
        if self.training and self.config.augment:
            pts = scale_translate(pts, generator)
        neighborhood, centers = self.group(pts)
        mask = self.mask_groups(centers, generator, batch)
        latent = self.encode_visible(neighborhood, centers, mask)
        _, pred = self.decoder(latent, centers, mask.ids_restore)
        loss = self.reconstruction_loss(pred, neighborhood, mask)
        return ModelOutput(loss=loss, pred=pred, mask=mask.mask, target=neighborhood.flatten(2),
                           extra={"centers": centers})

    # ---- downstream ------------------------------------------------------------------------------------------------
    def forward_features(self, batch: dict) -> torch.Tensor:
        neighborhood, centers = self.group(self.points(batch))
        return self.encoder(self.patch_embed(neighborhood), self.pos_embed(centers))

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        if (pool or self.pool) != "cls+max":
            return super().encode(batch, pool)
        # the reference fine-tuning model: cls token + position prepended, [cls, max over groups] -> MLP with BN
        neighborhood, centers = self.group(self.points(batch))
        tokens, pos = self.patch_embed(neighborhood), self.pos_embed(centers)
        b = tokens.shape[0]
        x = self.encoder(torch.cat([self.cls_token.expand(b, -1, -1), tokens], 1),
                         torch.cat([self.cls_pos.expand(b, -1, -1), pos], 1))
        return self.cls_head(torch.cat([x[:, 0], x[:, 1:].max(1).values], -1))

    def pool_features(self, feats: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        pool = pool or self.pool
        if pool == "max":
            return feats.max(1).values
        if pool in ("mean", "cls", "cls+mean"):
            return feats.mean(1)
        if pool == "max+mean":
            return torch.cat([feats.max(1).values, feats.mean(1)], dim=-1)
        raise MaeError(f"unknown pool {pool!r} (max+mean, max, mean, or cls+max: the reference fine-tuning head)")

    def head_norm(self, pool: str | None = None) -> bool:
        """No LayerNorm in front of the classifier after the reference head (it ends in BatchNorm + ReLU)."""
        return (pool or self.pool) != "cls+max"

    def feature_dim(self, pool: str | None = None) -> int:
        pool = pool or self.pool
        if pool == "cls+max":
            return CLS_HEAD_DIM
        return 2 * self.config.embed_dim if pool == "max+mean" else self.config.embed_dim

    def layer_id(self, name: str) -> int:
        if name.startswith(("patch_embed", "pos_embed", "cls_token", "cls_pos")):
            return 0
        if name.startswith("cls_head"):
            return self.num_layers()
        return super().layer_id(name)


PRESETS = {
    "point-mae-tiny": (dict(embed_dim=96, depth=2, num_heads=3, decoder_embed_dim=96, decoder_depth=2,
                            decoder_num_heads=3, pointnet_dims=[32, 64, 128]), {},
                       "tiny Point-MAE for quick checks (96 wide, 2 blocks)"),
    "point-mae-small": ({}, {}, "the CPU default: 32 groups x 32 points, 192 wide, 4 encoder + 4 decoder blocks"),
    "point-mae-1k": (dict(num_groups=64), dict(num_points=1024),
                     "1024 points in 64 groups of 32 (the paper's grouping) with the small CPU model"),
    "point-mae-paper": (dict(num_groups=64, embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=384,
                             decoder_depth=4, decoder_num_heads=6, pointnet_dims=[128, 256, 512]),
                        dict(num_points=1024),
                        "the paper's model: 1024 points, 64 x 32 groups, 12 x 384 x 6 encoder, 4 x 384 decoder"),
}
