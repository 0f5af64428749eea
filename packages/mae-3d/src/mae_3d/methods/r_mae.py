"""R-MAE: radially masked autoencoding of LiDAR voxels (Tayebati et al., radial masked autoencoders for LiDAR
pretraining).

    scan --voxelise--> occupancy grid (X, Y, Z)
    azimuth of every voxel centre around the *sensor origin* -> angular sector (1 degree by default)
    keep int((1 - m) * S) random non-empty sectors (mask ratio m = 0.8), as the reference; range-aware variant (the
    reference ``radial_mae_ra.py``): inside each kept sector keep int(f * n) random occupied voxels of each distance
    band, f = 1 - m, 1 - m + 0.2, 1 - m + 0.4 for <= 30, 30-50 and > 50 cells from the sensor (``range_rule:
    linear`` keeps this package's earlier rule instead: each voxel of a kept sector with probability 0.4 + 0.6 r/r_max)
    voxel-patch tokens (pillars of px x py x pz voxels, linear embedding of their *kept* occupancy + sin-cos
    position) -> encoder (mae-core blocks) on the patches that still hold a kept voxel
    decoder (mae-core MAEDecoder: mask tokens at every other patch) -> occupancy logits of every voxel of the grid
    loss: binary cross-entropy over the full grid, empty voxels as negatives

Deviations from the reference (sinatayebati/R-MAE): the backbone is a ViT over voxel pillars (mae-core blocks), not
the reference's sparse 3-D convolutions with a transposed-conv decoder; sectors and ranges are measured around the
sensor and drawn per scan (the reference takes atan2 and the range of the voxel *indices*, i.e. around the grid's
index origin, and draws one set of sectors for the whole batch).

Patches without a kept voxel never enter the encoder. The number of such patches differs between scans, so the
encoder runs on the batch's largest visible count with a key-padding attention mask, and the decoder replaces the
padding by the mask token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers import grid_shape, patchify, sincos_pos_embed, unpatchify
from mae_core.masking import uniform_noise, gather_tokens, mask_from_scores, restore_tokens
from mae_core.models import ViTConfig
from mae_core.models.mae import MAEDecoder, MaskedAutoencoder, ModelOutput, TransformerEncoder


@dataclass
class RMAEConfig(ViTConfig):
    __aliases__: ClassVar[dict] = {"decoder_dim": "decoder_embed_dim", "decoder_heads": "decoder_num_heads"}
    grid: list[int] = field([64, 64, 8], "voxels along x, y, z (follows the data)")
    voxel_size: list[float] = field([0.8, 0.8, 0.6], "voxel size in metres (follows the data)")
    grid_min: list[float] = field([-25.6, -25.6, -2.2], "lower grid corner in the sensor frame (follows the data)")
    sensor_origin: list[float] = field([0.0, 0.0], "x, y of the sensor in the grid's frame: sectors are "
                                                   "computed around it")
    patch: list[int] = field([4, 4, 8], "voxels per patch token along x, y, z")
    sector_deg: float = field(1.0, "angular width of a sector in degrees")
    mask_ratio: float = field(0.8, "fraction of the non-empty sectors removed")
    range_aware: bool = field(False, "inside kept sectors keep int(f * n) of the voxels of each band <= 30, 30-50, "
                                     "> 50 cells from the sensor, f = 1 - mask_ratio, + 0.2, + 0.4 (the reference "
                                     "radial_mae_ra.py)")
    range_rule: str = field("bands", "range-aware rule: bands (the reference's int(f * n) per band) or linear (the "
                                     "earlier rule: keep probability 0.4 at the sensor rising linearly to 1 at the "
                                     "farthest voxel of the grid)", choices=["bands", "linear"])
    decoder_depth: int = field(2, "decoder blocks")
    pos_weight: float = field(3.0, "weight of occupied voxels in the BCE (1 = plain BCE; about 5 % of voxels are "
                                   "occupied)")


RANGE_BANDS = (30.0, 50.0)  # range-aware bands in cells (<= 30, 30-50, > 50), as the reference
RANGE_BONUS = (0.0, 0.2, 0.4)  # added to the keep fraction 1 - m in each band, near to far, as the reference
LINEAR_NEAR_KEEP = 0.4  # range_rule linear: keep probability at the sensor (1 at the farthest voxel of the grid)


def voxel_centres(grid, voxel_size, grid_min, device="cpu") -> torch.Tensor:
    """(X, Y, Z, 3) metric centres of the voxels."""
    axes = [torch.arange(g, device=device, dtype=torch.float32) * s + m + s / 2
            for g, s, m in zip(grid, voxel_size, grid_min)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def voxel_sectors(centres: torch.Tensor, origin, sector_deg: float) -> tuple[torch.Tensor, int]:
    """Sector index of every voxel: azimuth atan2(y - oy, x - ox) around the sensor origin, binned by
    ``sector_deg``; returns (sector ids shaped like the grid, number of sectors)."""
    az = torch.atan2(centres[..., 1] - origin[1], centres[..., 0] - origin[0])  # [-pi, pi]
    n = int(math.ceil(360.0 / sector_deg))
    sec = torch.floor((torch.rad2deg(az) + 180.0) / sector_deg).long().clamp(0, n - 1)
    return sec, n


def radial_mask(occupancy: torch.Tensor, sectors: torch.Tensor, num_sectors: int, ratio: float, generator=None,
                ranges: torch.Tensor | None = None, bands=RANGE_BANDS,
                bonus=RANGE_BONUS, rule: str = "bands") -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``int((1 - ratio) * S)`` random sectors of the ``S`` non-empty sectors of each scan (the reference's
    ``int(select_ratio * len(radial_groups))``).

    ``occupancy`` (B, X, Y, Z); ``sectors`` (X, Y, Z) sector ids. Returns (kept voxels (B, X, Y, Z) bool, kept
    sectors (B, S) bool). With ``ranges`` (X, Y, Z, in cells) the range-aware variant keeps, inside each kept sector,
    ``int(f_k * n_k)`` random occupied voxels of the ``n_k`` in band k (``ranges <= bands[0]``, ``<= bands[1]``,
    beyond), ``f_k = 1 - ratio + bonus[k]`` (all of them when ``f_k >= 1``); ``rule="linear"`` instead keeps each
    voxel of a kept sector with probability :func:`linear_keep_prob` of its range (``bands`` / ``bonus`` unused)."""
    b = occupancy.shape[0]
    flat_sec = sectors.reshape(-1)
    occ = occupancy.reshape(b, -1) > 0
    nonempty = torch.zeros(b, num_sectors, dtype=torch.bool, device=occ.device)
    nonempty.scatter_reduce_(1, flat_sec.expand(b, -1), occ, reduce="amax")
    select = 1 - ratio  # the same float arithmetic as the reference: int((1 - 0.8) * 360) = 71
    n_keep = torch.floor(nonempty.sum(1).double() * select).long()
    scores = uniform_noise((b, num_sectors), generator, occ.device)
    scores = torch.where(nonempty, scores, torch.full_like(scores, 2.0))
    rank = torch.argsort(torch.argsort(scores, dim=1), dim=1)
    kept_sectors = (rank < n_keep[:, None]) & nonempty
    keep = kept_sectors.gather(1, flat_sec.expand(b, -1)) & occ
    if ranges is not None and rule == "linear":
        p = linear_keep_prob(ranges.reshape(-1)).to(occ.device)
        keep = keep & (uniform_noise(tuple(keep.shape), generator, occ.device) < p)
    elif ranges is not None:
        keep = _thin_by_range(keep, flat_sec, ranges.reshape(-1), num_sectors, select, bands, bonus, generator)
    return keep.reshape(occupancy.shape), kept_sectors


