"""Shared metrics against maintained implementations and hand-computed values."""
import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from mae_core.eval import mean_auc


def test_mean_auc_hand_computed_with_ties():
    # positives 0.5, 0.9 against negatives 0.1, 0.5: pairs won 1, 1, 1 and one tie (0.5 vs 0.5) = 3.5 / 4
    s = torch.tensor([[0.1], [0.5], [0.5], [0.9]])
    y = torch.tensor([[0], [0], [1], [1]])
    assert mean_auc(s, y) == pytest.approx(0.875)
    assert mean_auc(torch.zeros(6, 1), torch.tensor([[0], [1], [0], [1], [1], [0]])) == 0.5  # all tied: chance


def _auc_midranks(s: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney U / (n+ n-) with average ranks for ties: an independent formula for the ROC AUC."""
    r = rankdata(s)
    npos, nneg = int(y.sum()), int((~y).sum())
    return (r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg)


@pytest.mark.parametrize("seed", range(5))
def test_mean_auc_equals_sklearn_on_random_tied_multilabel(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(5, 60)), int(rng.integers(1, 6))
    scores = np.round(rng.random((n, c)), 1)  # one decimal: many ties
    scores[:, 0] = 0.3  # a column of all-tied scores
    labels = rng.random((n, c)) < 0.4
    labels[0, :], labels[1, :] = True, False  # every column has both classes ...
    if c > 2:
        labels[:, 2] = True  # ... except one, which is skipped
    valid = [j for j in range(c) if 0 < labels[:, j].sum() < n]
    want_sklearn = np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in valid])
    want_ranks = np.mean([_auc_midranks(scores[:, j], labels[:, j]) for j in valid])
    got = mean_auc(torch.from_numpy(scores).float(), torch.from_numpy(labels).long())
    assert got == pytest.approx(want_sklearn, abs=1e-6) and got == pytest.approx(want_ranks, abs=1e-6)


def test_mean_auc_without_a_usable_column_is_zero():
    assert mean_auc(torch.rand(4, 2), torch.ones(4, 2)) == 0.0
