"""DMAE (Bai et al., Masked Autoencoders Enable Efficient Knowledge Distillers, CVPR 2023; UCSC-VLAA/DMAE,
``models_mae_distill.py`` / ``engine_distill.py``).

The student is an MAE (pixel loss on the masked patches, no per-patch normalisation: the reference's
``--norm_pix_loss`` is off). The frozen MIM teacher sees the same visible tokens (+ cls) as the student; the raw
output of student block ``student_block``, through a linear projection to the teacher's width, matches the raw
output of teacher block ``teacher_block`` over every token (cls + visible): L1 between the L2-normalised features,
weight 1, added to the pixel loss. The reference pairs student block 8 of 12 (ViT-B) with teacher block 17 of 24
(ViT-L), both at 3/4 depth; the defaults here are block 2 of the 4-block student and block 3 of the 6-block T-MIM.

The teacher runs only blocks 0..teacher_block (the reference runs the whole teacher and its decoder, unused): the
paper's observation that the first blocks suffice, logged per step as ``teacher_blocks`` (blocks run) and
``teacher_block_fraction`` (their share of the teacher's encoder FLOPs, every block costing the same).
Deviation: the reference draws the mask in the teacher; here the student draws it (same distribution).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..config import field
from ..errors import ConfigError
from ..layers.blocks import init_weights
from ..models.mae import ModelOutput
from ..registry import MethodSpec, register_method
from .common import DistillConfig, DistillStudent, adapt_distill, normalized_l1, teacher_blocks


@dataclass
class DMAEConfig(DistillConfig):
    norm_pix_loss: bool = field(False, "normalise each target patch by its own mean and variance (DMAE: off)")
    student_block: int = field(2, "student block whose output is distilled (0-based; the reference: 8 of 12)",
                               ge=0)
    teacher_block: int = field(3, "teacher block it matches (0-based; the reference: 17 of 24); the teacher runs "
                                  "only up to it", ge=0)
    distill_weight: float = field(1.0, "weight of the feature term beside the pixel loss", ge=0)


class DMAE(DistillStudent):
    def __init__(self, config: DMAEConfig):
        super().__init__(config)
        self.init_teacher_fields()
        c = self.config
        if c.student_block >= c.depth:
            raise ConfigError(f"model.student_block: {c.student_block} is out of range for {c.depth} blocks")
        if c.teacher_block >= c.teacher_depth:
            raise ConfigError(f"model.teacher_block: {c.teacher_block} is out of range for a {c.teacher_depth}-block "
                              "teacher")
        self.distill_head = nn.Linear(c.embed_dim, c.teacher_embed_dim)
        self.distill_head.apply(init_weights)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        tokens, pos, mask = self.visible(batch, generator)
        latent, (feat,) = self.encode_visible(tokens, pos, mask, taps=[c.student_block])
        pred = self.decoder(latent, mask.ids_restore)
        target = self.prepare_target(self.target(batch))
        pixel = self.forward_loss(pred, target, mask.mask)
        t_feat = teacher_blocks(self.teacher, batch, mask.ids_keep, c.teacher_block)
        distill = normalized_l1(self.distill_head(feat), t_feat)
        blocks = c.teacher_block + 1
        metrics = {"loss_pixel": pixel.detach(), f"loss_align_s{c.student_block}_t{c.teacher_block}": distill.detach(),
                   "teacher_blocks": blocks, "teacher_block_fraction": blocks / self.teacher.encoder.depth}
        return ModelOutput(loss=pixel + c.distill_weight * distill, pred=pred, mask=mask.mask, target=target,
                           metrics=metrics)

    def layer_id(self, name: str) -> int:
        return self.encoder.depth + 1 if name.startswith("distill_head") else super().layer_id(name)


def _register():
    from ..image import visualize_images

    return register_method(MethodSpec(
        name="dmae", domain="core", config_cls=DMAEConfig, model_cls=DMAE,
        description="DMAE: MAE + an intermediate block distilled from a frozen MIM teacher on the visible tokens "
                    "(L1 of L2-normalised features); the teacher runs only up to the matched block",
        default_dataset="shapes",
        paper="Bai et al., Masked Autoencoders Enable Efficient Knowledge Distillers, CVPR 2023",
        visualize=visualize_images, adapt=adapt_distill,
        train_defaults={"epochs": 4, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 1},
        tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 16,
                        "decoder_depth": 1, "decoder_num_heads": 2, "teacher": "random", "teacher_embed_dim": 32,
                        "teacher_depth": 2, "teacher_num_heads": 2, "student_block": 0, "teacher_block": 0},
              "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
    ))


METHOD = _register()
