"""CDFSL-V stage 2 (Samarasinghe et al., "CDFSL-V: Cross-Domain Few-Shot Learning for Videos", ICCV 2023; reference
code Sarinda251/CDFSL-V: ``trainCurr.py`` for this stage, ``testFS.py`` for the evaluation).

Stage 1 is VideoMAE pretraining on the source and the target videos together (the library's ``videomae`` on the
``cdfsl-pretrain`` data). Stage 2, this method, starts a student from that run (``init``) and trains it with

- supervised cross-entropy of the student's source-class logits on labelled source clips (unaugmented, as the
  reference's source loader);
- self-distillation on unlabelled target clips: an EMA teacher (a copy of the student, momentum 0.99) sees a
  weakly augmented view (random resized crop, scale 0.5-1, horizontal flip) and its logits divided by the
  temperature 0.1 and soft-maxed are the soft targets of the student's logits on a strongly augmented view of the
  same clip (the weak view + colour jitter 0.4 / 0.4 / 0.4 / 0.1 with p 0.8 + grey-scale with p 0.2); the loss is
  the soft-target cross-entropy (the student's logits are not divided by a temperature, as the reference);
- a curriculum that moves the weight from the first loss to the second: ``(1 - w) CE + w distill`` with
  ``w = 1/2 + arctan(k (p - c)) / pi`` (``curriculum_steepness`` k = 10, ``curriculum_center`` c = 0.5), ``p`` the
  training progress (the epoch fraction e / E, here continuous per step).

The classifier is the reference's ``VideoMAEForVideoClassification`` head: mean of the encoder's tokens, a layer
norm (``fc_norm``) and a linear layer over the source classes. Few-shot features (``pool``): ``fc`` (the
normed mean, the reference's model with ``classifier = Identity``), ``mean`` (the encoder's token mean, the feature
the stage-1 arms also have), ``logits`` (the source-head logits), or the VideoMAE pools.

Deviations, each documented in docs/benchmarks/video.md: the released ``trainCurr.py`` computes the arctan multiplier
(``0.05 arctan(10 (e / E - 0.05)) / (pi / 2) + 0.05``) and then overwrites it with ``multiplier = 1``, and calls
``adjust_optim(optimizer, epoch, max_epoch)`` with ``max_epoch`` undefined (and a second parameter group the
optimizer does not have), so the released script cannot run past its first step. We implement the paper's
curriculum (supervised first, then target self-distillation) with the arctan shape of the released multiplier,
normalised to move the weight from one loss to the other; ``curriculum constant`` is the released code's effective
loss (CE + 1 x distill), ``supervised`` CE alone (the "+ supervised stage" arm). The reference updates the teacher
once per epoch; we update it before every step (``set_progress``), which at 0.99 lets the teacher follow a run of
a few hundred steps (at 0.99 per epoch, 20 epochs move it 18 % of the way). SGD momentum 0.9 without Nesterov and a
cosine lr (the reference: Nesterov, constant 0.01).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.augment import simclr_view
from mae_core.config import field
from mae_core.errors import MaeError
from mae_core.layers.ema import EMA
from mae_core.masking import uniform_noise
from mae_core.models import ModelOutput
from mae_core.models.mae import init_weights
from mae_core.teacher import FrozenTeacher, cached_pretrain

from .videomae import VideoMAE, VideoMAEConfig

CURRICULA = ("arctan", "constant", "supervised", "distill")
STAGE1_FIELDS = ("tubelet_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "decoder_embed_dim",
                 "decoder_depth", "decoder_num_heads", "mask_ratio", "decoder_mask_ratio")


@dataclass
class CDFSLVConfig(VideoMAEConfig):
    init: str = field("", "the stage-1 run (a videomae run on source + target, or save_pretrained directory); "
                          "empty: the default stage 1 on the data (trained once, cached under runs/teachers); "
                          "'none': random weights")
    init_sha256: str = field("", "sha256 of the stage-1 weights (filled when they are first loaded)")
    stage1_epochs: int = field(24, "epochs of the default stage-1 VideoMAE when it has to be trained", ge=1)
    num_classes: int = field(8, "source classes of the supervised head (follows the data)", ge=1)
    curriculum: str = field("arctan", "weights of (CE, distill): arctan (1 - w, w), w = 1/2 + arctan(k (p - c)) / pi; "
                                      "constant (1, 1: the released code); supervised (1, 0); distill (0, 1)",
                            choices=list(CURRICULA))
    curriculum_center: float = field(0.5, "training fraction where the arctan curriculum weighs both losses equally",
                                     ge=0, le=1)
    curriculum_steepness: float = field(10.0, "k of the arctan curriculum (larger: a sharper switch)", gt=0)
    ema_momentum: float = field(0.99, "momentum of the EMA teacher (updated before every step)", ge=0, le=1)
    temperature: float = field(0.1, "temperature of the teacher's soft targets", gt=0)
    crop_scale: float = field(0.5, "smallest area fraction of the weak and strong random resized crops", gt=0, le=1)


def curriculum_weights(progress: float, kind: str = "arctan", center: float = 0.5,
                       steepness: float = 10.0) -> tuple[float, float]:
    """(weight of the supervised CE, weight of the self-distillation) at training progress ``progress`` in [0, 1]."""
    if kind == "arctan":
        w = 0.5 + math.atan(steepness * (progress - center)) / math.pi
        return 1.0 - w, w
    return {"constant": (1.0, 1.0), "supervised": (1.0, 0.0), "distill": (0.0, 1.0)}[kind]


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's sharpened distribution ``softmax(logits / T)``."""
    return (teacher_logits.float() / temperature).softmax(-1)


