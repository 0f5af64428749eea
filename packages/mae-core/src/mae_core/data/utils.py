"""Batching helpers for dict samples."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset
from torch.utils.data._utils.collate import default_collate


def collate_dicts(samples: list[dict]) -> dict:
    """Default collate for dict samples; keys whose value is None in any sample are dropped."""
    keys = [k for k in samples[0] if all(s.get(k) is not None for s in samples)]
    return default_collate([{k: s[k] for k in keys} for s in samples])


def dataset_labels(ds: Dataset) -> torch.Tensor:
    if hasattr(ds, "labels"):
        return torch.as_tensor(ds.labels)
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[torch.as_tensor(ds.indices)]
    return torch.as_tensor([ds[i]["label"] for i in range(len(ds))])


def label_column(ds: Dataset, key: str) -> torch.Tensor:
    """The field ``key`` of every sample, in order: the dataset's ``columns[key]`` (or ``labels`` for ``"label"``)
    when it keeps one, through Subsets, else read sample by sample."""
    if key == "label":
        return dataset_labels(ds)
    cols = getattr(ds, "columns", None)
    if isinstance(cols, dict) and key in cols:
        return torch.as_tensor(cols[key])
    if isinstance(ds, Subset):
        return label_column(ds.dataset, key)[torch.as_tensor(ds.indices)]
    return torch.as_tensor([ds[i][key] for i in range(len(ds))])


def subset_fraction(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """A class-stratified random subset with ``fraction`` of the samples (at least one per class)."""
    if fraction >= 1.0:
        return ds
    labels = dataset_labels(ds)
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        keep.append(idx[: max(1, round(len(idx) * fraction))])
    keep = torch.cat(keep).sort().values
    sub = Subset(ds, keep.tolist())
    sub.labels = labels[keep]
    for attr in ("num_classes", "mean", "std", "classes"):
        if hasattr(ds, attr):
            setattr(sub, attr, getattr(ds, attr))
    return sub
