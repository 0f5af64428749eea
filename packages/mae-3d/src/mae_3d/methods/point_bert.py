"""Point-BERT (Yu et al., "Point-BERT: Pre-training 3D Point Cloud Transformers with Masked Point Modeling", CVPR
2022; ``lulutang0608/Point-BERT``, ``models/Point_BERT.py``, ``cfgs/Mixup_models/Point-BERT.yaml``).

    cloud --FPS + kNN groups--> the frozen dVAE (``point-dvae``) --argmax--> one token id per group (the targets)
    groups --mini-PointNet (initialised from the dVAE's)--> Linear --> tokens; centre --MLP--> position
    block mask: a random centre, its int(r G) nearest groups, r ~ U(0.25, 0.45) per cloud; the masked tokens are
    replaced by a learned [MASK] token and *stay in the sequence* (G + cls tokens enter the encoder)
    encoder (positions before every block) --> norm --> lm head: cross-entropy to the ids on the masked groups
    point mixing (the released config's ``cutmix_loss``): groups of cloud b taken with probability r_b from cloud b,
    else from cloud B-1-b (ids mixed the same way, also predicted); the mixed cloud's cls projection is contrasted
    with the momentum encoder's cls projection of both sources (weights r_b, 1 - r_b) and a queue of negatives
    loss = MPM(original) + MPM(mixed) + mixing contrastive  (+ MoCo on the original, off as in the released config)

The momentum encoder (an EMA of the whole student encoder, m = 0.999) and the queue are updated before each forward
(in ``set_progress``, which the trainer calls before every forward): the keys of a step enter the queue before the
next step, as the reference's enqueue at the end of its forward.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.checkpoint import WEIGHTS, read_config
from mae_core.config import field
from mae_core.contract import PretrainedMixin
from mae_core.errors import ConfigError, MaeError
from mae_core.layers import EMA, FeatureQueue
from mae_core.losses import info_nce, masked_mean
from mae_core.masking import uniform_noise
from mae_core.models.mae import ModelOutput, TransformerEncoder
from mae_core.teacher import FrozenTeacher, cached_pretrain

from .point_dvae import PointDVAE, PointDVAEConfig
from .point_mae import MiniPointNet, PointMAE, point_mlp, scale_translate

# fields that must equal the dVAE's: copied from the teacher's config.json when the model is built
TEACHER_FIELDS = ("num_groups", "group_size", "pointnet_dims", "encoder_dims", "num_tokens")


@dataclass
class PointBERTConfig:
    num_groups: int = field(32, "number of groups G (copied from the dVAE teacher)", ge=1)
    group_size: int = field(32, "points per group M (copied from the dVAE teacher)", ge=1)
    pointnet_dims: list[int] = field([64, 128, 256], "mini-PointNet widths (copied from the dVAE teacher)")
    encoder_dims: int = field(128, "group embedding width (copied from the dVAE teacher; paper: 256)", ge=1)
    num_tokens: int = field(1024, "dVAE codebook size (copied from the dVAE teacher; paper: 8192)", ge=2)
    embed_dim: int = field(192, "transformer width (paper: 384)", ge=1)
    depth: int = field(4, "transformer blocks (paper: 12)", ge=1)
    num_heads: int = field(3, "attention heads (paper: 6)", ge=1)
    mlp_ratio: float = field(4.0, "MLP hidden width / embed_dim", gt=0)
    drop_path: float = field(0.1, "stochastic depth rate", ge=0, lt=1)
    cls_dim: int = field(128, "width of the cls projection (contrastive features; paper: 512)", ge=1)
    mask_min: float = field(0.25, "smallest block-mask ratio (paper: 0.25)", ge=0, lt=1)
    mask_max: float = field(0.45, "largest block-mask ratio (paper: 0.45)", ge=0, lt=1)
    mixing: bool = field(True, "point-mixing contrastive loss with the momentum encoder and queue (released config: "
                               "on)")
    moco: bool = field(False, "MoCo loss between the original cloud's cls and the momentum key (released config: off)")
    momentum: float = field(0.999, "momentum of the key encoder (paper: 0.999)", ge=0, le=1)
    temperature: float = field(0.07, "contrastive temperature (paper: 0.07)", gt=0)
    queue_size: int = field(512, "negatives in the queue (paper: 16384)", ge=1)
    augment: bool = field(True, "random scale / translation while pretraining (the reference's pretraining)")
    teacher: str = field("", "the dVAE tokenizer: a point-dvae run directory; empty: trained once on the data and "
                             "cached under runs/teachers; 'random': random weights (control)")
    teacher_sha256: str = field("", "sha256 of the teacher's weights (filled when the teacher is first seen)")
    teacher_epochs: int = field(4, "epochs of the default dVAE when it has to be trained", ge=1)

    def validate(self, where: str = "model") -> None:
        if self.mask_max < self.mask_min:
            raise ConfigError(f"{where}.mask_max ({self.mask_max}) is below mask_min ({self.mask_min})")


def block_mask(centers: torch.Tensor, lo: float, hi: float, generator=None) -> torch.Tensor:
    """The reference's ``_mask_center``: per cloud a random centre and r ~ U(lo, hi); its ``int(r G)`` nearest
    groups (itself included) are masked. (B, G, 3) -> (B, G) bool, True = masked."""
    b, g, _ = centers.shape
    u = uniform_noise((b, 2), generator, centers.device)
    start = (u[:, 0] * g).long().clamp_max(g - 1)
    n = ((lo + (hi - lo) * u[:, 1]) * g).long()
    d = ((centers - centers[torch.arange(b, device=centers.device), start][:, None]) ** 2).sum(-1)
    rank = d.argsort(1).argsort(1)
    return rank < n[:, None]


def point_mix(neighborhood, centers, ids, generator=None):
    """The reference's ``_mixup_pc``: r_b ~ U(0, 1); each group of cloud b comes from cloud b with probability r_b,
    else from cloud B-1-b (the batch reversed), with its centre and its token id. Returns (r, groups, centres, ids)."""
    b, g = centers.shape[:2]
    r = uniform_noise((b,), generator, centers.device)
    keep = uniform_noise((b, g), generator, centers.device) < r[:, None]
    mix_nb = torch.where(keep[..., None, None], neighborhood, neighborhood.flip(0))
    mix_c = torch.where(keep[..., None], centers, centers.flip(0))
    return r, mix_nb, mix_c, torch.where(keep, ids, ids.flip(0))


class MaskTransformer(nn.Module):
    """The reference's ``MaskTransformer``: group embedding, [MASK] replacement, cls token + learned cls position,
    positions before every block, final norm; ``lm_head`` (token ids) and ``cls_head`` (contrastive projection)."""

    def __init__(self, c: PointBERTConfig):
        super().__init__()
        d = c.embed_dim
        self.patch_embed = MiniPointNet(c.encoder_dims, c.pointnet_dims)  # the dVAE's encoder
        self.reduce_dim = nn.Linear(c.encoder_dims, d)
        self.pos_embed = point_mlp(3, 128, d)
        self.encoder = TransformerEncoder(d, c.depth, c.num_heads, mlp_ratio=c.mlp_ratio, drop_path=c.drop_path,
                                          num_prefix_tokens=0, pos_every_block=True)
        self.lm_head = nn.Linear(d, c.num_tokens)
        self.cls_head = nn.Sequential(nn.Linear(d, c.cls_dim), nn.GELU(), nn.Linear(c.cls_dim, c.cls_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        for m in self.modules():  # the reference's init: trunc_normal(0.02) weights, zero biases
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.cls_token, self.cls_pos, self.mask_token):
            nn.init.trunc_normal_(p, std=0.02)

    def tokens(self, neighborhood: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, G, D) group tokens, the masked ones (mask True) replaced by the [MASK] token."""
        tok = self.reduce_dim(self.patch_embed(neighborhood))
        if mask is None:
            return tok
        w = mask[..., None].to(tok.dtype)
        return tok * (1 - w) + self.mask_token.to(tok.dtype) * w

    def forward(self, neighborhood, centers, mask=None) -> torch.Tensor:
        """Normed (B, 1 + G, D): the cls token, then every group (masked ones as [MASK])."""
        tok = self.tokens(neighborhood, mask)
        b = tok.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tok], 1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centers)], 1)
        return self.encoder(x, pos)


