"""MR-MAE (Gao et al., Mimic before Reconstruct: Enhancing Masked Autoencoders with Feature Mimicking, IJCV 2023;
arXiv 2303.05475). No official code is published (the authors' ConvMAE repository announces the paper but holds no
MR-MAE code), so this follows the paper's description; the choices marked "ours" are not fixed by it.

An image MAE whose encoder output is supervised twice, on disjoint token sets:

- **mimic (high level)**: the encoder's visible tokens (25 % at mask 0.75, the cls token excluded), each through a
  light head (one ``Linear`` per teacher), predict the frozen teachers' features at the same positions. The paper
  mimics CLIP and DINO; here the contrastive T-CL (``--cl-teacher``, default: the core's ``image-simclr`` recipe
  trained and cached by the library) and the MIM T-MIM (``--teacher``, the default distillation teacher). The
  teachers see the intact image; ours: the target is a teacher's last output (after its final norm) layer-normalised
  without affine (so both teachers have the same scale), the loss an MSE per teacher, each weight 1 (``mimic_weight``),
  logged as ``loss_mimic_cl`` / ``loss_mimic_mim``;
- **reconstruct (low level)**: the MAE decoder predicts the pixels of the masked 75 % (``loss_pixel``, the image MAE's
  loss with per-patch normalised targets).

``--mimic-on decoder`` is the paper's key ablation: the teacher features become targets of the decoder at the masked
tokens (its final linear layer widened to predict pixels and features; the same MSE), beside the pixels, instead of
targets of the encoder's visible tokens.

Not implemented: ConvMAE's multi-scale convolutional encoder, MR-MAE's multi-layer fusion and focused mimicking
(a plain ViT encoder here, as every student of this package).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F

from ..config import field
from ..errors import ConfigError
from ..layers.blocks import init_weights
from ..masking import gather_tokens
from ..models.mae import ModelOutput
from ..registry import MethodSpec, register_method
from .common import DistillStudent, TwoTeacherConfig, adapt_two_teachers, whiten

TEACHERS = {"cl": "cl_teacher", "mim": "teacher"}  # mimicked teacher -> its config field


@dataclass
class MRMAEConfig(TwoTeacherConfig):
    mimic_on: str = field("visible", "where the teacher features are predicted: the encoder's visible tokens "
                                     "(MR-MAE) or the decoder's masked tokens beside the pixels (ablation)",
                          choices=["visible", "decoder"])
    mimic_cl: bool = field(True, "mimic the contrastive teacher (T-CL)")
    mimic_mim: bool = field(True, "mimic the MIM teacher (T-MIM)")
    mimic_weight: float = field(1.0, "weight of each teacher's mimic term beside the pixel loss", ge=0)


class MRMAE(DistillStudent):
    def __init__(self, config: MRMAEConfig):
        super().__init__(config)
        self.init_teacher_fields("teacher")
        self.init_teacher_fields("cl_teacher")
        c = self.config
        self.mimicked = [k for k in TEACHERS if getattr(c, f"mimic_{k}")]
        if not self.mimicked:
            raise ConfigError("model.mimic_cl / model.mimic_mim: at least one teacher must be mimicked")
        self.dims = [getattr(c, f"{TEACHERS[k]}_embed_dim") for k in self.mimicked]
        if c.mimic_on == "visible":
            self.mimic_heads = nn.ModuleList([nn.Linear(c.embed_dim, d) for d in self.dims])
            self.mimic_heads.apply(init_weights)
        else:  # one linear layer predicts the pixels and every teacher's features of each masked token
            self.pixel_dim = self.decoder.pred.out_features
            self.decoder.pred = nn.Linear(c.decoder_embed_dim, self.pixel_dim + sum(self.dims))
            self.decoder.pred.apply(init_weights)

    def teacher_targets(self, batch: dict) -> list:
        """Each mimicked teacher's last output over the intact image, patch tokens only, whitened: (B, L, D_t)."""
        out = []
        for k in self.mimicked:
            t = self.frozen_teacher(TEACHERS[k])(batch)
            out.append(whiten(t.last[:, t.num_prefix_tokens:]))
        return out

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        tokens, pos, mask = self.visible(batch, generator)
        latent = self.encode_visible(tokens, pos, mask)  # (B, prefix + visible, D), after the final norm
        out = self.decoder(latent, mask.ids_restore)
        if c.mimic_on == "visible":
            p = self.encoder.num_prefix_tokens
            preds, pred = [head(latent[:, p:]) for head in self.mimic_heads], out
        else:
            pred, feats = out[..., :self.pixel_dim], out[..., self.pixel_dim:]
            preds = list(feats.split(self.dims, dim=-1))
        target = self.prepare_target(self.target(batch))
        pixel = self.forward_loss(pred, target, mask.mask)
        loss, metrics = pixel, {"loss_pixel": pixel.detach()}
        for k, p_k, t_k in zip(self.mimicked, preds, self.teacher_targets(batch)):
            if c.mimic_on == "visible":  # visible tokens only, in the student's token order
                term = F.mse_loss(p_k, gather_tokens(t_k, mask.ids_keep))
            else:  # masked tokens only, as the pixel loss
                term = self.forward_loss(p_k, t_k, mask.mask)
            metrics[f"loss_mimic_{k}"] = term.detach()
            loss = loss + c.mimic_weight * term
        return ModelOutput(loss=loss, pred=pred, mask=mask.mask, target=target, metrics=metrics)

    def layer_id(self, name: str) -> int:
        return self.encoder.depth + 1 if name.startswith("mimic_heads") else super().layer_id(name)


def _register():
    from ..image import visualize_images

    return register_method(MethodSpec(
        name="mr-mae", domain="core", config_cls=MRMAEConfig, model_cls=MRMAE,
        description="MR-MAE: the encoder's visible tokens mimic a contrastive (T-CL) and a MIM (T-MIM) teacher "
                    "through linear heads; the decoder reconstructs the masked pixels",
        default_dataset="shapes",
        paper="Gao et al., Mimic before Reconstruct: Enhancing Masked Autoencoders with Feature Mimicking, IJCV 2023",
        visualize=visualize_images, adapt=adapt_two_teachers,
        train_defaults={"epochs": 4, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 1},
        tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 16,
                        "decoder_depth": 1, "decoder_num_heads": 2, "teacher": "random", "teacher_embed_dim": 32,
                        "teacher_depth": 2, "teacher_num_heads": 2, "cl_teacher": "random",
                        "cl_teacher_embed_dim": 24, "cl_teacher_depth": 1, "cl_teacher_num_heads": 2},
              "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
    ))


METHOD = _register()
