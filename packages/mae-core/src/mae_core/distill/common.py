"""The shared part of the distillation methods: teacher choice, teacher features, student taps and loss terms.

- ``--teacher`` (:class:`DistillConfig`): a run or ``save_pretrained`` directory of any ViT method here (image-mae,
  image-simclr...); empty (the default): the default T-MIM teacher for the data (a larger image MAE, 192 wide x 6
  blocks), trained once by :func:`default_teacher` (:func:`mae_core.teacher.cached_pretrain`) and cached under
  ``$MAE_TEACHER_CACHE`` (default ``runs/teachers``), keyed by the data config and the teacher recipe; ``random``: the same architecture with random
  weights (the control: a gain must come from the teacher's knowledge).
- The teacher's width / depth are copied into the student's config when it is built, so the student's heads are
  rebuilt from its own ``config.json`` without the teacher; the teacher itself is loaded on the first training
  forward (probe / fine-tune / reconstruct never read it) as a :class:`~mae_core.teacher.FrozenTeacher`: eval, no
  gradients, outside ``state_dict()`` and the optimizer, checked against ``teacher_sha256``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import WEIGHTS, read_config
from ..config import field
from ..errors import MaeError
from ..masking import MaskInfo, gather_tokens, num_keep, saliency_masking
from ..models.image_mae import ImageMAE, ImageMAEConfig
from ..teacher import FrozenTeacher, cached_pretrain, file_sha256

# the default MIM teacher ("T-MIM"): an image MAE larger than the default student (128 x 4)
T_MIM = {"embed_dim": 192, "depth": 6, "num_heads": 6, "decoder_embed_dim": 96, "decoder_depth": 1,
         "decoder_num_heads": 4, "mask_ratio": 0.75, "norm_pix_loss": True}
# the default contrastive teacher ("T-CL"): the core's contrastive ViT recipe (image-simclr, its default 128 x 4)
T_CL = {"embed_dim": 128, "depth": 4, "num_heads": 4, "warmup_epochs": 1}


@dataclass
class DistillConfig(ImageMAEConfig):
    teacher: str = field("", "teacher: a run or save_pretrained directory; empty: the default T-MIM teacher for the "
                             "data (an image MAE 192 x 6, trained once and cached under runs/teachers); 'random': "
                             "random weights (control)")
    teacher_sha256: str = field("", "sha256 of the teacher's weights (filled when the teacher is first seen)")
    teacher_embed_dim: int = field(T_MIM["embed_dim"], "teacher width (copied from the teacher's config)", ge=1)
    teacher_depth: int = field(T_MIM["depth"], "teacher blocks (copied from the teacher's config)", ge=1)
    teacher_num_heads: int = field(T_MIM["num_heads"], "teacher heads (copied from the teacher's config)", ge=1)
    teacher_epochs: int = field(6, "epochs of the default T-MIM teacher when it has to be trained", ge=1)


def default_teacher(cfg: DistillConfig, data_cfg, dataset=None) -> Path:
    """The cached default T-MIM teacher for ``data_cfg`` (trained now if it is not cached); prints which."""
    batch = min(128, len(dataset)) if dataset is not None else 128
    recipe = {**T_MIM, "patch_size": cfg.patch_size, "epochs": cfg.teacher_epochs, "batch_size": batch}
    return cached_pretrain("image-mae", data_cfg, recipe, prefix="t-mim", what="T-MIM")


def adapt_distill(model_cfg: DistillConfig, data_cfg, dataset) -> DistillConfig:
    """The image adapt (size, channels follow the data), then the default teacher when none is given."""
    from ..image import adapt_image

    cfg = adapt_image(model_cfg, data_cfg, dataset)
    if not cfg.teacher:
        cfg = dataclasses.replace(cfg, teacher=str(default_teacher(cfg, data_cfg, dataset)), teacher_sha256="")
    return cfg


class DistillStudent(ImageMAE):
    """An image MAE that reads a frozen teacher (``self.teacher``, loaded on first use)."""

    def init_teacher_fields(self, field: str = "teacher") -> None:
        """Copy the teacher's width / depth / heads into the config (``<field>_embed_dim`` ...) and fill
        ``<field>_sha256`` (when the teacher is there; a run reloaded without its teacher keeps the recorded
        values). ``field``: the config field naming the teacher (a second teacher has its own, e.g. ``cl_teacher``)."""
        c = self.config
        setattr(self, f"_{field}", None)
        source, flag = getattr(c, field), f"--{field.replace('_', '-')}"
        if not source or source == "random":
            return
        path = Path(source)
        path = path.parent if path.name == WEIGHTS else path
        if not (path / WEIGHTS).exists():
            if getattr(c, f"{field}_sha256"):  # a saved student: its config already pins the teacher
                return
            raise MaeError(f"{source}: teacher checkpoint not found ({flag})")
        tc = read_config(path).get("config", {})
        setattr(c, f"{field}_embed_dim", int(tc["embed_dim"]))
        setattr(c, f"{field}_depth", int(tc["depth"]))
        setattr(c, f"{field}_num_heads", int(tc.get("num_heads", getattr(c, f"{field}_num_heads"))))
        if tc.get("patch_size", c.patch_size) != c.patch_size:
            raise MaeError(f"{source}: teacher patch size {tc.get('patch_size')} differs from the student's "
                           f"{c.patch_size} ({flag} / --patch-size)")
        if not getattr(c, f"{field}_sha256"):
            setattr(c, f"{field}_sha256", file_sha256(path / WEIGHTS))

    @property
    def teacher(self) -> FrozenTeacher:
        return self.frozen_teacher("teacher")

    def frozen_teacher(self, field: str = "teacher") -> FrozenTeacher:
        """The teacher named by ``config.<field>``, loaded on first use (``random``: random weights, fixed seed)."""
        if getattr(self, f"_{field}") is None:
            c = self.config
            source, dim, depth = getattr(c, field), getattr(c, f"{field}_embed_dim"), getattr(c, f"{field}_depth")
            if source == "random":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0 if field == "teacher" else 1)
                    model = ImageMAE(ImageMAEConfig(img_size=c.img_size, patch_size=c.patch_size,
                                                    in_chans=c.in_chans, embed_dim=dim, depth=depth,
                                                    num_heads=getattr(c, f"{field}_num_heads"),
                                                    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=1))
                teacher = FrozenTeacher(model, source="random")
            else:
                teacher = FrozenTeacher.from_config(c, field=field)
            if teacher.encoder.embed_dim != dim or teacher.encoder.depth != depth:
                raise MaeError(f"{source}: teacher is {teacher.encoder.embed_dim} x {teacher.encoder.depth}, the "
                               f"student was built for {dim} x {depth}")
            setattr(self, f"_{field}", teacher.to(self.pos_embed.device))
        return getattr(self, f"_{field}")

    def visible(self, batch: dict, generator=None) -> tuple[torch.Tensor, torch.Tensor | None, MaskInfo]:
        """(raw patches, positions, the MAE mask) of ``batch``."""
        tokens, pos = self.tokenize(batch)
        return tokens, pos, self.make_mask(batch, tokens, generator)

    def encode_visible(self, tokens, pos, mask: MaskInfo, **encoder_kw):
        """The student's encoder over the visible tokens (+ cls): whatever ``encoder(..., **encoder_kw)`` returns."""
        x = self.embed_tokens(gather_tokens(tokens, mask.ids_keep))
        p = gather_tokens(pos.expand(tokens.shape[0], -1, -1), mask.ids_keep) if pos is not None else None
        return self.encoder(x, p, **encoder_kw)


