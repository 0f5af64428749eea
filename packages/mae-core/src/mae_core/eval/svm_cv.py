"""SVM on frozen features with stratified k-fold cross-validation and an inner grid search over C (the protocol of
graph-level self-supervised papers, e.g. InfoGraph / GraphMAE: 10 folds, C in {1e-3, 1e-2, 1e-1, 1, 10})."""
from __future__ import annotations

import numpy as np
import torch


def svm_cv(features: torch.Tensor, labels: torch.Tensor, folds: int = 10, seed: int = 0,
           c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0), inner_folds: int = 5) -> dict:
    """Mean / std of the test accuracy of ``SVC`` over ``folds`` stratified folds (``shuffle=True``,
    ``random_state=seed``); C is chosen per fold by ``GridSearchCV`` on the training part."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    x = features.float().cpu().numpy()
    y = labels.long().cpu().numpy()
    counts = np.bincount(y)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        raise ValueError("svm_cv needs at least two samples of every class")
    accs = []
    for tr, te in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        inner = int(min(inner_folds, np.bincount(y[tr])[np.bincount(y[tr]) > 0].min()))
        clf = GridSearchCV(SVC(random_state=42), {"C": list(c_grid)}, cv=max(inner, 2))
        clf.fit(x[tr], y[tr])
        accs.append(float((clf.predict(x[te]) == y[te]).mean()))
    return {"acc": float(np.mean(accs)), "std": float(np.std(accs)), "folds": folds}
