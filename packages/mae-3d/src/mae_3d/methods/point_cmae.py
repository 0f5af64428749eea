"""Point-CMAE (Ren et al., "Bringing Contrastive Learning to Point Cloud Masked Autoencoders", ACCV 2024).

Point-MAE with two views of the same cloud and the same groups: two independent random masks, one shared encoder
run on each view's visible groups, two decoders (one per view), and

    loss = Chamfer(view 1) + Chamfer(view 2) + w * contrastive(decoder features of view 1, view 2)

The contrastive term pulls together the decoder features of the *same* group token i in both views, and only for
tokens that are masked in both views (the diagonal only: token i with token i; no other pairs). It is a symmetric
negative-cosine loss with a projector, a predictor and stop-gradient on the target branch (SimSiam style), averaged
over the doubly-masked tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.losses import masked_mean
from mae_core.models.mae import ModelOutput

from .point_mae import PointDecoder, PointMAE, PointMAEConfig, point_mlp, scale_translate


@dataclass
class PointCMAEConfig(PointMAEConfig):
    contrastive_weight: float = field(0.1, "weight w of the contrastive term")
    proj_dim: int = field(128, "width of the projector / predictor of the contrastive term")


class TwinDecoders(nn.Module):
    """The two decoders and the contrastive projector / predictor (dropped together when fine-tuning)."""

    def __init__(self, c: PointCMAEConfig):
        super().__init__()
        dims = (c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads, c.group_size, c.mlp_ratio)
        self.a = PointDecoder(*dims)
        self.b = PointDecoder(*dims)
        self.projector = point_mlp(c.decoder_embed_dim, c.decoder_embed_dim, c.proj_dim)
        self.predictor = point_mlp(c.proj_dim, c.proj_dim, c.proj_dim)

    def forward(self, latent, centers, ids_restore):  # view 1 only (pictures)
        return self.a(latent, centers, ids_restore)


def contrastive_term(feat1: torch.Tensor, feat2: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor,
                     projector: nn.Module, predictor: nn.Module) -> torch.Tensor:
    """Symmetric negative cosine between token i of view 1 and token i of view 2, over the tokens masked in both.

    ``feat*`` (B, G, D) decoder features in group order; ``mask*`` (B, G), 1 = masked. Returns a scalar in [-1, 1]
    (0 when no token is masked in both views)."""
    both = mask1 * mask2
    z1, z2 = projector(feat1), projector(feat2)
    p1, p2 = predictor(z1), predictor(z2)
    per_token = -(F.cosine_similarity(p1, z2.detach(), dim=-1) + F.cosine_similarity(p2, z1.detach(), dim=-1)) / 2
    return masked_mean(per_token, both)


class PointCMAE(PointMAE):
    method_name = "point-cmae"

    def build_decoder(self) -> None:
        self.decoder = TwinDecoders(self.config)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        pts = self.points(batch)
        if self.training and self.config.augment:
            pts = scale_translate(pts, generator)
        neighborhood, centers = self.group(pts)
        mask1 = self.mask_groups(centers, generator, batch)
        mask2 = self.mask_groups(centers, generator)
        f1, pred1 = self.decoder.a(self.encode_visible(neighborhood, centers, mask1), centers, mask1.ids_restore)
        f2, pred2 = self.decoder.b(self.encode_visible(neighborhood, centers, mask2), centers, mask2.ids_restore)
        rec1 = self.reconstruction_loss(pred1, neighborhood, mask1)
        rec2 = self.reconstruction_loss(pred2, neighborhood, mask2)
        con = contrastive_term(f1, f2, mask1.mask, mask2.mask, self.decoder.projector, self.decoder.predictor)
        loss = rec1 + rec2 + self.config.contrastive_weight * con
        both = float((mask1.mask * mask2.mask).sum(1).mean())
        return ModelOutput(loss=loss, pred=pred1, mask=mask1.mask, target=neighborhood.flatten(2),
                           metrics={"chamfer": float((rec1 + rec2).detach()) / 2, "contrastive": float(con.detach()),
                                    "doubly_masked": both},
                           extra={"centers": centers, "mask2": mask2.mask, "pred2": pred2})
