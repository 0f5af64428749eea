"""Hybrid Distillation (Shi et al., Hybrid Distillation: Connecting Masked Autoencoders with Contrastive Learners,
ICLR 2024; arXiv 2306.15876). No official code was found, so this follows the paper's description; the choices
marked "ours" are not fixed by it.

A student ViT without decoder learns from two frozen teachers that both see the intact image:

- **token relations of the MIM teacher** (``--teacher``, default T-MIM): at the intermediate student blocks
  ``relation_blocks`` (ours: every block but the last), the student's attention maps imitate the MIM teacher's;
  student block i of S meets teacher block ``(i + 1) * T // S - 1`` of T (ours). The teacher's map is restricted
  to the tokens the student still holds (rows and columns, rows renormalised: the softmax of the same logits over
  those keys). The term is KL(teacher || student) per head, summed over keys and averaged over queries, then
  averaged over heads and relation blocks (``loss_rel_s<i>_t<j>``). Heads pair by position; when the counts differ
  (the default 4-head student against the 6-head T-MIM) each student head meets the average of its group of teacher
  heads (ours; the paper's student and teachers are all ViT-B with 12 heads);
- **features of the contrastive teacher** (``--cl-teacher``, default T-CL): the student's final output (after its
  final norm), through a linear head, matches the teacher's last output layer-normalised without affine, at cls +
  the tokens the student still holds; smooth-L1 (beta 1) as in feature distillation (``loss_feat``);
- both weight 1 (``relation_weight``, ``feature_weight``; 0 removes a term: the ablations).

**Progressive redundant token dropping**: the input is masked uniformly at random (``mask_ratio``, 0.5: ours); before
each student block in ``drop_blocks`` the patch tokens still held are cut to the fraction ``drop_keep`` of them,
keeping those with the highest last-block cls attention (mean over heads) of a teacher (``drop_by``: the contrastive
one by default, ours). With the defaults the 4-block student holds 32 of 64 patches in blocks 0-1 and 16 in 2-3.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import field
from ..errors import ConfigError
from ..layers.blocks import init_weights
from ..masking import gather_tokens
from ..models.mae import ModelOutput
from ..registry import MethodSpec, register_method
from .common import (DistillStudent, TwoTeacherConfig, adapt_two_teachers, attention_kl, head_groups,
                     restrict_attention, whiten, with_prefix)

DROP_BY = {"cl": "cl_teacher", "mim": "teacher"}


@dataclass
class HybridConfig(TwoTeacherConfig):
    mask_ratio: float = field(0.5, "fraction of patches hidden at the input, uniformly at random", ge=0, lt=1)
    drop_blocks: list[int] = field([2], "student blocks before which redundant tokens are dropped (0-based)")
    drop_keep: list[float] = field([0.5], "fraction of the patch tokens still held that each drop keeps (those "
                                          "with the highest teacher cls attention)")
    drop_by: str = field("cl", "teacher whose last-block cls attention ranks the tokens", choices=sorted(DROP_BY))
    relation_blocks: list[int] = field([0, 1, 2], "student blocks whose attention imitates the MIM teacher's")
    relation_weight: float = field(1.0, "weight of the token-relation term (0: contrastive teacher only)", ge=0)
    feature_weight: float = field(1.0, "weight of the feature term (0: relations only)", ge=0)


def drop_tokens(x: torch.Tensor, ids: torch.Tensor, importance: torch.Tensor, keep: int, prefix: int = 1):
    """Keep the prefix tokens and the ``keep`` patch tokens of ``x`` (B, prefix + n, D), at grid positions ``ids``
    (B, n), whose ``importance`` (B, L, over the whole grid) is highest, in decreasing importance: (x', ids')."""
    top = importance.gather(1, ids).topk(keep, dim=1).indices
    return torch.cat([x[:, :prefix], gather_tokens(x[:, prefix:], top)], dim=1), ids.gather(1, top)


class HybridDistill(DistillStudent):
    def __init__(self, config: HybridConfig):
        super().__init__(config)
        del self.decoder  # pure distillation
        self.init_teacher_fields("teacher")
        self.init_teacher_fields("cl_teacher")
        c = self.config
        if len(c.drop_blocks) != len(c.drop_keep):
            raise ConfigError(f"model.drop_keep: {len(c.drop_keep)} values for {len(c.drop_blocks)} drop_blocks")
        for name in ("drop_blocks", "relation_blocks"):
            if any(not 0 <= b < c.depth for b in getattr(c, name)):
                raise ConfigError(f"model.{name}: {list(getattr(c, name))} out of range for {c.depth} blocks")
        if any(not 0 < k <= 1 for k in c.drop_keep):
            raise ConfigError(f"model.drop_keep: every fraction must be in (0, 1], got {list(c.drop_keep)}")
        if c.relation_weight == 0 and c.feature_weight == 0:
            raise ConfigError("model.relation_weight / model.feature_weight: both are 0, nothing to distill")
        self.teacher_of = {i: (i + 1) * c.teacher_depth // c.depth - 1 for i in sorted(c.relation_blocks)}
        self.register_buffer("heads", head_groups(c.num_heads, c.teacher_num_heads), persistent=False)
        self.feature_head = nn.Linear(c.embed_dim, c.cl_teacher_embed_dim)
        self.feature_head.apply(init_weights)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        c = self.config
        rel = self.teacher_of if c.relation_weight > 0 else {}
        rank = {"cl": [], "mim": []}
        if c.drop_blocks:
            rank[c.drop_by] = [-1]  # that teacher's last block: its cls attention ranks the tokens
        t_mim = self.teacher(batch, attention=[*rel.values(), *rank["mim"]]) if rel or rank["mim"] else None
        t_cl = self.frozen_teacher("cl_teacher")(batch, attention=rank["cl"]) \
            if c.feature_weight > 0 or rank["cl"] else None
        if c.drop_blocks:
            ranker = t_cl if c.drop_by == "cl" else t_mim
            if not ranker.cls_attention:
                raise ConfigError(f"model.drop_by: the {c.drop_by} teacher has no cls token to rank tokens with")
            importance = ranker.cls_attention[-1].float().mean(1)  # (B, L)
        tokens, pos, mask = self.visible(batch, generator)
        enc, p = self.encoder, self.encoder.num_prefix_tokens
        ids = mask.ids_keep
        x = self.embed_tokens(gather_tokens(tokens, ids))
        x = x + gather_tokens(pos.expand(x.shape[0], -1, -1), ids) if pos is not None else x
        x = torch.cat([enc.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        drops = dict(zip(c.drop_blocks, c.drop_keep))
        loss, metrics, rel_terms = 0.0, {}, []
        for i, blk in enumerate(enc.blocks):
            if i in drops:
                x, ids = drop_tokens(x, ids, importance, max(1, int(ids.shape[1] * drops[i])), p)
            if i not in rel:
                x = blk(x)
                continue
            x, attn = blk(x, return_attention=True)
            t_attn = restrict_attention(t_mim.attentions[list(rel).index(i)], with_prefix(ids, t_mim.num_prefix_tokens))
            t_attn = torch.einsum("st,btqk->bsqk", self.heads.to(t_attn.dtype), t_attn)
            term = attention_kl(t_attn, attn).mean()
            metrics[f"loss_rel_s{i}_t{rel[i]}"] = term.detach()
            rel_terms.append(term)
        if rel_terms:
            loss = loss + c.relation_weight * torch.stack(rel_terms).mean()
        if c.feature_weight > 0:
            target = whiten(t_cl.last).gather(1, with_prefix(ids, t_cl.num_prefix_tokens)[..., None].expand(
                -1, -1, t_cl.last.shape[-1]))
            feat = F.smooth_l1_loss(self.feature_head(enc.norm(x)), target)
            metrics["loss_feat"] = feat.detach()
            loss = loss + c.feature_weight * feat
        held = torch.ones_like(mask.mask).scatter_(1, ids, 0.0)  # 1 = not held by the last block
        metrics["tokens_held"] = ids.shape[1]
        return ModelOutput(loss=loss, mask=held, metrics=metrics)

    def layer_id(self, name: str) -> int:
        return self.encoder.depth + 1 if name.startswith("feature_head") else super().layer_id(name)


def _register():
    return register_method(MethodSpec(
        name="hybrid-distill", domain="core", config_cls=HybridConfig, model_cls=HybridDistill,
        description="Hybrid Distillation: attention maps imitate a MIM teacher's (KL per head) at intermediate "
                    "blocks, the output matches a contrastive teacher's features; tokens dropped by teacher attention",
        default_dataset="shapes",
        paper="Shi et al., Hybrid Distillation: Connecting Masked Autoencoders with Contrastive Learners, ICLR 2024",
        adapt=adapt_two_teachers,
        train_defaults={"epochs": 4, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 1},
        tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "teacher": "random",
                        "teacher_embed_dim": 24, "teacher_depth": 3, "teacher_num_heads": 3, "cl_teacher": "random",
                        "cl_teacher_embed_dim": 24, "cl_teacher_depth": 1, "cl_teacher_num_heads": 2,
                        "drop_blocks": [1], "relation_blocks": [0, 1]},
              "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
    ))


METHOD = _register()
