"""SkeletonMAE (Yan et al., ICCV 2023): a GraphMAE-style masked autoencoder over the skeleton graph of every frame,
with masks drawn from the human body's topology, and the paper's spatial-temporal representation learning (STRL)
module for action recognition. The authors' code is not released (HongYan1123/SkeletonMAE holds the README only):
this follows the paper's text.

Pretraining (``forward``): a sample is a sequence ``(C, T, V)``. Joint coordinates are first projected to
``embed_dim`` (64) dimensions (``joint_embed``); [MASK] is a learnable vector in that space. Masking hides whole body
regions: per sample, ``k ~ U{1..max_mask_parts}`` of the layout's six parts (head, torso, arms, legs) are drawn and
all their joints masked, in every frame (``mask_strategy=parts``; ``mixed`` is the earlier mix of parts cut to
``mask_ratio`` and random joints). A GIN encoder runs over the joint graph of every frame; ``encoder_to_decoder``
(bias-free) + re-mask (masked rows set to zero) + a one-layer GIN decoder reconstruct the joint coordinates; the loss
is the scaled cosine error ``mean((1 - cos) ** beta)``, beta = ``alpha_l`` = 2, over the masked joints (or MSE).

Downstream (``encode(batch, pool="mean")``, used by ``finetune``), ``head=strl``: every person of a sample goes
through the same (shared) pretrained encoder; after each of its ``num_layers`` (3) GIN layers a multi-scale temporal
block runs over the frames (branches: temporal convolutions of kernel 3 with dilations 1 and 2, a temporal
max-pooling branch and a 1 x 1 branch, concatenated, plus a residual); features are averaged over frames, joints
and persons. ``head=transformer`` keeps the earlier frame projection + transformer over frames.
``pool="spatial"`` (the probes' default) averages the frozen spatial features over joints and frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.layers.blocks import Block
from mae_core.layers.pos_embed import sincos_1d
from mae_core.masking import uniform_noise, mask_from_scores, num_keep
from mae_core.contract import PretrainedMixin
from mae_core.models import ModelOutput

from ..data.skeleton import get_layout
from ..gnn import GIN, sce_loss


@dataclass
class SkeletonMAEConfig:
    layout: str = field("ntu25", "joint layout (set from the data): ntu25, coco17 or msr20",
                        choices=["ntu25", "coco17", "msr20"])
    in_channels: int = field(3, "coordinates per joint")
    frames: int = field(32, "frames per sequence (set from the data)")
    num_hidden: int = field(64, "GIN width")
    num_layers: int = field(3, "GIN encoder layers (the decoder has one)")
    activation: str = field("prelu", "activation", choices=["prelu", "relu", "elu", "gelu"])
    norm: str | None = field("batchnorm", "normalisation inside the GIN: none, batchnorm or layernorm")
    in_drop: float = field(0.0, "dropout on every GIN layer's input")
    embed_dim: int = field(64, "joint coordinates are projected to this width first, [MASK] lives there (0 = the "
                               "raw coordinates, the earlier model)", ge=0)
    mask_strategy: str = field("parts", "parts: 1..max_mask_parts whole body parts per sample (the paper); mixed: "
                                    "part_prob of the samples by parts cut to mask_ratio, the rest random joints",
                           choices=["parts", "mixed"])
    max_mask_parts: int = field(2, "parts mode: at most this many of the six body parts masked per sample", ge=1)
    mask_ratio: float = field(0.4, "mixed mode: fraction of joints masked")
    part_prob: float = field(0.5, "mixed mode: share of samples masked by whole body parts (the rest: random joints)")
    loss_fn: str = field("sce", "sce (scaled cosine error, the paper) or mse", choices=["mse", "sce"])
    alpha_l: float = field(2.0, "SCE exponent beta (the paper: 2)")
    head: str = field("strl", "fine-tuning model: strl (shared encoder per person, a multi-scale temporal block "
                              "after each GIN layer) or transformer (frame projection + transformer, the earlier one)",
                      choices=["strl", "transformer"])
    temporal_dim: int = field(128, "transformer head: width")
    temporal_depth: int = field(2, "transformer head: blocks over frames")
    temporal_heads: int = field(4, "transformer head: attention heads")


class SkeletonMAE(PretrainedMixin, nn.Module):
    # frame_proj / temporal are the fine-tuning path: pretraining leaves them without gradients (DDP must know)
    ddp_find_unused_parameters = True

    def __init__(self, config: SkeletonMAEConfig):
        super().__init__()
        self.config = c = config
        lay = get_layout(c.layout)
        self.num_joints = lay.num_joints
        self.register_buffer("adj", lay.adjacency(), persistent=False)
        self.register_buffer("part_of", lay.part_index(), persistent=False)
        self.num_parts = len(lay.parts)
        d_in = c.embed_dim or c.in_channels
        self.joint_embed = nn.Linear(c.in_channels, c.embed_dim) if c.embed_dim else nn.Identity()
        self.enc_mask_token = nn.Parameter(torch.zeros(1, 1, d_in))
        self.encoder = GIN(d_in, c.num_hidden, c.num_hidden, c.num_layers, c.activation, c.norm, c.in_drop,
                           last_activation=True, dense=True)
        self.encoder_to_decoder = nn.Linear(c.num_hidden, c.num_hidden, bias=False)
        self.decoder = GIN(c.num_hidden, c.num_hidden, c.in_channels, 1, c.activation, c.norm, c.in_drop,
                           last_activation=False, dense=True)
        # spatial-temporal representation learning part (downstream)
        if c.head == "strl":
            self.mstp = nn.ModuleList([MultiScaleTemporal(c.num_hidden) for _ in range(c.num_layers)])
        else:
            self.frame_proj = nn.Linear(self.num_joints * c.num_hidden, c.temporal_dim)
            self.register_buffer("time_pos", sincos_1d(c.temporal_dim, torch.arange(c.frames).float())[None].float(),
                                 persistent=False)
            self.temporal = nn.ModuleList([Block(c.temporal_dim, c.temporal_heads) for _ in range(c.temporal_depth)])
            self.temporal_norm = nn.LayerNorm(c.temporal_dim)

    # ---- masking ----------------------------------------------------------------------------------------------------
    def make_mask(self, batch_size: int, generator=None, device="cpu"):
        """``(mask (B, V) float, masked by parts (B,) bool)``. ``parts`` mode: ``k ~ U{1..max_mask_parts}`` parts
        per sample (a uniform draw), the k parts of highest random rank masked whole."""
        c = self.config
        if c.mask_strategy == "parts":
            kmax = min(c.max_mask_parts, self.num_parts - 1)  # never every part: something must stay visible
            k = (uniform_noise((batch_size, 1), generator, device) * kmax).long() + 1
            part_rank = uniform_noise((batch_size, self.num_parts), generator, device).argsort(1).argsort(1)
            mask = part_rank[:, self.part_of.to(device)] < k  # (B, V): joints of the k first-ranked parts
            return mask.float(), torch.ones(batch_size, dtype=torch.bool, device=device)
        info, by_part = self.mixed_mask(batch_size, generator, device)
        return info.mask, by_part

    def mixed_mask(self, batch_size: int, generator=None, device="cpu"):
        """(B, V) MaskInfo: body-part scores (a random rank per part + jitter inside it) for ``part_prob`` of the
        samples, uniform scores for the rest; the highest scores are masked (``mask_from_scores``)."""
        v, c = self.num_joints, self.config
        part_rank = uniform_noise((batch_size, self.num_parts), generator, device).argsort(1).argsort(1).float()
        jitter = uniform_noise((batch_size, v), generator, device)
        part_scores = part_rank[:, self.part_of.to(device)] + 0.5 * jitter
        use_part = uniform_noise((batch_size, 1), generator, device) < c.part_prob
        scores = torch.where(use_part, part_scores, uniform_noise((batch_size, v), generator, device))
        return mask_from_scores(scores, num_keep(v, c.mask_ratio)), use_part[:, 0]

    # ---- pieces -----------------------------------------------------------------------------------------------------
    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, V) -> (B * T, V, C)."""
        b, ch, t, v = x.shape
        return x.permute(0, 2, 3, 1).reshape(b * t, v, ch)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, V) -> per-frame joint features (B, T, V, D)."""
        b, _, t, v = x.shape
        return self.encoder(self.joint_embed(self._frames(x.float())), self.adj).reshape(b, t, v, -1)

    def strl(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V) -> (N, D): each GIN layer of the encoder (per frame), then its multi-scale temporal block."""
        n, _, t, v = x.shape
        h = self.joint_embed(self._frames(x.float()))  # (N T, V, E)
        enc = self.encoder
        for conv, post, mstp in zip(enc.layers, enc.post, self.mstp):
            h = post(conv(enc.drop(h), self.adj))  # (N T, V, D)
            z = mstp(h.reshape(n, t, v, -1).permute(0, 3, 1, 2))  # (N, D, T, V)
            h = z.permute(0, 2, 3, 1).reshape(n * t, v, -1)
        return h.reshape(n, t * v, -1).mean(1)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        x = batch["skeleton"].float()
        b, ch, t, v = x.shape
        mask_f, by_part = self.make_mask(b, generator, x.device)
        mask = mask_f.bool()  # (B, V)
        mt = mask[:, None, :, None].expand(b, t, v, 1).reshape(b * t, v, 1)
        frames = self._frames(x)
        emb = self.joint_embed(frames)
        use = torch.where(mt, self.enc_mask_token.to(emb.dtype).expand_as(emb), emb)
        enc = self.encoder(use, self.adj)
        rep = self.encoder_to_decoder(enc).masked_fill(mt, 0.0)  # re-mask
        rec = self.decoder(rep, self.adj)  # (B*T, V, C)
        sel = mt[..., 0]
        if self.config.loss_fn == "sce":
            loss = sce_loss(rec[sel], frames[sel], self.config.alpha_l)
        else:
            loss = F.mse_loss(rec[sel], frames[sel])
        pred = rec.reshape(b, t, v, ch).permute(0, 3, 1, 2)
        return ModelOutput(loss=loss, pred=pred, mask=mask_f, target=x,
                           metrics={"part_masked_share": float(by_part.float().mean()),
                                    "masked_joints": float(mask_f.sum(1).mean())})

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        x = batch["skeleton"]
        persons = x.shape[4] if x.dim() == 5 else 1  # (B, C, T, V, M): every person through the shared encoder
        if x.dim() == 5:
            x = x.permute(0, 4, 1, 2, 3).reshape(-1, *x.shape[1:4])
        if pool not in (None, "spatial") and self.config.head == "strl":
            return self.strl(x).reshape(-1, persons, self.config.num_hidden).mean(1)
        h = self.spatial(x)  # (B M, T, V, D)
        if pool in (None, "spatial"):
            return h.mean(dim=(1, 2)).reshape(-1, persons, h.shape[-1]).mean(1)
        b, t = h.shape[:2]
        z = self.frame_proj(h.reshape(b, t, -1))
        z = z + (self.time_pos[:, :t] if t <= self.time_pos.shape[1] else
                 sincos_1d(z.shape[-1], torch.arange(t).float())[None].float().to(z.device))
        for blk in self.temporal:
            z = blk(z)
        return self.temporal_norm(z).mean(1).reshape(-1, persons, z.shape[-1]).mean(1)

    def feature_dim(self, pool: str | None = None) -> int:
        c = self.config
        return c.num_hidden if pool in (None, "spatial") or c.head == "strl" else c.temporal_dim

    def num_layers(self) -> int:
        c = self.config
        return c.num_layers + (0 if c.head == "strl" else c.temporal_depth + 1) + 2

    def layer_id(self, name: str) -> int:
        if name.startswith("enc_mask_token") or name.startswith("joint_embed"):
            return 0
        if name.startswith("encoder.layers.") or name.startswith("encoder.post.") or name.startswith("mstp."):
            return int(name.split(".")[2 if name.startswith("encoder") else 1]) + 1
        if name.startswith("frame_proj"):
            return self.config.num_layers + 1
        if name.startswith("temporal."):
            return self.config.num_layers + 2 + int(name.split(".")[1])
        return self.num_layers()


class MultiScaleTemporal(nn.Module):
    """A multi-scale temporal block over ``(N, D, T, V)``: four branches of ``D / 4`` channels (1 x 1 conv + BN +
    ReLU, then a kernel-3 temporal conv with dilation 1 / dilation 2, or a kernel-3 temporal max-pooling, or nothing)
    concatenated, BN, plus the input, ReLU. The temporal length is kept."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"the multi-scale temporal block splits {dim} channels into 4 branches: give a multiple "
                             "of 4 (--num-hidden)")
        b = dim // 4

        def stem():
            return [nn.Conv2d(dim, b, 1), nn.BatchNorm2d(b), nn.ReLU()]

        self.branches = nn.ModuleList([
            nn.Sequential(*stem(), nn.Conv2d(b, b, (3, 1), padding=(1, 0), dilation=(1, 1))),
            nn.Sequential(*stem(), nn.Conv2d(b, b, (3, 1), padding=(2, 0), dilation=(2, 1))),
            nn.Sequential(*stem(), nn.MaxPool2d((3, 1), stride=1, padding=(1, 0))),
            nn.Conv2d(dim, b, 1)])
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(torch.cat([br(x) for br in self.branches], 1)) + x)
