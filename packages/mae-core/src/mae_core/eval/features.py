"""Frozen features for probes: ``model.encode(batch) -> (B, F)``; probes never look inside a model."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.utils import collate_dicts
from ..train.trainer import move_to


@torch.no_grad()
def extract_features(model, dataset: Dataset, batch_size: int = 256, device="cpu", pool: str | None = None,
                     collate_fn=collate_dicts, label_key: str = "label", progress: bool = False):
    """(features (N, F) float32 on CPU, labels (N, ...)) in dataset order."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    if progress:
        from tqdm.auto import tqdm
        loader = tqdm(loader, desc="features", unit="batch", leave=False)
    feats, labels = [], []
    for batch in loader:
        batch = move_to(batch, device)
        f = model.encode(batch, pool=pool) if pool is not None else model.encode(batch)
        feats.append(f.float().cpu())
        labels.append(batch[label_key].cpu())
    return torch.cat(feats), torch.cat(labels)
