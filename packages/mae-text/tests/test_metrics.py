import math

import pytest

from mae_text.retrieval import evaluate_rankings, exact_search, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_hand_computed():
    rels = {"a": 1, "b": 1}
    # relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    got = ndcg_at_k(["x", "a", "y", "b"], rels, 10)
    want = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert got == pytest.approx(want)
    assert ndcg_at_k(["a", "b"], rels) == pytest.approx(1.0)
    assert ndcg_at_k(["x"] * 10 + ["a"], rels, 10) == 0.0
    # graded relevance, linear gains: rank 1 has rel 1, rank 2 rel 2 -> (1 + 2/log2 3) / (2 + 1/log2 3)
    assert ndcg_at_k(["a", "c"], {"a": 1, "c": 2}) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_mrr_recall_hand_computed():
    assert mrr_at_k(["x", "y", "a"], {"a": 1}) == pytest.approx(1 / 3)
    assert mrr_at_k(["x"] * 10 + ["a"], {"a": 1}, 10) == 0.0
    assert recall_at_k(["a", "x"], {"a": 1, "b": 1}, 100) == 0.5
    assert recall_at_k(["x"] * 100 + ["a"], {"a": 1}, 100) == 0.0


def test_evaluate_rankings_means_and_missing_ranking():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    res = evaluate_rankings({"q1": ["a"], "q2": ["x", "b"]}, qrels)
    assert res["queries"] == 2
    assert res["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert res["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    res = evaluate_rankings({"q1": ["a"]}, qrels)  # q2 has no ranking: scores 0
    assert res["recall@100"] == pytest.approx(0.5)


def test_exact_search_orders_by_inner_product():
    import torch
    d = torch.tensor([[1.0, 0], [0, 1.0], [0.7, 0.7]])
    q = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    r = exact_search(q, d, ["a", "b", "c"], ["q1", "q2"], k=2)
    assert r == {"q1": ["a", "c"], "q2": ["b", "c"]}


def test_ndcg_ignores_negative_grades_as_trec_eval():
    # trec_eval's ndcg_cut adds only positive gains: a -1 judged document at rank 1 is worth 0, not -1
    got = ndcg_at_k(["bad", "a"], {"a": 1, "bad": -1})
    assert got == pytest.approx((1 / math.log2(3)) / 1.0)


def _tie_orders(ids, scores):
    """Every ranking of ``ids`` by decreasing score, tied documents in every order."""
    import itertools

    groups = [[d for d, s in zip(ids, scores) if s == v] for v in sorted(set(scores), reverse=True)]
    for perm in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [d for g in perm for d in g]


@pytest.mark.parametrize("seed", range(8))
def test_ndcg_equals_sklearn_on_random_graded_runs_with_ties(seed):
    """sklearn's ndcg_score (linear gains, log2 discount) equals ours when every judged document is a candidate;
    for tied scores sklearn averages the gains of the tied block, which is our nDCG averaged over every order of the
    tied documents (trec_eval instead picks one order: document id, descending)."""
    import numpy as np
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(5, 9)), int(rng.integers(2, 7))
    ids = [f"d{i}" for i in range(n)]
    grades = rng.integers(0, 4, n)
    grades[0] = max(grades[0], 1)
    rels = {d: int(r) for d, r in zip(ids, grades)}
    tied = rng.integers(0, 4, n).astype(float)  # few distinct scores: ties
    orders = list(_tie_orders(ids, list(tied)))
    ours = sum(ndcg_at_k(o, rels, k) for o in orders) / len(orders)
    assert ours == pytest.approx(ndcg_score(grades[None], tied[None], k=k), abs=1e-12)
    distinct = rng.permutation(n).astype(float)  # no ties: one ranking, the same value
    ranked = [ids[i] for i in np.argsort(-distinct)]
    assert ndcg_at_k(ranked, rels, k) == pytest.approx(ndcg_score(grades[None], distinct[None], k=k), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_mrr_and_recall_equal_sklearn_with_one_relevant_document(seed):
    """One relevant document per query: reciprocal rank = sklearn's label ranking average precision, and mean
    Recall@k = sklearn's top-k accuracy."""
    import numpy as np
    from sklearn.metrics import label_ranking_average_precision_score, top_k_accuracy_score

    rng = np.random.default_rng(seed)
    nq, n, k = 12, 9, 3
    scores = rng.random((nq, n))
    target = rng.integers(0, n, nq)
    ids = [f"d{i}" for i in range(n)]
    rankings = {f"q{j}": [ids[i] for i in np.argsort(-scores[j])] for j in range(nq)}
    qrels = {f"q{j}": {ids[target[j]]: 1} for j in range(nq)}
    onehot = np.eye(n, dtype=int)[target]
    mrr = np.mean([mrr_at_k(rankings[q], qrels[q], n) for q in rankings])
    assert mrr == pytest.approx(label_ranking_average_precision_score(onehot, scores), abs=1e-12)
    rec = np.mean([recall_at_k(rankings[q], qrels[q], k) for q in rankings])
    assert rec == pytest.approx(top_k_accuracy_score(target, scores, k=k, labels=np.arange(n)), abs=1e-12)
