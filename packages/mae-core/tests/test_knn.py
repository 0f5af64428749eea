"""kNN probe: weighted votes, PCA whitening."""
import torch

from mae_core.eval.knn import knn_classify, pca_whiten


def test_knn_weighted_vote_known_value():
    # test point at angle 0; train points at 10 deg (class 0), 20 deg (class 0) and 5 deg (class 1), k = 3
    ang = torch.tensor([10.0, 20.0, 5.0]).deg2rad()
    xtr = torch.stack([ang.cos(), ang.sin()], 1)
    ytr = torch.tensor([0, 0, 1])
    xte = torch.tensor([[1.0, 0.0]])
    # votes: class 0 = exp(cos10/T) + exp(cos20/T), class 1 = exp(cos5/T); with T = 0.02 class 1 wins (e^49.81
    # against e^49.24 + e^46.98), with T = 1 the two class-0 neighbours win (2.68 + 2.56 against 2.71)
    assert knn_classify(xtr, ytr, xte, torch.tensor([1]), k=3, temperature=0.02)["acc"] == 1.0
    assert knn_classify(xtr, ytr, xte, torch.tensor([0]), k=3, temperature=1.0)["acc"] == 1.0
    # k = 1: the nearest neighbour alone decides
    assert knn_classify(xtr, ytr, xte, torch.tensor([1]), k=1, temperature=1.0)["acc"] == 1.0


def test_pca_whiten_gives_identity_covariance_on_train():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 5, generator=g) @ torch.randn(5, 5, generator=g) + 3.0
    wtr, wte = pca_whiten(x, x[:10], shrink=0.0)
    assert torch.allclose(wtr.mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(wtr.T @ wtr / (len(wtr) - 1), torch.eye(5), atol=1e-3)
    assert torch.allclose(wte, wtr[:10], atol=1e-4)  # test features use the train statistics


def test_whitening_recovers_a_class_signal_hidden_by_a_nuisance_direction():
    g = torch.Generator().manual_seed(0)
    n = 1200
    y = torch.randint(0, 2, (n,), generator=g)
    # a high-variance nuisance axis (think colour) swamps a small, perfectly informative axis
    signal = (y.float() * 2 - 1) * 0.5 + 0.05 * torch.randn(n, generator=g)
    nuisance = 20.0 * torch.randn(n, 3, generator=g) + 30.0
    x = torch.cat([nuisance, signal[:, None]], 1)
    tr, te = slice(0, 1000), slice(1000, n)
    raw = knn_classify(x[tr], y[tr], x[te], y[te], k=20)["acc"]
    white = knn_classify(x[tr], y[tr], x[te], y[te], k=20, whiten=0.01)["acc"]
    assert raw < 0.7  # cosine similarity sees only the nuisance
    assert white > 0.95
