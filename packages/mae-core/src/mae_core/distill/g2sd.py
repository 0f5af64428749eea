"""G2SD (Huang et al., Generic-to-Specific Distillation of Masked Autoencoders, CVPR 2023; pengzhiliang/G2SD:
``models_mae.py``, ``engine_distill.py`` / ``main_distill.py`` run by ``GD.sh``, ``models_vit.py`` /
``engine_finetune_dis.py`` run by ``SD.sh``).

Generic stage (``pretrain``, this model): teacher and student share the mask; the teacher (a frozen MAE) encodes the
student's visible tokens and runs its decoder over them + mask tokens; the target is the teacher decoder's hidden state
after its block ``teacher_decoder_block`` (the reference's ``--layer_index 4``, of an 8-block ViT-B decoder), before
the decoder norm, layer-normalised without affine (eps 1e-6), for every token: cls, visible and masked
(``--supervise_all True``). The student's own decoder output (all its blocks, before its norm) goes through an MLP
head (decoder width -> teacher decoder width -> teacher decoder width, GELU); the loss is smooth-L1 with beta 2. No
pixel loss: the student's decoder norm and pixel head are dropped (the reference keeps them, unused). The reference's
encoder-feature term is computed with weight 0 and is left out here.

Specific stage (``finetune``): the method's fine-tuning recipe turns on the core's hard distillation
(``FinetuneConfig.distill_teacher = "default"``, :mod:`mae_core.eval.finetune`): a distillation token, loss
(CE(class head, labels) + CE(distillation head, teacher's argmax)) / 2, test logits the mean of both heads. The default
teacher is **T-FT**: the student's own pretraining teacher fine-tuned on the labels with the same fine-tuning recipe
(same labels, epochs, seed), trained once and cached under ``$MAE_TEACHER_CACHE`` (:func:`fine_tuned_teacher`).

The default teacher is the cached T-MIM of :mod:`.common`, whose decoder has 1 block: the target is then the output of
that block (the last one: a teacher decoder shallower than ``teacher_decoder_block`` gives its last block, logged as
``teacher_decoder_blocks``). A deeper-decoder teacher comes in with ``--teacher DIR``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import WEIGHTS, read_config
from ..config import field, to_dict
from ..errors import ConfigError, MaeError
from ..layers.blocks import Mlp, init_weights
from ..masking import MaskInfo, gather_tokens
from ..models.image_mae import ImageMAE, ImageMAEConfig
from ..models.mae import ModelOutput
from ..registry import MethodSpec, register_method
from ..teacher import FrozenTeacher, cached_dir, file_sha256
from .common import T_MIM, DistillConfig, DistillStudent, adapt_distill


@dataclass
class G2SDConfig(DistillConfig):
    teacher_decoder_block: int = field(4, "teacher decoder blocks run; the target is the last one's output (the "
                                          "reference's --layer_index 4; capped at the teacher's decoder depth)", ge=1)
    teacher_decoder_embed_dim: int = field(T_MIM["decoder_embed_dim"], "teacher decoder width (copied from the "
                                                                       "teacher's config)", ge=1)
    teacher_decoder_depth: int = field(T_MIM["decoder_depth"], "teacher decoder blocks (copied from the teacher's "
                                                               "config)", ge=1)
    teacher_decoder_num_heads: int = field(T_MIM["decoder_num_heads"], "teacher decoder heads (copied)", ge=1)
    smooth_l1_beta: float = field(2.0, "beta of the smooth-L1 feature loss (G2SD: 2)", gt=0)


class G2SD(DistillStudent):
    def __init__(self, config: G2SDConfig):
        super().__init__(config)
        self.init_teacher_fields()
        c = self.config
        self.decoder.norm, self.decoder.pred = nn.Identity(), nn.Identity()  # no pixel prediction
        self.feature_head = Mlp(c.decoder_embed_dim, c.teacher_decoder_embed_dim, c.teacher_decoder_embed_dim)
        self.feature_head.apply(init_weights)

    def init_teacher_fields(self) -> None:
        """The encoder fields (:class:`DistillStudent`), then the teacher decoder's width / depth / heads."""
        super().init_teacher_fields()
        c = self.config
        if not c.teacher or c.teacher == "random":
            return
        path = Path(c.teacher)
        path = path.parent if path.name == WEIGHTS else path
        if not (path / WEIGHTS).exists():
            return  # a saved student without its teacher: the recorded fields stand
        tc = read_config(path).get("config", {})
        if "decoder_embed_dim" not in tc or not tc.get("decoder_depth"):
            raise MaeError(f"{c.teacher}: G2SD distils an MAE teacher's decoder; this teacher has none (--teacher)")
        c.teacher_decoder_embed_dim, c.teacher_decoder_depth = int(tc["decoder_embed_dim"]), int(tc["decoder_depth"])
        c.teacher_decoder_num_heads = int(tc.get("decoder_num_heads", c.teacher_decoder_num_heads))

    @property
    def teacher(self) -> FrozenTeacher:
        c = self.config
        if self._teacher is None and c.teacher == "random":  # the control, with the decoder this student reads
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = ImageMAE(ImageMAEConfig(
                    img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.teacher_embed_dim,
                    depth=c.teacher_depth, num_heads=c.teacher_num_heads,
                    decoder_embed_dim=c.teacher_decoder_embed_dim, decoder_depth=c.teacher_decoder_depth,
                    decoder_num_heads=c.teacher_decoder_num_heads))
            self._teacher = FrozenTeacher(model, source="random").to(self.pos_embed.device)
        return super().teacher

    def target_blocks(self) -> int:
        c = self.config
        return min(c.teacher_decoder_block, c.teacher_decoder_depth)

    @torch.no_grad()
    def teacher_target(self, batch: dict, mask: MaskInfo) -> torch.Tensor:
        """LayerNorm (no affine, eps 1e-6) of the teacher decoder's hidden state after :meth:`target_blocks`
        blocks, the teacher having encoded the student's visible tokens (+ cls): (B, 1 + L, teacher decoder width)."""
        t = self.teacher
        model = t.model
        decoder = getattr(model, "decoder", None)
        if decoder is None or not hasattr(decoder, "hidden"):
            raise MaeError(f"{self.config.teacher}: G2SD distils an MAE teacher's decoder; this teacher has none")
        tokens, pos = model.tokenize(batch)
        ids = mask.ids_keep
        x = model.embed_tokens(gather_tokens(tokens, ids))
        p = gather_tokens(pos.expand(ids.shape[0], -1, -1), ids) if pos is not None else None
        hidden = decoder.hidden(t(x, pos=p).last, mask.ids_restore, blocks=self.target_blocks())
        return F.layer_norm(hidden, hidden.shape[-1:], eps=1e-6)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        tokens, pos, mask = self.visible(batch, generator)
        latent = self.encode_visible(tokens, pos, mask)
        pred = self.feature_head(self.decoder.hidden(latent, mask.ids_restore))  # every token, before any norm
        target = self.teacher_target(batch, mask)
        if pred.shape != target.shape:
            raise MaeError(f"{self.config.teacher}: teacher decoder features {tuple(target.shape)} do not match the "
                           f"student's head {tuple(pred.shape)}")
        loss = F.smooth_l1_loss(pred, target.to(pred.dtype), beta=self.config.smooth_l1_beta)
        metrics = {"loss_decoder_feature": loss.detach(), "teacher_decoder_blocks": self.target_blocks()}
        return ModelOutput(loss=loss, mask=mask.mask, metrics=metrics)

    def layer_id(self, name: str) -> int:
        return self.encoder.depth + 1 if name.startswith("feature_head") else super().layer_id(name)


