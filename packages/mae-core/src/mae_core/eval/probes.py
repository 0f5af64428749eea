"""The probe registry: frozen-feature evaluations by name (``linear``, ``knn``, ``prototypical``; domains add
``svm``, ``logreg``, ...), run by :func:`mae_core.probe` and ``mae-<domain> probe``.

A probe is ``fn(model, train_set, test_set, config: ProbeConfig, cache) -> dict of metrics``; ``cache`` holds the
frozen features of a probe run so that several probes extract them once (:func:`cached_features`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..config import field
from ..errors import ConfigError


@dataclass
class ProbeConfig:
    """Options of a probe run (the ``probe`` command's flags, with the same names)."""

    probe: str = field("linear,knn", "comma-separated probes (see mae_core.eval.probes.PROBES)")
    probe_epochs: int | None = field(None, "epochs of the linear / prototypical probe (default: 100; 90 with "
                                           "--recipe mae)", ge=1)
    probe_lr: float | None = field(None, "learning rate of the linear / prototypical head (default: 0.01; "
                                         "0.1 x batch / 256 with --recipe mae)", gt=0)
    recipe: str = field("adamw", "linear probe training: adamw (AdamW, cosine, 100 epochs) or mae (the MAE paper's "
                                 "main_linprobe.py: LARS, no weight decay, 90 epochs with 10 warm-up)",
                        choices=["adamw", "mae"])
    probe_batch_size: int = field(256, "batch size for feature extraction", ge=1)
    probe_seed: int = field(0, "seed of the probe")
    k: int = field(20, "neighbours of the kNN probe", ge=1)
    knn_whiten: float = field(0.01, "PCA-whiten features before the cosine kNN with this eigenvalue shrinkage "
                                     "(x the largest); 0 = raw features", ge=0)
    label_fraction: float = field(1.0, "fraction of training labels used", gt=0, le=1)
    random_init: bool = field(False, "probe a randomly initialised encoder instead of the run's")
    device: Any = None  # torch.device the features are computed on; set by mae_core.probe

    def names(self) -> list[str]:
        names = [n.strip() for n in self.probe.split(",") if n.strip()]
        for n in names:
            if n not in PROBES:
                raise ConfigError(f"unknown probe {n!r}; choose from {', '.join(PROBES)}")
        return names


PROBES: dict[str, Callable] = {}


def register_probe(name: str, fn: Callable) -> None:
    """Register ``fn(model, train_set, test_set, config: ProbeConfig, cache) -> dict`` under ``name``."""
    PROBES[name] = fn


def dataset_collate(ds) -> Callable:
    """The dataset's own ``collate_fn`` if it has one, else the dict collate."""
    from ..data.utils import collate_dicts
    return getattr(ds, "collate_fn", None) or collate_dicts


def num_classes(ds) -> int:
    if hasattr(ds, "num_classes"):
        return int(ds.num_classes)
    from ..data.utils import dataset_labels
    return int(dataset_labels(ds).max()) + 1


def require_labels(ds, model, label_key: str = "label") -> None:
    """Probes, few-shot and fine-tuning need labelled samples: a one-line error (with the model's
    ``unlabelled_hint``, if it has one) instead of a KeyError deep inside feature extraction."""
    from ..errors import MaeError
    if len(ds) and label_key not in ds[0]:
        hint = getattr(model, "unlabelled_hint", None)
        raise MaeError(f"{type(ds).__name__}: the samples have no {label_key!r} for probes / fine-tuning"
                       + (f"; {hint}" if hint else ""))


def cached_features(model, ds, cache: dict, key: str, device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen ``encode`` features and labels of ``ds``, computed once per probe run (``cache[key]``)."""
    from .features import extract_features
    if key not in cache:
        cache[key] = extract_features(model, ds, batch_size=batch_size, device=device,
                                      collate_fn=dataset_collate(ds), progress=True)
    return cache[key]


def _train_test_features(model, train_set, test_set, cfg: ProbeConfig, cache):
    xtr, ytr = cached_features(model, train_set, cache, "train", cfg.device, cfg.probe_batch_size)
    xte, yte = cached_features(model, test_set, cache, "test", cfg.device, cfg.probe_batch_size)
    return xtr, ytr, xte, yte


def probe_linear(model, train_set, test_set, cfg: ProbeConfig, cache) -> dict:
    """BatchNorm + linear classifier on frozen features (MAE's linear probe); multi-label when labels are 2-D."""
    from .linear import linear_probe
    xtr, ytr, xte, yte = _train_test_features(model, train_set, test_set, cfg, cache)
    multilabel = ytr.ndim == 2
    return linear_probe(xtr, ytr, xte, yte, num_classes=None if multilabel else num_classes(train_set),
                        epochs=cfg.probe_epochs, lr=cfg.probe_lr, multilabel=multilabel, seed=cfg.probe_seed,
                        recipe=cfg.recipe)


def probe_knn(model, train_set, test_set, cfg: ProbeConfig, cache) -> dict:
    """Weighted cosine kNN on (optionally PCA-whitened) frozen features; single-label only."""
    from .knn import knn_classify
    xtr, ytr, xte, yte = _train_test_features(model, train_set, test_set, cfg, cache)
    if ytr.ndim == 2:
        return {}
    return knn_classify(xtr, ytr, xte, yte, k=cfg.k, num_classes=num_classes(train_set), whiten=cfg.knn_whiten)


def probe_prototypical(model, train_set, test_set, cfg: ProbeConfig, cache) -> dict:
    from .prototypical import probe_prototypical as run
    return run(model, train_set, test_set, cfg, cache)


register_probe("linear", probe_linear)
register_probe("knn", probe_knn)
register_probe("prototypical", probe_prototypical)


def probe_segmentation(model, train_set, test_set, cfg: ProbeConfig, cache) -> dict:
    from .grid import probe_segmentation as run
    return run(model, train_set, test_set, cfg, cache)


register_probe("segmentation", probe_segmentation)
