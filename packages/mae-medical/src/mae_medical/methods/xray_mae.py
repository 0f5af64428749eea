"""Chest X-ray MAE recipe (Xiao et al., "Delving into masked autoencoders for multi-label thorax disease
classification", WACV 2023): a 2-D ViT MAE on one-channel images with

- pre-training: mask ratio 0.9, plain pixel targets (the reference commands do not pass ``--norm_pix_loss``),
  random resized crop scale 0.5-1.0 and a horizontal flip (the data's ``augment=pretrain``);
- fine-tuning (``main_finetune_chestxray.py`` with the README's flags): layer-wise lr decay 0.55, drop path 0.2,
  random resized crop 0.08-1, horizontal flip, RandAugment ``rand-m6-mstd0.5-inc1`` (``augment=finetune``), no
  mixup, no label smoothing, global average pooling of the patch tokens, AdamW betas (0.9, 0.999), base lr 2.5e-4
  (x batch / 256), 5 warm-up epochs of 75, min lr 1e-5; multi-label targets with BCE;
- metric: mean AUC over labels (MONAI ``ROCAUCMetric``, macro).

The model is mae-core's image MAE with these defaults; :func:`finetune_xray` runs the recipe's fine-tuning and
``mae-medical finetune`` applies it to an ``xray-mae`` run (flags given on the command line still win).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mae_core.config import field
from mae_core.models.image_mae import ImageMAE, ImageMAEConfig

RECIPE = {"layer_decay": 0.55, "drop_path": 0.2, "label_smoothing": 0.0, "randaugment": "rand-m6-mstd0.5-inc1",
          "pool": "mean", "mask_ratio": 0.9, "norm_pix_loss": False, "pretrain_crop_scale": (0.5, 1.0),
          "finetune_crop_scale": (0.08, 1.0), "hflip": True}
# the reference's fine-tuning optimisation (TrainConfig fields)
FINETUNE_TRAIN = {"epochs": 75, "batch_size": 128, "base_lr": 2.5e-4, "lr": None, "warmup_epochs": 5,
                  "min_lr": 1e-5, "weight_decay": 0.05, "betas": (0.9, 0.999)}


@dataclass
class XRayMAEConfig(ImageMAEConfig):
    img_size: int = field(32, "input image side in pixels")
    patch_size: int = field(4, "patch side in pixels")
    in_chans: int = field(1, "image channels (radiographs: 1)")
    embed_dim: int = field(192, "encoder width")
    depth: int = field(6, "encoder blocks")
    num_heads: int = field(3, "encoder attention heads")
    decoder_embed_dim: int = field(128, "decoder width")
    decoder_depth: int = field(2, "decoder blocks")
    decoder_num_heads: int = field(4, "decoder attention heads")
    mask_ratio: float = field(0.9, "fraction of patches hidden from the encoder (the paper's X-ray setting)")
    norm_pix_loss: bool = field(False, "normalise each target patch by its own mean and variance (the reference "
                                       "X-ray commands leave it off)")


class XRayMAE(ImageMAE):
    method_name = "xray-mae"
    pool = "mean"  # global average pooling (the recipe)

    def __init__(self, config: XRayMAEConfig):
        super().__init__(config)


def monai_mean_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean AUC over labels with MONAI's ``ROCAUCMetric(average="macro")``; single-label scores (N, C) are one-hot
    compared against their classes."""
    from monai.metrics import ROCAUCMetric

    if labels.ndim == 1:
        y = torch.nn.functional.one_hot(labels.long(), scores.shape[1])
    else:
        y = labels
    if scores.shape[1] == 2 and labels.ndim == 1:  # binary: the AUC of the positive class
        scores, y = scores[:, 1:], y[:, 1:]
    m = ROCAUCMetric(average="macro")
    m(y_pred=scores.float(), y=y.float())
    return float(m.aggregate())


def finetune_xray(backbone, train_set, test_set, num_classes: int, train_config, run_dir=None) -> tuple:
    """Fine-tune with the recipe (layer decay 0.55, drop path 0.2, no label smoothing, GAP, BCE for multi-label);
    ``train_config`` sets the optimisation (the reference's is :data:`FINETUNE_TRAIN`) and the data sets bring
    their augmentation (``augment="finetune"`` for the recipe). Returns (classifier, summary with test mean AUC
    (MONAI) and accuracy for single-label data)."""
    from mae_core.eval import finetune
    from mae_core.train.trainer import move_to
    from torch.utils.data import DataLoader

    multilabel = bool(getattr(train_set, "multilabel", False))
    clf, summary = finetune(backbone, train_set, test_set, num_classes, train_config,
                            layer_decay=RECIPE["layer_decay"], drop_path=RECIPE["drop_path"], pool="mean",
                            multilabel=multilabel, label_smoothing=RECIPE["label_smoothing"], run_dir=run_dir)
    clf.eval()
    scores, labels = [], []
    dev = next(clf.parameters()).device
    with torch.no_grad():
        for batch in DataLoader(test_set, batch_size=256):
            batch = move_to(batch, dev)
            logits = clf.logits(batch).float()
            scores.append(torch.sigmoid(logits) if multilabel else torch.softmax(logits, -1))
            labels.append(batch["label"])
    s, y = torch.cat(scores).cpu(), torch.cat(labels).cpu()
    summary["test_auc_monai"] = monai_mean_auc(s, y)
    if not multilabel:
        summary["test_acc"] = float((s.argmax(-1) == y).float().mean())
    return clf, summary
