"""Point-CMAE (Ren et al., "Bringing Contrastive Learning to Point Cloud Masked Autoencoders", ACCV 2024).

Point-MAE with two views of the same cloud and the same groups: two independent random masks, one shared encoder
run on each view's visible groups, two decoders (one per view), and, as the reference (``Amazingren/Point-CMAE``,
``models/Point_CMAE.py`` and ``tools/runner_pretrain.py``):

    loss = 1000 * (Chamfer(view 1) + Chamfer(view 2)) + contrastive

The contrastive term takes the raw decoder features (last block, before the decoder's final norm) of both views in
group order, L2-normalises them, and averages ``1 - cos(f1_i, f2_j)`` over every token i masked in *both* views and
every token j of view 2 (the reference's ``bmm`` of the two normalised feature sets under the doubly-masked row
mask). No projector, no predictor, no stop-gradient. ``contrastive: simsiam`` keeps the earlier variant of this
package (projector + predictor + stop-gradient on the diagonal pairs, ``recon_weight 1``, ``contrastive_weight
0.1``) for comparison.
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
    contrastive: str = field("reference", "reference: 1 - cos of the raw decoder features, doubly-masked tokens of "
                                          "view 1 against every token of view 2; simsiam: the earlier projector + "
                                          "predictor + stop-gradient variant on the diagonal pairs",
                             choices=["reference", "simsiam"])
    recon_weight: float = field(1000.0, "weight of the summed Chamfer distances of the two views (reference: 1000)",
                                ge=0)
    contrastive_weight: float = field(1.0, "weight w of the contrastive term (reference: 1)", ge=0)
    proj_dim: int = field(128, "contrastive simsiam only: width of the projector / predictor")


class TwinDecoders(nn.Module):
    """The two decoders (and, for ``contrastive: simsiam``, the projector / predictor), frozen when fine-tuning."""

    def __init__(self, c: PointCMAEConfig):
        super().__init__()
        dims = (c.embed_dim, c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads, c.group_size, c.mlp_ratio)
        self.a = PointDecoder(*dims)
        self.b = PointDecoder(*dims)
        if c.contrastive == "simsiam":
            self.projector = point_mlp(c.decoder_embed_dim, c.decoder_embed_dim, c.proj_dim)
            self.predictor = point_mlp(c.proj_dim, c.proj_dim, c.proj_dim)

    def forward(self, latent, centers, ids_restore):  # view 1 only (pictures)
        return self.a(latent, centers, ids_restore)


def contrastive_term(feat1: torch.Tensor, feat2: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor,
                     eps: float = 1e-8) -> torch.Tensor:
    """The reference's cross-view term: mean of ``1 - cos(f1_i, f2_j) + eps`` over every token i masked in both views
    and every token j of view 2.

    ``feat*`` (B, G, D) raw decoder features in group order; ``mask*`` (B, G), 1 = masked. Returns a scalar in
    [0, 2] (0 when no token is masked in both views). Gradients reach both views (no stop-gradient)."""
    both = (mask1 * mask2).to(feat1.dtype)  # (B, G) rows of the (B, G, G) similarity matrix that count
    cos = torch.bmm(F.normalize(feat1, dim=-1), F.normalize(feat2, dim=-1).transpose(1, 2))
    per_row = (1 - cos + eps).sum(-1)  # (B, G): summed over every token j of view 2
    return (per_row * both).sum() / (both.sum() * feat2.shape[1]).clamp_min(1)


def simsiam_term(feat1: torch.Tensor, feat2: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor,
                 projector: nn.Module, predictor: nn.Module) -> torch.Tensor:
    """The earlier variant (``contrastive: simsiam``): symmetric negative cosine between token i of view 1 and token
    i of view 2 over the tokens masked in both, with a projector, a predictor and stop-gradient on the target.

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
        tokens = self.patch_embed(neighborhood)  # one embedding of all groups shared by both views, as the reference
        f1, pred1 = self.decoder.a(self.encode_visible(neighborhood, centers, mask1, tokens), centers,
                                   mask1.ids_restore)
        f2, pred2 = self.decoder.b(self.encode_visible(neighborhood, centers, mask2, tokens), centers,
                                   mask2.ids_restore)
        rec1 = self.reconstruction_loss(pred1, neighborhood, mask1)
        rec2 = self.reconstruction_loss(pred2, neighborhood, mask2)
        c = self.config
        if c.contrastive == "simsiam":
            f1, f2 = self.decoder.a.blocks.norm(f1), self.decoder.b.blocks.norm(f2)  # normed, as it was
            con = simsiam_term(f1, f2, mask1.mask, mask2.mask, self.decoder.projector, self.decoder.predictor)
        else:
            con = contrastive_term(f1, f2, mask1.mask, mask2.mask)
        loss = c.recon_weight * (rec1 + rec2) + c.contrastive_weight * con
        both = float((mask1.mask * mask2.mask).sum(1).mean())
        return ModelOutput(loss=loss, pred=pred1, mask=mask1.mask, target=neighborhood.flatten(2),
                           metrics={"chamfer": float((rec1 + rec2).detach()) / 2, "contrastive": float(con.detach()),
                                    "doubly_masked": both},
                           extra={"centers": centers, "mask2": mask2.mask, "pred2": pred2})
