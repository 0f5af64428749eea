"""N-way K-shot evaluation on frozen features over repeated random episodes.

An episode draws ``way`` classes, then ``shot`` support and ``query`` query samples of each; a classifier fitted on
the support features labels the queries; the accuracy is averaged over ``folds`` episodes. Queries come from the
same pool as the support (disjoint samples) or, with ``test_features``, from a separate pool (a test split).

Classifiers:

- ``"svm"``: standardised features + linear SVM (``SVC(kernel="linear", C=c)``), the Point-BERT / Point-MAE
  protocol (10 folds, 20 queries per class);
- ``"logistic"``: multinomial logistic regression on the raw features (``LogisticRegression(C=c)``), as the
  CDFSL-V authors' evaluation script;
- ``"prototype"``: nearest class mean in squared Euclidean distance (Prototypical Networks);
- ``"cosine"``: nearest class mean of the L2-normalised features by cosine similarity (SimpleShot-style, common
  in few-shot video evaluation).

Episodes are drawn with ``numpy.random.default_rng(seed)``, so a seed fixes every episode whatever the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FEWSHOT_CLASSIFIERS = ("svm", "logistic", "prototype", "cosine")


@dataclass
class Episode:
    """One episode. ``classes[j]`` is the original label of episode class j; ``support`` indexes the support pool
    and ``query`` the query pool (the same pool unless a separate query set is given); labels are 0..way-1."""

    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def eligible_classes(labels, way: int, shot: int, query: int, query_labels=None) -> list:
    """Classes with enough samples: ``shot + query`` in one pool, or ``shot`` support and ``query`` in the query
    pool. ValueError (one line) when fewer than ``way`` qualify."""
    y = _numpy(labels).astype(np.int64)
    yq = _numpy(query_labels).astype(np.int64) if query_labels is not None else None
    separate = yq is not None
    classes = [k for k in np.unique(y) if (y == k).sum() >= shot + (0 if separate else query)
               and (not separate or (yq == k).sum() >= query)]
    if len(classes) < way:
        raise ValueError(f"{way}-way {shot}-shot needs {way} classes with at least {shot} support and {query} query "
                         f"samples; only {len(classes)} qualify")
    return classes


def sample_episodes(labels, way: int = 5, shot: int = 10, query: int = 20, folds: int = 10, seed: int = 0,
                    query_labels=None) -> list[Episode]:
    """``folds`` episodes over ``labels`` (support pool) and, when given, ``query_labels`` (a separate query pool)."""
    y = _numpy(labels).astype(np.int64)
    yq = _numpy(query_labels).astype(np.int64) if query_labels is not None else None
    classes = eligible_classes(y, way, shot, query, yq)
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(folds):
        chosen = rng.choice(classes, way, replace=False)
        sup, qry = [], []
        for k in chosen:
            idx = rng.permutation(np.flatnonzero(y == k))
            sup.append(idx[:shot])
            if yq is not None:
                qry.append(rng.permutation(np.flatnonzero(yq == k))[:query])
            else:
                qry.append(idx[shot:shot + query])
        episodes.append(Episode(classes=np.asarray(chosen), support=np.concatenate(sup),
                                support_labels=np.repeat(np.arange(way), shot), query=np.concatenate(qry),
                                query_labels=np.repeat(np.arange(way), query)))
    return episodes


def _nearest_mean(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, cosine: bool) -> np.ndarray:
    xs, xq = torch.from_numpy(xs).double(), torch.from_numpy(xq).double()
    if cosine:
        xs, xq = torch.nn.functional.normalize(xs, dim=1), torch.nn.functional.normalize(xq, dim=1)
    ys_t = torch.from_numpy(ys)
    protos = torch.stack([xs[ys_t == j].mean(0) for j in range(int(ys.max()) + 1)])
    if cosine:
        return (xq @ torch.nn.functional.normalize(protos, dim=1).T).argmax(1).numpy()
    return torch.cdist(xq, protos).argmin(1).numpy()


def classify_episode(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, classifier: str = "svm", c: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """Fit ``classifier`` on the support (xs, ys in 0..way-1) and predict the queries xq."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    if classifier in ("prototype", "cosine"):
        return _nearest_mean(xs, ys, xq, cosine=classifier == "cosine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if classifier == "svm":
            from .svm import _fit_svm
            clf, _ = _fit_svm(xs, ys, (c,), seed=seed)
        elif classifier == "logistic":
            from sklearn.linear_model import LogisticRegression
            clf = LogisticRegression(C=c, max_iter=1000, random_state=seed).fit(xs, ys)
        else:
            raise ValueError(f"few-shot classifier must be one of {FEWSHOT_CLASSIFIERS}, got {classifier!r}")
    return clf.predict(xq)


def few_shot_eval(features, labels, way: int = 5, shot: int = 10, query: int = 20, folds: int = 10, seed: int = 0,
                  classifier: str = "svm", c: float = 1.0, test_features=None, test_labels=None) -> dict:
    """Mean and std (percent) of the query accuracy over ``folds`` episodes, with a 95 % interval of the mean
    (``1.96 * std / sqrt(folds)``) and the per-episode accuracies."""
    if classifier not in FEWSHOT_CLASSIFIERS:
        raise ValueError(f"few-shot classifier must be one of {FEWSHOT_CLASSIFIERS}, got {classifier!r}")
    if (test_features is None) != (test_labels is None):
        raise ValueError("few-shot: give both test_features and test_labels, or neither")
    x = _numpy(features).astype(np.float32)
    xq_all = _numpy(test_features).astype(np.float32) if test_features is not None else x
    episodes = sample_episodes(labels, way, shot, query, folds, seed, test_labels)
    accs = []
    for ep in episodes:
        pred = classify_episode(x[ep.support], ep.support_labels, xq_all[ep.query], classifier, c, seed)
        accs.append(float((pred == ep.query_labels).mean()) * 100)
    return {"acc": float(np.mean(accs)), "std": float(np.std(accs)), "folds": folds, "way": way, "shot": shot,
            "query": query, "classifier": classifier, "ci95": float(1.96 * np.std(accs) / np.sqrt(folds)),
            "accs": accs}
