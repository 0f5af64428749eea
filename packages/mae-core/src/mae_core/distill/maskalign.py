"""MaskAlign (Xue et al., Stare at What You See: Masked Image Modeling without Reconstruction, CVPR 2023;
OpenDriveLab/maskalign, ``models_pretrain.py``, README recipe: ``--mask_type attention --mask_ratio 0.7
--target_norm whiten --loss_type smoothl1 --loss_weights top5 --fusion_type linear --head_type linear
--drop_path 0.1``).

No decoder: the student sees only its visible tokens (+ cls) and aligns them with the teacher's features of the same
positions, the teacher having seen the intact image.

- Masking: the visible 30 % are drawn without replacement in proportion to the teacher's last-block cls attention
  (mean over heads); ``--no-attention-masking`` draws them uniformly.
- Targets: the raw outputs of the last K teacher blocks (K = ``num_targets``, 5 in the reference), layer-normalised
  without affine, at cls + the visible positions.
- Dynamic Alignment: a learnable (student depth x student depth) matrix, initialised to identity + 0.01, mixes the
  student's block outputs; mixed output i goes through its own linear head. ``--no-dynamic-alignment`` feeds the
  block outputs to the heads directly (the reference's ``fusion_type=simple``).
- Loss: the sum over the K targets of 1/K x 2 x smooth-L1 (beta 1). Each target's smooth-L1 is logged as
  ``loss_t<block>``.

The reference pairs student block i with teacher block i (ViT-B student, ViT-B CLIP / DINO teacher, same depth);
here depths may differ, so the last K mixed student outputs meet the last K teacher blocks, with K at most the
smaller depth (the 4-block default student against the 6-block T-MIM: K = 4, teacher blocks 2-5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import field
from ..errors import MaeError
from ..layers.blocks import init_weights
from ..masking import random_masking
from ..models.mae import ModelOutput
from ..registry import MethodSpec, register_method
from .common import DistillConfig, DistillStudent, adapt_distill, attention_masking, whiten, with_cls_at


@dataclass
class MaskAlignConfig(DistillConfig):
    mask_ratio: float = field(0.7, "fraction of patches hidden from the student (MaskAlign: 0.7)", ge=0, lt=1)
    drop_path: float = field(0.1, "stochastic depth of the student (MaskAlign: 0.1)", ge=0, lt=1)
    attention_masking: bool = field(True, "draw the visible set in proportion to the teacher's cls attention")
    dynamic_alignment: bool = field(True, "mix the student's block outputs with a learned matrix (eye + 0.01)")
    num_targets: int = field(5, "teacher blocks aligned (the last ones; at most the smaller depth)", ge=1)


class MaskAlign(DistillStudent):
    mask_schedule_refused = "its visible set is drawn from the teacher's attention at the config's ratio"

    def __init__(self, config: MaskAlignConfig):
        super().__init__(config)
        del self.decoder  # no reconstruction
        self.init_teacher_fields()
        c = self.config
        self.num_targets = min(c.num_targets, c.depth, c.teacher_depth)
        if c.dynamic_alignment:
            self.align = nn.Parameter(torch.eye(c.depth) + 0.01)
        self.distill_heads = nn.ModuleList([nn.Linear(c.embed_dim, c.teacher_embed_dim)
                                            for _ in range(self.num_targets)])
        self.distill_heads.apply(init_weights)

    def target_blocks(self) -> list[int]:
        t = self.config.teacher_depth
        return list(range(t - self.num_targets, t))

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        tokens, pos = self.tokenize(batch)
        guided = c.attention_masking and batch.get("mask") is None
        t = self.teacher(batch, layers=self.target_blocks(), attention=[-1] if guided else None)
        if batch.get("mask") is not None:
            mask = self.make_mask(batch, tokens)
        elif guided:
            if not t.cls_attention:
                raise MaeError(f"{c.teacher}: attention masking needs a teacher with a cls token")
            mask = attention_masking(t.cls_attention[0].float().mean(1), c.mask_ratio, generator)
        else:
            mask = random_masking(tokens.shape[0], tokens.shape[1], c.mask_ratio, generator, tokens.device)
        _, hidden = self.encode_visible(tokens, pos, mask, return_hidden=True)
        student = torch.stack(hidden)  # (depth, B, 1 + visible, D)
        if c.dynamic_alignment:
            student = torch.einsum("ab,bnld->anld", self.align, student)
        student = student[c.depth - self.num_targets:]
        loss, metrics = 0.0, {}
        p = self.encoder.num_prefix_tokens
        for k, (block, head) in enumerate(zip(self.target_blocks(), self.distill_heads)):
            target = with_cls_at(whiten(t.features[k]), mask.ids_keep, p)
            term = F.smooth_l1_loss(head(student[k]), target)
            metrics[f"loss_t{block}"] = term.detach()
            loss = loss + 2.0 * term / self.num_targets
        return ModelOutput(loss=loss, mask=mask.mask, metrics=metrics)

    def layer_id(self, name: str) -> int:
        if name.startswith("distill_heads") or name == "align":
            return self.encoder.depth + 1
        return super().layer_id(name)


def _register():
    return register_method(MethodSpec(
        name="maskalign", domain="core", config_cls=MaskAlignConfig, model_cls=MaskAlign,
        description="MaskAlign: no decoder; visible tokens (drawn by the teacher's cls attention) aligned with the "
                    "whitened features of a frozen teacher's last blocks through Dynamic Alignment",
        default_dataset="shapes",
        paper="Xue et al., Stare at What You See: Masked Image Modeling without Reconstruction, CVPR 2023",
        adapt=adapt_distill,
        train_defaults={"epochs": 4, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 1},
        tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "drop_path": 0.0,
                        "teacher": "random", "teacher_embed_dim": 32, "teacher_depth": 2, "teacher_num_heads": 2},
              "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
    ))


METHOD = _register()
