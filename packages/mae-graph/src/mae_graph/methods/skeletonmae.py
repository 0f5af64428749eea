"""SkeletonMAE (Yan et al., ICCV 2023): a GraphMAE-style masked autoencoder over the skeleton graph of every frame,
with masks drawn from the human body's topology, and a spatial-temporal model for action recognition.

Pretraining (``forward``): a sample is a sequence ``(C, T, V)``. Per sample, ``mask_ratio`` of the V joints are
masked in every frame: with probability ``part_prob`` whole body parts (head, torso, arms, legs; the part reached
last is cut at random joints) else uniformly random joints. Masked joints get the learnable [MASK] vector; a GIN
encoder runs over the joint graph of every frame; ``encoder_to_decoder`` (bias-free) + re-mask (masked rows set to
zero) + a one-layer GIN decoder reconstruct the joint coordinates; loss MSE (default) or SCE on masked joints.

Downstream (``encode(batch, pool="mean")``, used by ``finetune``): the pretrained spatial encoder embeds every
frame; the joint features of a frame are flattened and projected (``frame_proj``), a transformer over frames
(mae-core ``Block`` + 1-D sin-cos positions) is the temporal module, and the frames are averaged.
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
    mask_ratio: float = field(0.4, "fraction of joints masked")
    part_prob: float = field(0.5, "share of samples masked by whole body parts (the rest: random joints)")
    loss_fn: str = field("mse", "mse or sce (scaled cosine error)", choices=["mse", "sce"])
    alpha_l: float = field(2.0, "SCE exponent")
    temporal_dim: int = field(128, "width of the temporal module")
    temporal_depth: int = field(2, "transformer blocks over frames")
    temporal_heads: int = field(4, "attention heads of the temporal module")


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
        self.enc_mask_token = nn.Parameter(torch.zeros(1, 1, c.in_channels))
        self.encoder = GIN(c.in_channels, c.num_hidden, c.num_hidden, c.num_layers, c.activation, c.norm, c.in_drop,
                           last_activation=True, dense=True)
        self.encoder_to_decoder = nn.Linear(c.num_hidden, c.num_hidden, bias=False)
        self.decoder = GIN(c.num_hidden, c.num_hidden, c.in_channels, 1, c.activation, c.norm, c.in_drop,
                           last_activation=False, dense=True)
        # spatial-temporal representation learning part (downstream)
        self.frame_proj = nn.Linear(self.num_joints * c.num_hidden, c.temporal_dim)
        self.register_buffer("time_pos", sincos_1d(c.temporal_dim, torch.arange(c.frames).float())[None].float(),
                             persistent=False)
        self.temporal = nn.ModuleList([Block(c.temporal_dim, c.temporal_heads) for _ in range(c.temporal_depth)])
        self.temporal_norm = nn.LayerNorm(c.temporal_dim)

    # ---- masking ----------------------------------------------------------------------------------------------------
    def make_mask(self, batch_size: int, generator=None, device="cpu"):
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
        return self.encoder(self._frames(x.float()), self.adj).reshape(b, t, v, -1)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        x = batch["skeleton"].float()
        b, ch, t, v = x.shape
        info, by_part = self.make_mask(b, generator, x.device)
        mask = info.mask.bool()  # (B, V)
        mt = mask[:, None, :, None].expand(b, t, v, 1).reshape(b * t, v, 1)
        frames = self._frames(x)
        use = torch.where(mt, self.enc_mask_token.to(frames.dtype).expand_as(frames), frames)
        enc = self.encoder(use, self.adj)
        rep = self.encoder_to_decoder(enc).masked_fill(mt, 0.0)  # re-mask
        rec = self.decoder(rep, self.adj)  # (B*T, V, C)
        sel = mt[..., 0]
        if self.config.loss_fn == "sce":
            loss = sce_loss(rec[sel], frames[sel], self.config.alpha_l)
        else:
            loss = F.mse_loss(rec[sel], frames[sel])
        pred = rec.reshape(b, t, v, ch).permute(0, 3, 1, 2)
        return ModelOutput(loss=loss, pred=pred, mask=info.mask, target=x,
                           metrics={"part_masked_share": float(by_part.float().mean())})

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        h = self.spatial(batch["skeleton"])  # (B, T, V, D)
        if pool in (None, "spatial"):
            return h.mean(dim=(1, 2))
        b, t = h.shape[:2]
        z = self.frame_proj(h.reshape(b, t, -1))
        z = z + (self.time_pos[:, :t] if t <= self.time_pos.shape[1] else
                 sincos_1d(z.shape[-1], torch.arange(t).float())[None].float().to(z.device))
        for blk in self.temporal:
            z = blk(z)
        return self.temporal_norm(z).mean(1)

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.num_hidden if pool in (None, "spatial") else self.config.temporal_dim

    def num_layers(self) -> int:
        return self.config.num_layers + self.config.temporal_depth + 2

    def layer_id(self, name: str) -> int:
        if name.startswith("enc_mask_token"):
            return 0
        if name.startswith("encoder.layers.") or name.startswith("encoder.post."):
            return int(name.split(".")[2]) + 1
        if name.startswith("frame_proj"):
            return self.config.num_layers + 1
        if name.startswith("temporal."):
            return self.config.num_layers + 2 + int(name.split(".")[1])
        return self.num_layers()
