"""N-way K-shot episodes and classifiers (mae_core.eval.fewshot), and mae_core.eval.svm.few_shot unchanged."""
import warnings

import numpy as np
import pytest
import torch

from mae_core.eval import FEWSHOT_CLASSIFIERS, classify_episode, few_shot_eval, sample_episodes
from mae_core.eval.svm import _fit_svm, few_shot


def _old_few_shot(features, labels, way=5, shot=10, query=20, folds=10, seed=0, c=1.0, test_features=None,
                  test_labels=None):
    """The episode loop of ``mae_core.eval.svm.few_shot`` before the episodes moved to ``eval/fewshot.py``,
    preserved verbatim as the reference."""
    from sklearn.exceptions import ConvergenceWarning

    x, y = features.float().cpu().numpy(), labels.long().cpu().numpy()
    xq_all = test_features.float().cpu().numpy() if test_features is not None else x
    yq_all = test_labels.long().cpu().numpy() if test_labels is not None else y
    separate = test_features is not None
    classes = [k for k in np.unique(y) if (y == k).sum() >= shot + (0 if separate else query)
               and (not separate or (yq_all == k).sum() >= query)]
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(folds):
        chosen = rng.choice(classes, way, replace=False)
        sx, sy, qx, qy = [], [], [], []
        for j, k in enumerate(chosen):
            idx = rng.permutation(np.flatnonzero(y == k))
            sx.append(x[idx[:shot]])
            sy += [j] * shot
            if separate:
                qidx = rng.permutation(np.flatnonzero(yq_all == k))[:query]
                qx.append(xq_all[qidx])
            else:
                qx.append(x[idx[shot:shot + query]])
            qy += [j] * query
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf, _ = _fit_svm(np.concatenate(sx), np.array(sy), (c,), seed=seed)
        accs.append(float((clf.predict(np.concatenate(qx)) == np.array(qy)).mean()) * 100)
    return {"acc": float(np.mean(accs)), "std": float(np.std(accs)), "folds": folds, "way": way, "shot": shot,
            "query": query}


def _clusters(n_classes=8, per_class=30, dim=16, spread=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    return torch.randn(n_classes, dim, generator=g)[y] * spread + torch.randn(len(y), dim, generator=g), y


def test_svm_few_shot_equals_the_previous_code():
    x, y = _clusters(seed=0)
    xt, yt = _clusters(per_class=25, seed=1)
    xt = xt + 0.5  # a shifted test pool
    for seed in (0, 3):
        new = few_shot(x, y, way=5, shot=5, query=10, folds=6, seed=seed)
        assert new == _old_few_shot(x, y, way=5, shot=5, query=10, folds=6, seed=seed)
        assert 50 < new["acc"] < 100  # not a saturated case: the classifier's errors must match too
        sep = few_shot(x, y, way=5, shot=5, query=20, folds=6, seed=seed, test_features=xt, test_labels=yt)
        assert sep == _old_few_shot(x, y, way=5, shot=5, query=20, folds=6, seed=seed, test_features=xt,
                                    test_labels=yt)
    assert few_shot(x, y, folds=3, seed=1, c=0.01) == _old_few_shot(x, y, folds=3, seed=1, c=0.01)


def test_episodes_are_seeded_disjoint_and_labelled():
    y = np.repeat(np.arange(6), 12)
    eps = sample_episodes(y, way=4, shot=3, query=5, folds=5, seed=7)
    again = sample_episodes(torch.from_numpy(y), way=4, shot=3, query=5, folds=5, seed=7)
    other = sample_episodes(y, way=4, shot=3, query=5, folds=5, seed=8)
    assert len(eps) == 5
    assert all(np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query) for a, b in zip(eps, again))
    assert not all(np.array_equal(a.support, b.support) for a, b in zip(eps, other))
    for ep in eps:
        assert len(set(ep.classes.tolist())) == 4
        assert ep.support.shape == (12,) and ep.query.shape == (20,)
        assert not set(ep.support.tolist()) & set(ep.query.tolist())  # one pool: support and queries disjoint
        assert np.array_equal(y[ep.support], ep.classes[ep.support_labels])
        assert np.array_equal(y[ep.query], ep.classes[ep.query_labels])
    # a separate query pool: query indices point into it, by its own labels
    yq = np.repeat(np.arange(6), 7)[::-1].copy()
    for ep in sample_episodes(y, way=3, shot=10, query=7, folds=3, seed=0, query_labels=yq):
        assert np.array_equal(yq[ep.query], ep.classes[ep.query_labels])
    with pytest.raises(ValueError, match="only 0 qualify"):
        sample_episodes(y, way=2, shot=10, query=5)


def test_nearest_prototype_and_cosine_hand_computed():
    xs = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]], dtype=np.float32)
    ys = np.array([0, 0, 1, 1])
    # prototypes: class 0 mean (1, 0), class 1 mean (0, 5); cosine prototypes: directions (1, 0) and (0, 1)
    xq = np.array([[0.2, 1.5], [0.0, 3.5], [3.0, 0.1]], dtype=np.float32)
    # squared distances of (0.2, 1.5): 0.64 + 2.25 = 2.89 to class 0, 0.04 + 12.25 = 12.29 to class 1
    assert classify_episode(xs, ys, xq, "prototype").tolist() == [0, 1, 0]
    # cosine of (0.2, 1.5) is larger with (0, 1): class 1
    assert classify_episode(xs, ys, xq, "cosine").tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="classifier"):
        classify_episode(xs, ys, xq, "knn")


@pytest.mark.parametrize("classifier", FEWSHOT_CLASSIFIERS)
def test_every_classifier_separates_clusters_and_not_noise(classifier):
    x, y = _clusters(spread=4.0, seed=0)
    res = few_shot_eval(x, y, way=5, shot=5, query=10, folds=4, classifier=classifier)
    assert res["acc"] > 95 and res["classifier"] == classifier and len(res["accs"]) == 4
    assert res["ci95"] == pytest.approx(1.96 * np.std(res["accs"]) / 2)
    noise = few_shot_eval(torch.randn(len(y), 16, generator=torch.Generator().manual_seed(5)), y, way=5, shot=5,
                          query=10, folds=4, classifier=classifier)
    assert noise["acc"] < 45  # chance is 20 %


def test_same_episodes_for_every_classifier():
    x, y = _clusters(spread=0.6, seed=2)
    a = few_shot_eval(x, y, way=5, shot=2, query=10, folds=3, seed=4, classifier="prototype")
    # the same seed fixes the episodes: recompute the prototype accuracies from sample_episodes by hand
    xn = x.numpy()
    expected = []
    for ep in sample_episodes(y, way=5, shot=2, query=10, folds=3, seed=4):
        protos = np.stack([xn[ep.support][ep.support_labels == j].mean(0) for j in range(5)])
        d = ((xn[ep.query][:, None] - protos[None]) ** 2).sum(-1)
        expected.append(float((d.argmin(1) == ep.query_labels).mean()) * 100)
    assert a["accs"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="both"):
        few_shot_eval(x, y, test_features=x)