# ---- teacher features ------------------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_blocks(teacher: FrozenTeacher, batch: dict, ids_keep: torch.Tensor | None, upto: int) -> torch.Tensor:
    """The raw output (before the final norm) of teacher block ``upto`` (0-based), over cls + the tokens
    ``ids_keep`` (all tokens when None), running only blocks 0..upto: the later blocks are never computed."""
    enc, model = teacher.encoder, teacher.model
    if enc.pos_every_block:
        raise MaeError("teacher_blocks: a teacher with positions in every block is not supported")
    if not 0 <= upto < enc.depth:
        raise MaeError(f"teacher block {upto} is out of range for a {enc.depth}-block teacher")
    tokens, pos = model.tokenize(batch)
    if ids_keep is not None:
        tokens = gather_tokens(tokens, ids_keep)
        pos = gather_tokens(pos.expand(ids_keep.shape[0], -1, -1), ids_keep) if pos is not None else None
    x = model.embed_tokens(tokens)
    x = x + pos if pos is not None else x
    if enc.num_prefix_tokens:
        x = torch.cat([enc.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
    for blk in enc.blocks[:upto + 1]:
        x = blk(x)
    return x


def with_cls_at(feats: torch.Tensor, ids_keep: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """Prefix tokens + the tokens ``ids_keep`` of full-length features (B, prefix + L, D), in ``ids_keep`` order."""
    return torch.cat([feats[:, :prefix], gather_tokens(feats[:, prefix:], ids_keep)], dim=1)


# ---- loss terms ------------------------------------------------------------------------------------------------------
def normalized_l1(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """DMAE's term: mean absolute difference of the L2-normalised features (every token, every channel)."""
    return F.l1_loss(F.normalize(student, dim=-1), F.normalize(teacher, dim=-1))


def whiten(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters (MaskAlign's ``target_norm="whiten"``, eps 1e-5)."""
    return F.layer_norm(x, (x.shape[-1],))


def attention_masking(importance: torch.Tensor, ratio: float, generator=None) -> MaskInfo:
    """Keep ``int(L (1 - ratio))`` tokens drawn without replacement with probability proportional to
    ``importance`` (B, L): the distribution of MaskAlign's ``torch.multinomial(importance, L, replacement=False)``
    prefix, drawn as the Gumbel top-k (keys log w + Gumbel noise, the largest kept) so that the noise comes from the
    generator path every mask here uses."""
    return saliency_masking(importance.clamp_min(1e-30).log(), num_keep(importance.shape[1], ratio), generator)


# ---- a second, contrastive teacher (MR-MAE, Hybrid Distillation) ----------------------------------------------------
@dataclass
class TwoTeacherConfig(DistillConfig):
    cl_teacher: str = field("", "contrastive teacher (T-CL): a run or save_pretrained directory; empty: the default "
                                "T-CL for the data (image-simclr 128 x 4, trained once and cached under "
                                "runs/teachers); 'random': random weights (control)")
    cl_teacher_sha256: str = field("", "sha256 of the contrastive teacher's weights (filled when first seen)")
    cl_teacher_embed_dim: int = field(T_CL["embed_dim"], "contrastive teacher width (copied from its config)", ge=1)
    cl_teacher_depth: int = field(T_CL["depth"], "contrastive teacher blocks (copied from its config)", ge=1)
    cl_teacher_num_heads: int = field(T_CL["num_heads"], "contrastive teacher heads (copied from its config)", ge=1)
    cl_teacher_epochs: int = field(6, "epochs of the default T-CL teacher when it has to be trained", ge=1)


def default_cl_teacher(cfg: TwoTeacherConfig, data_cfg, dataset=None) -> Path:
    """The cached default T-CL for ``data_cfg``: ``image-simclr`` (``T_CL``) trained for ``cl_teacher_epochs`` by
    :func:`mae_core.teacher.cached_pretrain` (cached under ``$MAE_TEACHER_CACHE`` as ``t-cl-<dataset>-<hash>``)."""
    batch = min(128, len(dataset)) if dataset is not None else 128
    options = {**T_CL, "patch_size": cfg.patch_size, "epochs": cfg.cl_teacher_epochs, "batch_size": batch}
    return cached_pretrain("image-simclr", data_cfg, options, "t-cl", "T-CL")


def adapt_two_teachers(model_cfg: TwoTeacherConfig, data_cfg, dataset) -> TwoTeacherConfig:
    """:func:`adapt_distill` (the MIM teacher, ``--teacher``), then the default T-CL when no ``--cl-teacher``."""
    cfg = adapt_distill(model_cfg, data_cfg, dataset)
    if not cfg.cl_teacher:
        cfg = dataclasses.replace(cfg, cl_teacher=str(default_cl_teacher(cfg, data_cfg, dataset)),
                                  cl_teacher_sha256="")
    return cfg


# ---- token relations (attention maps) --------------------------------------------------------------------------------
def with_prefix(ids: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """Indices in a (prefix + L)-token sequence of the prefix tokens and the patch tokens ``ids`` (B, n)."""
    head = torch.arange(prefix, device=ids.device).expand(ids.shape[0], -1)
    return torch.cat([head, ids + prefix], dim=1)


def restrict_attention(attn: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The attention (B, H, N, N) among the tokens ``idx`` (B, m) only: rows and columns ``idx``, each row
    renormalised, i.e. the softmax of the same logits over the kept keys (B, H, m, m)."""
    b, h, n, _ = attn.shape
    m = idx.shape[1]
    rows = attn.gather(2, idx[:, None, :, None].expand(b, h, m, n))
    sub = rows.gather(3, idx[:, None, None, :].expand(b, h, m, m))
    return sub / sub.sum(-1, keepdim=True).clamp_min(1e-12)


def head_groups(student_heads: int, teacher_heads: int) -> torch.Tensor:
    """(student_heads, teacher_heads) row-stochastic matrix pairing heads by position: the identity at equal
    counts; with more teacher heads, student head h averages the teacher heads g with ``g * S // T == h``; with
    fewer, it takes teacher head ``h * T // S``."""
    s, t = student_heads, teacher_heads
    m = torch.zeros(s, t)
    if t >= s:
        m[torch.arange(t) * s // t, torch.arange(t)] = 1.0
    else:
        m[torch.arange(s), torch.arange(s) * t // s] = 1.0
    return m / m.sum(1, keepdim=True)


def attention_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of two attention maps (B, H, Q, K), summed over keys, averaged over batch and
    queries: one value per head (H,)."""
    t = teacher.float()
    kl = (t * (t.clamp_min(1e-12).log() - student.float().clamp_min(1e-12).log())).sum(-1)
    return kl.mean(dim=(0, 2))
