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