class PointBERT(PretrainedMixin, nn.Module):
    method_name = "point-bert"
    pool = "max+mean"
    ddp_find_unused_parameters = True  # the cls projection is unused with --no-mixing, both heads when fine-tuning

    def __init__(self, config: PointBERTConfig):
        super().__init__()
        self.config = c = config
        teacher = self.load_teacher()  # copies the dVAE's grouping and widths into the config first
        self.q = MaskTransformer(c)
        if teacher is not None:  # the reference's _prepare_encoder: the patch embedding starts as the dVAE's
            self.q.patch_embed.load_state_dict(teacher.model.patch_embed.state_dict())
        self.teacher = teacher
        self.k = EMA(self.q, always_eval=False) if (c.mixing or c.moco) else None  # train mode follows, as reference
        self.queue = FeatureQueue(c.queue_size, c.cls_dim)
        self.queue.enqueue(F.normalize(torch.randn(c.queue_size, c.cls_dim), dim=1))  # reference: random, normed
        self.pending_keys = None

    def load_teacher(self) -> FrozenTeacher | None:
        c = self.config
        if c.teacher == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                dvae = PointDVAE(PointDVAEConfig(**{f: getattr(c, f) for f in TEACHER_FIELDS}))
            return FrozenTeacher(dvae, source="random")
        if not c.teacher:
            return None
        path = Path(c.teacher)
        path = path.parent if path.name == WEIGHTS else path
        if not (path / WEIGHTS).exists():
            if c.teacher_sha256:  # a saved student whose teacher is gone: its config already holds the dVAE's fields
                return None
            raise MaeError(f"{c.teacher}: dVAE teacher not found (--teacher)")
        saved = read_config(path)
        if saved.get("method") != "point-dvae":
            raise MaeError(f"{c.teacher}: the teacher must be a point-dvae run, got {saved.get('method')!r} (--teacher)")
        for f in TEACHER_FIELDS:
            setattr(c, f, saved["config"][f])
        return FrozenTeacher.from_config(c)

    def set_progress(self, p: float) -> None:
        """Before every training forward: enqueue the previous step's keys, then the momentum update."""
        if self.pending_keys is not None:
            self.queue.enqueue(self.pending_keys)
            self.pending_keys = None
        if self.k is not None:
            self.k.update(self.q, self.config.momentum)

    points = PointMAE.points
    group = PointMAE.group

    @property
    def encoder(self) -> TransformerEncoder:
        """The student's transformer (fine-tuning sets its drop path through this)."""
        return self.q.encoder

    def targets(self, neighborhood: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """(B, G) the frozen dVAE's token ids (argmax of its DGCNN logits)."""
        if self.teacher is None:
            raise MaeError("point-bert: no dVAE teacher (give --teacher RUN, or train through mae-3d pretrain so "
                           "that the default one is trained)")
        return self.teacher.model.token_ids(neighborhood, centers)

    def mpm(self, neighborhood, centers, ids, generator):
        """(cls projection (B, C), CE on the masked groups, accuracy there, mask) for one cloud batch."""
        c = self.config
        mask = block_mask(centers, c.mask_min, c.mask_max, generator)
        x = self.q(neighborhood, centers, mask)
        logits = self.q.lm_head(x[:, 1:])
        ce = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none").view(ids.shape)
        acc = masked_mean((logits.argmax(-1) == ids).float(), mask.float())
        return self.q.cls_head(x[:, 0]), masked_mean(ce, mask.float()), acc.detach(), mask

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        pts = self.points(batch)
        if self.training and c.augment:
            pts = scale_translate(pts, generator)
        neighborhood, centers = self.group(pts)
        ids = self.targets(neighborhood, centers)
        q, loss, acc, mask = self.mpm(neighborhood, centers, ids, generator)
        metrics = {"mpm": loss.detach(), "mpm_acc": acc, "mask_ratio": mask.float().mean().detach()}
        if self.k is not None:
            with torch.no_grad():
                kmask = block_mask(centers, c.mask_min, c.mask_max, generator)  # the key encoder is masked too
                k = self.k.module.cls_head(self.k(neighborhood, centers, kmask)[:, 0])
            neg = self.queue.features.detach()
            if c.moco:
                moco = info_nce(q, k, c.temperature, negatives=neg)
                loss, metrics["moco"] = loss + moco, moco.detach()
            if c.mixing:
                r, mix_nb, mix_c, mix_ids = point_mix(neighborhood, centers, ids, generator)
                qm, mpm_mix, _, _ = self.mpm(mix_nb, mix_c, mix_ids, generator)
                nce = (r * info_nce(qm, k, c.temperature, negatives=neg, reduction="none")
                       + (1 - r) * info_nce(qm, k.flip(0), c.temperature, negatives=neg, reduction="none")).mean()
                loss = loss + mpm_mix + nce
                metrics.update(mpm_mixed=mpm_mix.detach(), mixing=nce.detach())
            if self.training:
                self.pending_keys = F.normalize(k.float(), dim=1)
        return ModelOutput(loss=loss, pred=None, mask=mask.float(), target=ids, metrics=metrics,
                           extra={"centers": centers})

    # ---- downstream ------------------------------------------------------------------------------------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """Unmasked clouds: ``max+mean`` of the group tokens (as point-mae), ``cls+max`` (the reference's fine-tuning
        feature) or ``cls-proj`` (the cls projection the reference's SVM validation reads)."""
        neighborhood, centers = self.group(self.points(batch))
        x = self.q(neighborhood, centers)
        pool = pool or self.pool
        tok = x[:, 1:]
        if pool == "max+mean":
            return torch.cat([tok.max(1).values, tok.mean(1)], -1)
        if pool in ("max", "mean"):
            return tok.amax(1) if pool == "max" else tok.mean(1)
        if pool == "cls+max":
            return torch.cat([x[:, 0], tok.max(1).values], -1)
        if pool == "cls-proj":
            return self.q.cls_head(x[:, 0])
        raise MaeError(f"unknown pool {pool!r} for point-bert (max+mean, max, mean, cls+max, cls-proj)")

    def feature_dim(self, pool: str | None = None) -> int:
        pool = pool or self.pool
        if pool in ("max", "mean"):
            return self.config.embed_dim
        return self.config.cls_dim if pool == "cls-proj" else 2 * self.config.embed_dim

    def num_layers(self) -> int:
        return self.config.depth + 1

    def layer_id(self, name: str) -> int:
        if name.startswith("q.encoder.blocks."):
            return int(name.split(".")[3]) + 1
        if name.startswith(("q.encoder.norm", "q.lm_head", "q.cls_head", "k.")):
            return self.num_layers()
        return 0


def adapt_point_bert(model_cfg: PointBERTConfig, data_cfg, dataset) -> PointBERTConfig:
    """Fewer groups for small clouds (as point-mae); without ``--teacher``, the default dVAE for this data (trained
    once with this grouping and cached)."""
    from .. import adapt_points

    cfg = adapt_points(model_cfg, data_cfg, dataset)
    if not cfg.teacher:
        recipe = {f: getattr(cfg, f) for f in TEACHER_FIELDS}
        recipe.update(epochs=cfg.teacher_epochs, batch_size=min(32, len(dataset)) if dataset is not None else 32)
        path = cached_pretrain("point-dvae", data_cfg, recipe, prefix="dvae", what="dVAE tokenizer")
        cfg = dataclasses.replace(cfg, teacher=str(path), teacher_sha256="")
    return cfg