def linear_keep_prob(ranges: torch.Tensor, near_keep: float = LINEAR_NEAR_KEEP) -> torch.Tensor:
    """The earlier range-aware rule: keep probability ``near_keep`` at range 0 rising linearly to 1 at the largest
    range of ``ranges`` (the farthest voxel of the grid)."""
    return near_keep + (1 - near_keep) * ranges / ranges.max().clamp_min(1e-6)


def _thin_by_range(cand: torch.Tensor, flat_sec: torch.Tensor, ranges: torch.Tensor, num_sectors: int, select: float,
                   bands, bonus, generator) -> torch.Tensor:
    """Inside each (sector, band) cell keep ``int((select + bonus[band]) * n)`` random voxels of the ``n`` candidates
    (B, N); the rest are dropped."""
    if len(bonus) != len(bands) + 1:
        raise MaeError(f"range-aware masking needs {len(bands) + 1} keep bonuses (one per band), got {list(bonus)}")
    b, n = cand.shape
    dev = cand.device
    band = torch.bucketize(ranges, torch.tensor(list(bands), dtype=ranges.dtype, device=dev))  # <= 30 -> 0, ...
    nb = len(bonus)
    key = flat_sec * nb + band  # (N,) the (sector, band) cell of every voxel
    cells = num_sectors * nb
    counts = torch.zeros(b, cells, dtype=torch.float64, device=dev).scatter_add_(
        1, key.expand(b, -1), cand.double())
    frac = torch.tensor([select + x for x in bonus], dtype=torch.float64, device=dev)  # python floats, as reference
    quota = torch.minimum(torch.floor(frac.repeat(num_sectors)[None] * counts), counts)
    # random order inside each cell, candidates first: sort by cell, then by a uniform score (3 for non-candidates)
    u = uniform_noise((b, n), generator, dev).double()
    order = key.double()[None] * 4 + torch.where(cand, u, torch.full_like(u, 3.0))
    pos = torch.argsort(torch.argsort(order, dim=1), dim=1)
    start = torch.cumsum(torch.bincount(key, minlength=cells), 0) - torch.bincount(key, minlength=cells)
    rank = pos - start[key][None]
    return cand & (rank < quota.gather(1, key.expand(b, -1)))