# ---- the specific stage's default teacher: T-FT ---------------------------------------------------------------------
_RECIPE_KEYS = ("epochs", "batch_size", "base_lr", "lr", "min_lr", "warmup_epochs", "weight_decay", "betas",
                "optimizer", "accum_steps", "clip_grad", "seed", "max_steps", "drop_last", "amp")


def fine_tuned_teacher(cfg, fc, run) -> Path:
    """T-FT for fine-tuning a G2SD student (``MethodSpec.finetune_teacher``): the student's pretraining teacher
    (``cfg.model.teacher``, checked against its recorded sha256) fine-tuned with this fine-tuning's recipe (train
    settings, label fraction, layer decay, ... and seed), without distillation. Cached under ``$MAE_TEACHER_CACHE`` as
    ``t-ft-<dataset>-<hash of teacher weights, data and recipe>``; prints which."""
    from ..runconfig import resolve_run_config
    from ..workflows import run_finetune

    m = cfg.model
    source = getattr(m, "teacher", "")
    if not source or source == "random":
        raise ConfigError(f"--distill-teacher default: T-FT fine-tunes the student's pretraining teacher, which is "
                          f"{source or 'not recorded'} here; give --distill-teacher DIR (a finetune output) or none")
    tdir = Path(source)
    tdir = tdir.parent if tdir.name == WEIGHTS else tdir
    sha = file_sha256(tdir / WEIGHTS)
    if getattr(m, "teacher_sha256", "") and sha != m.teacher_sha256:
        raise MaeError(f"{tdir}: the teacher's weights changed since the student was trained (sha256 {sha[:16]}...)")
    train = {k: getattr(cfg.train, k) for k in _RECIPE_KEYS}
    tfc = dataclasses.replace(fc, distill_teacher="", scratch=False)
    recipe = [sha, cfg.dataset.name, to_dict(cfg.data), train, dataclasses.asdict(tfc)]
    def build(out: Path) -> None:
        tcfg = resolve_run_config(run=str(tdir), base="finetune", dataset=cfg.dataset.name,
                                  sections={"data": to_dict(cfg.data), "train": {**train, "progress": False}})
        run_finetune(tcfg, tfc, str(tdir), out=str(out), overwrite=True)
    return cached_dir("t-ft", cfg.dataset.name, recipe, "T-FT", build, done=("head.safetensors", "summary.json"),
                      how=f"{tdir.name} fine-tuned, {train['epochs']} epochs, label fraction {fc.label_fraction}, "
                          f"seed {train['seed']}")


