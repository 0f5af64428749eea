"""Linear SVM on frozen features with a fixed train / test split (the protocol of point-cloud self-supervised
papers: FoldingNet, Point-BERT, Point-MAE "linear SVM on ModelNet"), and N-way K-shot evaluation over repeated
random folds with the same classifier (the episodes live in :mod:`mae_core.eval.fewshot`).

Features are standardised with the training statistics; C is chosen by stratified cross-validation on the training
features from ``c_grid`` (skipped when only one value is given or a class has fewer than 2 samples). The CLI probe
is ``svm`` (registered by a domain package with ``mae_core.cli.register_probe("svm", probe_svm)``).
"""
from __future__ import annotations

import numpy as np
import torch

C_GRID = (0.01, 0.1, 1.0)


def _fit_svm(x: np.ndarray, y: np.ndarray, c_grid=C_GRID, cv: int = 3, seed: int = 0):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    pipe = make_pipeline(StandardScaler(), SVC(C=float(c_grid[0]), kernel="linear"))
    counts = np.bincount(y)
    folds = int(min(cv, counts[counts > 0].min()))
    if len(c_grid) > 1 and folds >= 2:
        search = GridSearchCV(pipe, {"svc__C": [float(c) for c in c_grid]},
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        search.fit(x, y)
        return search.best_estimator_, float(search.best_params_["svc__C"])
    pipe.fit(x, y)
    return pipe, float(c_grid[0])


def linear_svm(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
               c_grid=C_GRID, seed: int = 0) -> dict:
    """Test accuracy of a linear SVM (``SVC(kernel="linear")``, as Point-BERT / Point-MAE) trained on frozen
    training features."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    xtr, ytr = x_train.float().cpu().numpy(), y_train.long().cpu().numpy()
    xte, yte = x_test.float().cpu().numpy(), y_test.long().cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf, c = _fit_svm(xtr, ytr, c_grid, seed=seed)
    return {"acc": float((clf.predict(xte) == yte).mean()), "train_acc": float((clf.predict(xtr) == ytr).mean()),
            "C": c}


def few_shot(features: torch.Tensor, labels: torch.Tensor, way: int = 5, shot: int = 10, query: int = 20,
             folds: int = 10, seed: int = 0, c: float = 1.0, test_features: torch.Tensor | None = None,
             test_labels: torch.Tensor | None = None) -> dict:
    """N-way K-shot accuracy over ``folds`` random episodes (Point-BERT / Point-MAE protocol: 10 folds, 20 queries
    per class): each fold draws ``way`` classes, ``shot`` support and ``query`` query samples per class (queries from
    the test features when given), trains a linear SVM on the support features and scores the queries.
    Returns mean and std of the fold accuracies in percent. :func:`mae_core.eval.fewshot.few_shot_eval` with
    ``classifier="svm"``; it also offers logistic regression and nearest-prototype classifiers."""
    from .fewshot import few_shot_eval

    res = few_shot_eval(features, labels, way=way, shot=shot, query=query, folds=folds, seed=seed,
                        classifier="svm", c=c, test_features=test_features, test_labels=test_labels)
    return {k: res[k] for k in ("acc", "std", "folds", "way", "shot", "query")}


def probe_svm(model, train_set, test_set, args, cache) -> dict:
    """The ``svm`` CLI probe: linear SVM on the frozen ``encode`` features of the train split, scored on test."""
    from .probes import cached_features

    xtr, ytr = cached_features(model, train_set, cache, "train", args.device, args.probe_batch_size)
    xte, yte = cached_features(model, test_set, cache, "test", args.device, args.probe_batch_size)
    if ytr.ndim == 2:
        return {}
    return linear_svm(xtr, ytr, xte, yte, seed=getattr(args, "probe_seed", 0))