class VoxelDecoder(MAEDecoder):
    """mae-core's MAE decoder; padded encoder slots (patches without a kept voxel) become mask tokens too."""

    def forward(self, latent, ids_restore, visible=None, pos=None, select=None):
        x = restore_tokens(self.embed(latent), self.mask_token, ids_restore)
        if visible is not None:
            x = torch.where(visible[..., None], x, self.mask_token.to(x.dtype))
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))


class RMAE(MaskedAutoencoder):
    mask_schedule_refused = "radial sector masking reads the config's mask ratio"
    method_name = "r-mae"
    pool = "mean"

    def __init__(self, config: RMAEConfig):
        super().__init__()
        self.config = c = config
        if len(c.grid) != 3 or len(c.patch) != 3:
            raise MaeError("model.grid and model.patch need 3 values (x, y, z)")
        self.tokens_grid = grid_shape(c.grid, c.patch)
        self.grid = tuple(g for g in self.tokens_grid)
        p = math.prod(c.patch)
        self.mask_ratio = c.mask_ratio
        self.patch_embed = nn.Linear(p, c.embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed(c.embed_dim, self.tokens_grid)[None], persistent=False)
        self.encoder = TransformerEncoder(c.embed_dim, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio,
                                          drop_path=c.drop_path, num_prefix_tokens=0)
        self.decoder = VoxelDecoder(c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads, p,
                                    pos_embed=sincos_pos_embed(c.decoder_embed_dim, self.tokens_grid),
                                    num_prefix_tokens=0,
                                    mlp_ratio=c.mlp_ratio)
        centres = voxel_centres(c.grid, c.voxel_size, c.grid_min)
        sectors, self.num_sectors = voxel_sectors(centres, c.sensor_origin, c.sector_deg)
        self.register_buffer("sectors", sectors, persistent=False)
        # range in cells (the reference measures voxel-index distances), around the sensor
        rng = torch.hypot((centres[..., 0] - c.sensor_origin[0]) / c.voxel_size[0],
                          (centres[..., 1] - c.sensor_origin[1]) / c.voxel_size[1])
        self.register_buffer("ranges", rng, persistent=False)
        self.init_weights()

    def occupancy(self, batch) -> torch.Tensor:
        occ = batch["occupancy"].float()
        if tuple(occ.shape[1:]) != tuple(self.config.grid):
            raise MaeError(f"occupancy grid {tuple(occ.shape[1:])} does not match the model grid "
                           f"{tuple(self.config.grid)}")
        return occ

    def _patches(self, occ: torch.Tensor) -> torch.Tensor:
        return patchify(occ[:, None], self.config.patch)  # (B, L, P)

    def make_radial_mask(self, occ: torch.Tensor, generator=None):
        c = self.config
        return radial_mask(occ, self.sectors, self.num_sectors, c.mask_ratio, generator,
                           self.ranges if c.range_aware else None, RANGE_BANDS, RANGE_BONUS, c.range_rule)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        occ = self.occupancy(batch)
        keep, kept_sectors = self.make_radial_mask(occ, generator)
        inp = self._patches(occ * keep)  # only kept voxels are seen
        visible = inp.sum(-1) > 0  # (B, L) patches that still hold a kept voxel
        k = max(int(visible.sum(1).max()), 1)
        info = mask_from_scores((~visible).float(), k)  # visible patches first, then padding
        valid = torch.gather(visible, 1, info.ids_keep)
        valid[:, 0] = True  # a scan with no kept voxel still has one (empty) token
        tokens = gather_tokens(self.patch_embed(inp), info.ids_keep)
        pos = gather_tokens(self.pos_embed.expand(occ.shape[0], -1, -1), info.ids_keep)
        latent = self.encoder(tokens, pos, attn_mask=valid[:, None, None, :])
        vis_full = torch.gather(torch.cat([valid, torch.zeros_like(visible[:, k:])], 1), 1, info.ids_restore)
        logits = self.decoder(latent, info.ids_restore, visible=vis_full)
        target = self._patches(occ)
        pw = torch.tensor(self.config.pos_weight, device=occ.device)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        with torch.no_grad():
            masked_occ = (occ > 0) & ~keep
            hit = (logits > 0) & (target > 0)
            metrics = {"kept_sector_fraction": float(kept_sectors.sum() / kept_sectors.numel()),
                       "visible_patches": float(visible.float().sum(1).mean()),
                       "recall_masked": float((unpatchify(hit.float(), self.config.patch, self.tokens_grid, 1)[:, 0]
                                               * masked_occ).sum() / masked_occ.sum().clamp_min(1))}
        return ModelOutput(loss=loss, pred=logits, mask=(~visible).float(), target=target, metrics=metrics,
                           extra={"keep": keep, "kept_sectors": kept_sectors})

    def occupancy_logits(self, pred: torch.Tensor) -> torch.Tensor:
        """(B, L, P) decoder output -> (B, X, Y, Z) logits."""
        return unpatchify(pred, self.config.patch, self.tokens_grid, 1)[:, 0]

    # ---- downstream ------------------------------------------------------------------------------------------------
    def forward_features(self, batch: dict) -> torch.Tensor:
        """Every patch token of the full scan through the encoder: (B, L, D)."""
        inp = self._patches(self.occupancy(batch))
        return self.encoder(self.patch_embed(inp), self.pos_embed)

    # probes and fine-tuning need scan-level labels, which LiDAR scans lack; mae-core names this hint then
    unlabelled_hint = "evaluate R-MAE with `mae-3d segment --run DIR` (per-voxel segmentation)"

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        return self.pool_features(self.forward_features(batch), pool)

    def pool_features(self, feats, pool=None):
        return feats.mean(1)

    def feature_dim(self, pool=None) -> int:
        return self.config.embed_dim

    def token_grid(self, batch):
        return self.forward_features(batch), self.tokens_grid

    def layer_id(self, name: str) -> int:
        if name.startswith("patch_embed"):
            return 0
        return super().layer_id(name)


def adapt_grid(model_cfg: RMAEConfig, data_cfg, dataset) -> RMAEConfig:
    """The model's grid follows the data's voxel grid."""
    import dataclasses

    kw = {k: list(getattr(data_cfg, k)) for k in ("grid", "voxel_size", "grid_min") if hasattr(data_cfg, k)}
    return dataclasses.replace(model_cfg, **kw)