def _register():
    return register_method(MethodSpec(
        name="g2sd", domain="core", config_cls=G2SDConfig, model_cls=G2SD,
        description="G2SD: generic stage, the student decoder's output (MLP head) matches a frozen MAE teacher's "
                    "decoder hidden state (shared mask, every token, smooth-L1); specific stage, fine-tuning with a "
                    "distillation token from the fine-tuned teacher (T-FT)",
        default_dataset="shapes",
        paper="Huang et al., Generic-to-Specific Distillation of Masked Autoencoders, CVPR 2023",
        adapt=adapt_distill,
        train_defaults={"epochs": 4, "batch_size": 128, "base_lr": 1.5e-3, "warmup_epochs": 1},
        finetune_defaults={"base_lr": 1.5e-3},  # image-mae's fine-tuning lr: the comparison with MAE is at one recipe
        finetune_options={"distill_teacher": "default"},
        finetune_teacher=fine_tuned_teacher,
        tiny={"model": {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "decoder_embed_dim": 16,
                        "decoder_depth": 1, "decoder_num_heads": 2, "teacher": "random", "teacher_embed_dim": 32,
                        "teacher_depth": 2, "teacher_num_heads": 2, "teacher_decoder_embed_dim": 16,
                        "teacher_decoder_depth": 2, "teacher_decoder_num_heads": 2, "teacher_decoder_block": 1},
              "data": {"image_size": 16, "num_train": 4, "num_test": 2}},
    ))


METHOD = _register()
