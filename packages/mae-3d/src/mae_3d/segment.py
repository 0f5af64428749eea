"""R-MAE downstream: per-voxel semantic segmentation (ground, car, pedestrian, pole, building) with a light head.

The head is one linear layer per patch token predicting the class of each of the patch's voxels (SETR-naive style);
encoder and head are trained with mae-core's Trainer on a few labelled scans, the loss is cross-entropy over the
occupied labelled voxels, and the score is the mean IoU over the classes on the test scans' occupied voxels.
Run it on a pretrained encoder and on the same architecture from scratch to see what pretraining buys.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from mae_core.data.utils import collate_dicts
from mae_core.layers import unpatchify
from mae_core.models.mae import ModelOutput
from mae_core.train import TrainConfig, Trainer
from mae_core.train.trainer import move_to


class VoxelSegmenter(nn.Module):
    def __init__(self, backbone, num_classes: int, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.backbone = backbone
        backbone.decoder = None
        c = backbone.config
        self.num_classes = num_classes
        self.head = nn.Linear(c.embed_dim, math.prod(c.patch) * num_classes)
        self.config = c

    def logits(self, batch) -> torch.Tensor:
        """(B, C, X, Y, Z) class logits of every voxel."""
        feats = self.backbone.forward_features(batch)
        return unpatchify(self.head(feats), self.config.patch, self.backbone.tokens_grid, self.num_classes)

    def forward(self, batch, generator=None) -> ModelOutput:
        logits = self.logits(batch)
        y = batch["voxel_label"]
        loss = F.cross_entropy(logits, y, weight=self.class_weights, ignore_index=-1) if bool((y >= 0).any()) \
            else logits.sum() * 0
        return ModelOutput(loss=loss, pred=logits)

    def layer_id(self, name):
        return self.backbone.layer_id(name[len("backbone."):]) if name.startswith("backbone.") else \
            self.backbone.num_layers()

    def num_layers(self):
        return self.backbone.num_layers()


@torch.no_grad()
def segmentation_miou(model: VoxelSegmenter, dataset, num_classes: int, batch_size: int = 8, device="cpu") -> dict:
    model.eval()
    inter = torch.zeros(num_classes)
    union = torch.zeros(num_classes)
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_dicts):
        batch = move_to(batch, device)
        pred = model.logits(batch).argmax(1).cpu()
        y = batch["voxel_label"].cpu()
        ok = y >= 0
        for k in range(num_classes):
            p, t = (pred == k) & ok, (y == k) & ok
            inter[k] += (p & t).sum()
            union[k] += (p | t).sum()
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
    return {"miou": float(iou[present].mean()) if present.any() else 0.0, "iou": [round(float(v), 4) for v in iou]}


def train_segmentation(backbone, train_set, test_set, num_classes: int, num_labelled: int = 8, epochs: int = 30,
                       lr: float = 1e-3, batch_size: int = 4, seed: int = 0, device: str = "cpu",
                       progress: bool = False, balanced: bool = True) -> dict:
    """Fine-tune backbone + light head on the first ``num_labelled`` training scans; mIoU on ``test_set``.

    ``balanced``: weight the cross-entropy by 1 / sqrt(class frequency) in the labelled scans (small classes such as
    poles and pedestrians are otherwise never predicted with a handful of scans)."""
    labelled = Subset(train_set, list(range(min(num_labelled, len(train_set)))))
    weights = None
    if balanced:
        y = torch.stack([labelled[i]["voxel_label"] for i in range(len(labelled))])
        counts = torch.bincount(y[y >= 0], minlength=num_classes).float()
        weights = torch.where(counts > 0, counts.clamp_min(1).rsqrt(), torch.zeros_like(counts))
        weights = weights / weights[counts > 0].mean().clamp_min(1e-12)
    model = VoxelSegmenter(backbone, num_classes, weights)
    cfg = TrainConfig(epochs=epochs, batch_size=min(batch_size, len(labelled)), lr=lr, warmup_epochs=1,
                      weight_decay=0.05, device=device, seed=seed, progress=progress, log_every=10)
    trainer = Trainer(model, labelled, cfg, run_dir=None)
    summary = trainer.fit()
    res = segmentation_miou(model, test_set, num_classes, device=trainer.device)
    res.update({"num_labelled": len(labelled), "steps": summary["steps"], "final_loss": summary["final_loss"],
                "train_time_s": round(summary["train_time_s"], 1)})
    return res
