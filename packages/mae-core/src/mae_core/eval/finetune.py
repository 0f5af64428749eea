"""Fine-tuning with layer-wise lr decay and drop path, on top of any model that has ``encode`` and ``layer_id``."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..data.utils import collate_dicts
from ..models.mae import ModelOutput
from ..train.optim import param_groups
from ..train.trainer import Trainer, TrainConfig, move_to


class Classifier(nn.Module):
    """backbone.encode(batch) -> (optional norm) -> linear head. Single- or multi-label loss."""

    def __init__(self, backbone: nn.Module, num_classes: int, pool: str | None = "mean", multilabel: bool = False,
                 label_smoothing: float = 0.0):
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

    def logits(self, batch: dict) -> torch.Tensor:
        f = self.backbone.encode(batch, pool=self.pool) if self.pool else self.backbone.encode(batch)
        return self.head(self.fc_norm(f))

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        logits = self.logits(batch)
        y = batch["label"]
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
            metrics = {}
        else:
            soft = y.is_floating_point() and y.ndim == 2  # class probabilities (e.g. mixup)
            loss = F.cross_entropy(logits, y if soft else y.long(), label_smoothing=self.label_smoothing)
            hard = y.argmax(-1) if soft else y
            metrics = {"acc": float((logits.argmax(-1) == hard).float().mean())}
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
        return {"auc": mean_auc(torch.sigmoid(logits), labels)}
    return {"acc": float((logits.argmax(-1) == labels).float().mean())}


def finetune(backbone: nn.Module, train_set: Dataset, test_set: Dataset, num_classes: int, config: TrainConfig,
             layer_decay: float | None = 0.75, drop_path: float = 0.1, pool: str | None = "mean",
             multilabel: bool = False, label_smoothing: float = 0.1, run_dir=None, collate_fn=collate_dicts,
             eval_every_epoch: bool = False) -> tuple[Classifier, dict]:
    """Fine-tune ``backbone`` + a linear head end to end; returns the classifier and its test metrics."""
    if drop_path and hasattr(backbone, "encoder") and hasattr(backbone.encoder, "set_drop_path"):
        backbone.encoder.set_drop_path(drop_path)
    model = Classifier(backbone, num_classes, pool=pool, multilabel=multilabel, label_smoothing=label_smoothing)

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
