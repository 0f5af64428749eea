"""Fine-tuning with layer-wise lr decay and drop path, on top of any model that has ``encode`` and ``layer_id``.

With ``adversary_key`` / ``adversary_classes`` a second linear head behind a gradient-reversal layer of strength
``adversary_lambda`` (:class:`~mae_core.layers.AdversaryHead`) reads the same normed pooled features as the class head
and predicts the sample's ``batch[adversary_key]`` (e.g. the subject); its loss, BCE on the one-hot label, is added to
the task loss with weight 1, so the head learns the nuisance label while the encoder is pushed to hide it (FMAE-IAT,
``models_vit.py`` / ``engine_finetune.py``: ``loss = AU_loss + ID_loss``, ``GradReverse`` scaling the gradient by
``-lambda``).

With ``distill_token=True`` and a ``teacher`` classifier the fine-tuning is DeiT's hard distillation (as G2SD's
specific stage, ``engine_finetune_dis.py``): a learned distillation token joins the patch tokens of a ViT backbone, its
encoder output goes through its own linear head, and the loss is (CE(class head, labels) + CE(distillation head,
teacher's argmax)) / 2; at test time the logits are the mean of both heads. The teacher (a fine-tuned classifier,
:func:`load_classifier`) is a :class:`~mae_core.teacher.FrozenTeacher`: eval, no gradients, not in the student's
weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.utils import collate_dicts
from ..errors import MaeError
from ..layers import AdversaryHead
from ..models.mae import MaskedAutoencoder, ModelOutput
from ..train.optim import param_groups
from ..train.trainer import Trainer, TrainConfig, move_to


class Classifier(nn.Module):
    """backbone.encode(batch) -> (optional norm) -> linear head. Single- or multi-label loss. ``distill_token`` /
    ``teacher`` (a :class:`~mae_core.teacher.FrozenTeacher` of a classifier): hard distillation (module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, pool: str | None = "mean", multilabel: bool = False,
                 label_smoothing: float = 0.0, distill_token: bool = False, teacher: nn.Module | None = None,
                 adversary_key: str = "", adversary_classes: int = 0, adversary_lambda: float = 1.0):
        super().__init__()
        self.backbone = backbone
        decoder = getattr(backbone, "decoder", None)
        if isinstance(decoder, nn.Module):
            # not used downstream: frozen (DDP and the optimizer skip it) but kept, so the saved backbone reloads
            decoder.requires_grad_(False)
        self.pool = pool
        dim = backbone.feature_dim(pool) if hasattr(backbone, "feature_dim") else None
        # a backbone whose pooled features already end in their own normalisation (a reference head with BatchNorm)
        # turns the LayerNorm off with ``head_norm(pool) -> False``
        norm = getattr(backbone, "head_norm", None)
        self.fc_norm = nn.LayerNorm(dim) if dim and (norm is None or norm(pool)) else nn.Identity()
        self.head = nn.LazyLinear(num_classes) if dim is None else nn.Linear(dim, num_classes)
        if dim is not None:
            nn.init.trunc_normal_(self.head.weight, std=2e-5)
            nn.init.zeros_(self.head.bias)
        self.multilabel = multilabel
        self.label_smoothing = label_smoothing
        self.config = getattr(backbone, "config", None)
        self.dist_token = self.head_dist = self.teacher = None
        if distill_token:
            if not (isinstance(backbone, MaskedAutoencoder) and not backbone.encoder.pos_every_block
                    and type(backbone).forward_features is MaskedAutoencoder.forward_features) or multilabel:
                raise MaeError(f"a distillation token needs a single-label ViT backbone whose encode is the "
                               f"MaskedAutoencoder's ({type(backbone).__name__} is not)")
            d = backbone.encoder.embed_dim
            self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
            nn.init.trunc_normal_(self.dist_token, std=0.02)
            self.head_dist = nn.Linear(d, num_classes)
            nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
            nn.init.zeros_(self.head_dist.bias)
        if teacher is not None:
            if not distill_token:
                raise MaeError("a fine-tuning teacher needs a distillation token (distill_token=True): its argmax "
                               "trains it")
            self.teacher = teacher
        self.adversary_key = adversary_key
        self.adversary = None
        if adversary_classes:
            if not adversary_key:
                raise MaeError("an adversary head needs the sample key of its label (adversary_key)")
            self.adversary = AdversaryHead(dim, int(adversary_classes), adversary_lambda)

    def features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(pooled features, the distillation token's normed encoder output or None)."""
        b = self.backbone
        if self.dist_token is None:
            return (b.encode(batch, pool=self.pool) if self.pool else b.encode(batch)), None
        tokens, pos = b.tokenize(batch)  # MaskedAutoencoder.forward_features with one more token after the patches
        x = b.embed_tokens(tokens)
        x = x + pos if pos is not None else x
        feats = b.encoder(torch.cat([x, self.dist_token.expand(x.shape[0], -1, -1).to(x.dtype)], dim=1))
        return b.pool_features(feats[:, :-1], self.pool), feats[:, -1]

    def encode(self, batch: dict) -> torch.Tensor:
        """The features the class head (and the adversary head) read: the normed pooled backbone features."""
        return self.fc_norm(self.features(batch)[0])

    def both_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(class head logits, distillation head logits or None)."""
        return self._heads(batch)[:2]

    def _heads(self, batch: dict):
        f, dist = self.features(batch)
        f = self.fc_norm(f)
        return self.head(f), (self.head_dist(dist) if dist is not None else None), f

    def logits(self, batch: dict) -> torch.Tensor:
        """Test logits: the class head, or with a distillation token the mean of both heads (DeiT, G2SD)."""
        cls, dist = self.both_logits(batch)
        return cls if dist is None else (cls + dist) / 2

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        logits, dist, f = self._heads(batch)
        y = batch["label"]
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
            metrics = {}
        else:
            soft = y.is_floating_point() and y.ndim == 2  # class probabilities (e.g. mixup)
            loss = F.cross_entropy(logits, y if soft else y.long(), label_smoothing=self.label_smoothing)
            hard = y.argmax(-1) if soft else y
            metrics = {"acc": float((logits.argmax(-1) == hard).float().mean())}
            if dist is not None:
                if self.teacher is not None:  # hard distillation: (CE(labels) + CE(teacher's argmax)) / 2
                    with torch.no_grad():
                        t = self.teacher.model.logits(batch).argmax(-1)
                    term = F.cross_entropy(dist, t)
                    metrics.update(loss_labels=loss.detach(), loss_teacher=term.detach(),
                                   teacher_acc=float((t == hard).float().mean()))
                else:  # no teacher: the distillation head learns the labels too
                    term = F.cross_entropy(dist, y if soft else y.long(), label_smoothing=self.label_smoothing)
                loss = (loss + term) / 2
                metrics["acc"] = float((((logits + dist) / 2).argmax(-1) == hard).float().mean())
        if self.adversary is not None:  # FMAE-IAT: loss = task loss + BCE(adversary head, one-hot label)
            adv = self.adversary(f)
            if self.adversary_key not in batch:
                raise MaeError(f"adversary: the batch has no {self.adversary_key!r} (it has {', '.join(batch)})")
            a = batch[self.adversary_key].long()
            term = F.binary_cross_entropy_with_logits(adv, F.one_hot(a, adv.shape[-1]).to(adv.dtype))
            metrics.update(loss_task=loss.detach(), loss_adversary=term.detach(),
                           adversary_acc=float((adv.argmax(-1) == a).float().mean()))
            loss = loss + term
        return ModelOutput(loss=loss, pred=logits, metrics=metrics)

    def num_layers(self) -> int:
        return self.backbone.num_layers() if hasattr(self.backbone, "num_layers") else 1

    def layer_id(self, name: str) -> int:
        if name.startswith("backbone.") and hasattr(self.backbone, "layer_id"):
            return min(self.backbone.layer_id(name[len("backbone."):]), self.num_layers())
        return self.num_layers()


@torch.no_grad()
def evaluate_classifier(model: Classifier, dataset: Dataset, batch_size: int = 256, device="cpu",
                        collate_fn=collate_dicts) -> dict:
    from .linear import mean_auc

    model.eval()
    logits, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn):
        batch = move_to(batch, device)
        logits.append(model.logits(batch).float().cpu())
        labels.append(batch["label"].cpu())
    logits, labels = torch.cat(logits), torch.cat(labels)
    if model.multilabel:
        from .multilabel import best_threshold_f1, mean_f1
        probs = torch.sigmoid(logits)
        best, at = best_threshold_f1(probs, labels)
        return {"auc": mean_auc(probs, labels), "f1": mean_f1(probs, labels), "f1_best": best, "f1_best_threshold": at}
    return {"acc": float((logits.argmax(-1) == labels).float().mean())}


def finetune(backbone: nn.Module, train_set: Dataset, test_set: Dataset, num_classes: int, config: TrainConfig,
             layer_decay: float | None = 0.75, drop_path: float = 0.1, pool: str | None = "mean",
             multilabel: bool = False, label_smoothing: float = 0.1, run_dir=None, collate_fn=collate_dicts,
             eval_every_epoch: bool = False, distill_token: bool = False,
             teacher: nn.Module | None = None, adversary_key: str = "", adversary_classes: int = 0,
             adversary_lambda: float = 1.0) -> tuple[Classifier, dict]:
    """Fine-tune ``backbone`` + a linear head end to end; returns the classifier and its test metrics.
    ``distill_token`` + ``teacher``: hard distillation from a frozen classifier; ``adversary_*``: a
    gradient-reversal head on ``batch[adversary_key]`` (module docstring)."""
    if drop_path and hasattr(backbone, "encoder") and hasattr(backbone.encoder, "set_drop_path"):
        backbone.encoder.set_drop_path(drop_path)
    model = Classifier(backbone, num_classes, pool=pool, multilabel=multilabel, label_smoothing=label_smoothing,
                       distill_token=distill_token, teacher=teacher, adversary_key=adversary_key,
                       adversary_classes=adversary_classes, adversary_lambda=adversary_lambda)

    def groups(m):
        return param_groups(m, config.weight_decay, layer_decay=layer_decay, layer_id=m.layer_id,
                            num_layers=m.num_layers())

    def on_epoch_end(trainer, epoch):
        if eval_every_epoch:
            return {f"test_{k}": v for k, v in evaluate_classifier(model, test_set, device=trainer.device,
                                                                    collate_fn=collate_fn).items()}
        return None

    trainer = Trainer(model, train_set, config, run_dir=run_dir, groups_fn=groups, collate_fn=collate_fn,
                      on_epoch_end=on_epoch_end)
    summary = trainer.fit()
    metrics = evaluate_classifier(model, test_set, device=trainer.device, collate_fn=collate_fn)
    summary.update({f"test_{k}": v for k, v in metrics.items()})
    return model, summary


HEAD_WEIGHTS = "head.safetensors"


def classifier_head_state(model: Classifier) -> dict[str, torch.Tensor]:
    """Everything of a classifier that is not its backbone (head, norm, distillation token and head): what a
    fine-tuning run saves as ``head.safetensors`` beside the backbone's ``model.safetensors``."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def load_classifier(directory: str | Path) -> Classifier:
    """A fine-tuned classifier from a ``finetune`` output directory (backbone ``model.safetensors`` + ``config.json``
    with ``num_classes`` and the fine-tuning options, ``head.safetensors``), in eval mode."""
    from safetensors.torch import load_file

    from ..checkpoint import CONFIG, from_pretrained

    directory = Path(directory)
    if not (directory / HEAD_WEIGHTS).is_file() or not (directory / CONFIG).is_file():
        raise MaeError(f"{directory}: not a fine-tuned classifier (no {HEAD_WEIGHTS} / {CONFIG}: give a finetune "
                       "output directory)")
    meta = json.loads((directory / CONFIG).read_text())
    ft = meta.get("run_config", {}).get("finetune", {})
    state = load_file(str(directory / HEAD_WEIGHTS))
    adv = state.get("adversary.linear.weight")
    model = Classifier(from_pretrained(directory), int(meta["num_classes"]), pool=ft.get("pool", "mean"),
                       multilabel=bool(meta.get("multilabel", False)), distill_token="dist_token" in state,
                       adversary_key=ft.get("adversary", "") if adv is not None else "",
                       adversary_classes=0 if adv is None else adv.shape[0],
                       adversary_lambda=float(ft.get("adversary_lambda", 1.0)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise MaeError(f"{directory / HEAD_WEIGHTS}: head weights do not match (missing {missing}, unexpected "
                       f"{unexpected})")
    return model.eval()