def distill_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy ``mean_b sum_k -q_bk log softmax(s_b)_k`` (torch's CrossEntropyLoss on
    probabilities, as the reference)."""
    return -(targets * F.log_softmax(student_logits.float(), -1)).sum(-1).mean()


def video_views(video: torch.Tensor, u: torch.Tensor, strong: bool, mean, std, scale: float) -> torch.Tensor:
    """One augmented view of each clip (B, C, T, H, W) from (B, 11) uniform numbers, the same crop, flip and colour
    change on every frame of a clip (the reference transforms the stacked frames at once)."""
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    out = simclr_view(frames, u.repeat_interleave(t, 0), mean, std, scale=(scale, 1.0),
                      jitter_prob=0.8 if strong else 0.0, grayscale_prob=0.2 if strong else 0.0)
    return out.reshape(b, t, c, h, w).transpose(1, 2)


class CDFSLV(VideoMAE):
    pool = "fc"
    ddp_find_unused_parameters = True  # the stage-1 decoder is kept (so the run loads as is) but not trained
    mask_schedule_refused = "CDFSL-V stage 2 does not mask (whole clips, supervised and self-distillation losses)"

    def __init__(self, config: CDFSLVConfig):
        super().__init__(config)
        c = self.config
        self.fc_norm = nn.LayerNorm(c.embed_dim)
        self.head = nn.Linear(c.embed_dim, c.num_classes)
        self.fc_norm.apply(init_weights)
        self.head.apply(init_weights)
        if c.init not in ("", "none"):
            self.load_init()
        self.teacher = EMA(self.student_parts())
        self.progress = 0.0

    def load_init(self) -> None:
        c = self.config
        if not Path(c.init).exists() and c.init_sha256:  # a saved student whose stage-1 run is gone: its own
            return                                        # weights (loaded next) hold everything
        src = FrozenTeacher.from_config(c, field="init").model
        if not isinstance(src, VideoMAE):
            raise MaeError(f"{c.init}: not a videomae run (it is {type(src).__name__}) (--init)")
        state = {k: v for k, v in src.state_dict().items() if not k.startswith(("teacher.", "head.", "fc_norm."))}
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise MaeError(f"{c.init}: weights do not fit this model: {str(e).splitlines()[1].strip()} "
                           "(--init)") from None
        bad = list(unexpected) + [m for m in missing if not m.startswith(("head.", "fc_norm.", "teacher."))]
        if bad:
            raise MaeError(f"{c.init}: weights do not fit this model ({', '.join(bad[:3])}) (--init)")

    def student_parts(self) -> nn.ModuleDict:
        """The classifier the teacher copies (a view of the student's own modules, not registered twice)."""
        return nn.ModuleDict({"patch_embed": self.patch_embed, "encoder": self.encoder, "fc_norm": self.fc_norm,
                              "head": self.head})

    def set_progress(self, p: float) -> None:
        """Before every training step: the curriculum's position and the teacher's EMA update."""
        self.progress = float(p)
        self.teacher.update(self.student_parts(), self.config.ema_momentum)

    def weights(self) -> tuple[float, float]:
        c = self.config
        return curriculum_weights(self.progress, c.curriculum, c.curriculum_center, c.curriculum_steepness)

    # ---- the classifier ---------------------------------------------------------------------------------------------
    def pooled(self, parts, video: torch.Tensor) -> torch.Tensor:
        """fc_norm of the mean of the encoder's tokens (the reference's pooled feature)."""
        pos = self._pos(self.video_grid(video), self.config.embed_dim, self.pos_embed, video.device)
        return parts["fc_norm"](parts["encoder"](parts["patch_embed"](video), pos).mean(1))

    def logits(self, video: torch.Tensor, teacher: bool = False) -> torch.Tensor:
        if teacher:
            with torch.no_grad():
                parts = self.teacher.module
                return parts["head"](self.pooled(parts, video))
        return self.head(self.pooled(self.student_parts(), video))

    # ---- one step ---------------------------------------------------------------------------------------------------
    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        c = self.config
        src, y = batch["video"], batch.get("label")
        tgt = batch.get("target_video", src)
        w_sup, w_dis = self.weights()
        mean, std = (0.5,) * src.shape[1], (0.5,) * src.shape[1]
        u = uniform_noise((tgt.shape[0], 22), generator, tgt.device)
        weak = video_views(tgt, u[:, :11], False, mean, std, c.crop_scale)
        strong = video_views(tgt, u[:, 11:], True, mean, std, c.crop_scale)
        metrics = {"w_sup": w_sup, "w_distill": w_dis}
        loss = src.new_zeros(())
        if y is not None and w_sup > 0:
            out = self.logits(src)
            ce = F.cross_entropy(out.float(), torch.as_tensor(y, device=src.device).long())
            loss = loss + w_sup * ce
            metrics.update(ce=ce.detach(), source_acc=(out.argmax(-1) == y).float().mean().detach())
        targets = soft_targets(self.logits(weak, teacher=True), c.temperature)
        student = self.logits(strong)
        dis = distill_loss(student, targets)
        if w_dis > 0:  # still computed at weight 0: every step costs the same and logs the distillation loss
            loss = loss + w_dis * dis
        else:
            loss = loss + 0.0 * dis
        metrics.update(distill=dis.detach(), teacher_conf=targets.max(-1).values.mean().detach())
        return ModelOutput(loss=loss, pred=student, mask=None, target=targets, metrics=metrics,
                           extra={"weak": weak, "strong": strong})

    # ---- features ---------------------------------------------------------------------------------------------------
    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        pool = pool or self.pool
        if pool in ("fc", "logits"):
            feats = self.pooled(self.student_parts(), batch["video"])
            return self.head(feats) if pool == "logits" else feats
        return super().encode(batch, pool)

    def feature_dim(self, pool: str | None = None) -> int:
        pool = pool or self.pool
        if pool == "logits":
            return self.config.num_classes
        return self.config.embed_dim if pool == "fc" else super().feature_dim(pool)

    def layer_id(self, name: str) -> int:
        if name.startswith(("teacher.", "fc_norm.", "head.")):
            return self.encoder.depth + 1
        return super().layer_id(name)


def target_fewshot(model, dataset, way: int = 5, shot: int = 5, query: int = 6, episodes: int = 200, seed: int = 0,
                   pool: str | None = None, classifier: str = "logistic", batch_size: int = 64) -> dict:
    """N-way K-shot on the frozen features of ``dataset`` (the target's test split), support and queries from that
    one pool as ``testFS.py`` (there: the first K clips of each class and the rest; here random disjoint draws),
    logistic regression on the support features (C 1), through :func:`mae_core.eval.fewshot.few_shot_eval`: mean
    accuracy, std and 95 % interval over ``episodes`` episodes."""
    from mae_core.eval import extract_features, few_shot_eval

    x, y = extract_features(model, dataset, batch_size=batch_size, pool=pool)
    return few_shot_eval(x, y, way=way, shot=shot, query=query, folds=episodes, seed=seed, classifier=classifier)


def adapt_cdfslv(cfg: CDFSLVConfig, data_cfg, dataset) -> CDFSLVConfig:
    """(After the clip size follows the data) the source classes follow the data; without ``init``, the default
    stage 1 (VideoMAE V2 of the same shape on ``cdfsl-pretrain`` with the same data settings), trained once and
    cached."""
    from ..data.crossdomain import CDFSLPretrainConfig, CrossDomainConfig

    if dataset is not None and getattr(dataset, "num_classes", None):
        cfg = dataclasses.replace(cfg, num_classes=int(dataset.num_classes))
    if not cfg.init and isinstance(data_cfg, CrossDomainConfig):
        stage1 = CDFSLPretrainConfig(**dataclasses.asdict(data_cfg))
        recipe = {"epochs": cfg.stage1_epochs, **{k: getattr(cfg, k) for k in STAGE1_FIELDS}}
        out = cached_pretrain("videomae", stage1, recipe, prefix="cdfslv-stage1", what="stage-1 VideoMAE")
        cfg = dataclasses.replace(cfg, init=str(out), init_sha256="")
    elif not cfg.init:
        raise MaeError("cdfsl-v: give --init RUN (a stage-1 videomae run) for data other than cdfsl-paired")
    return cfg


def visualize_cdfslv(model: CDFSLV, dataset, path, num: int = 4, seed: int = 0):
    """Target clips as the two branches see them (weak view: teacher; strong view: student), first and last frame,
    with the teacher's soft target over the source classes; the title gives the curriculum's weights at the end."""
    from mae_core.viz import pyplot, save_figure

    model = model.cpu().eval()
    items = [dataset[i] for i in range(min(num, len(dataset)))]
    video = torch.stack([it.get("target_video", it["video"]) for it in items])
    u = uniform_noise((len(items), 22), torch.Generator().manual_seed(seed), video.device)
    m = (0.5,) * video.shape[1]
    weak = video_views(video, u[:, :11], False, m, m, model.config.crop_scale)
    strong = video_views(video, u[:, 11:], True, m, m, model.config.crop_scale)
    with torch.no_grad():
        q = soft_targets(model.logits(weak, teacher=True), model.config.temperature)
    plt = pyplot()
    fig, axes = plt.subplots(len(items), 5, figsize=(7.5, 1.5 * len(items)), squeeze=False, layout="constrained")
    t = video.shape[2] - 1
    for i in range(len(items)):
        for j, (v, f, name) in enumerate(((weak, 0, "weak"), (weak, t, "weak"), (strong, 0, "strong"),
                                          (strong, t, "strong"))):
            axes[i, j].imshow((v[i, :, f].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1).numpy())
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            axes[i, j].set_title(f"{name} frame {f}", fontsize=6)
        axes[i, 4].bar(range(q.shape[1]), q[i].numpy())
        axes[i, 4].set_ylim(0, 1), axes[i, 4].tick_params(labelsize=5)
        axes[i, 4].set_title(f"teacher soft target (T {model.config.temperature})", fontsize=6)
    c = model.config
    end = curriculum_weights(1.0, c.curriculum, c.curriculum_center, c.curriculum_steepness)
    start = curriculum_weights(0.0, c.curriculum, c.curriculum_center, c.curriculum_steepness)
    fig.suptitle(f"cdfsl-v: target views and EMA-teacher targets; curriculum {c.curriculum}: (CE, distill) weights "
                 f"{start[0]:.2f}, {start[1]:.2f} -> {end[0]:.2f}, {end[1]:.2f}", fontsize=7)
    return save_figure(fig, path)
