"""Bird-MAE's prototypical probe against the reference: focal tokens, U[0, 1) prototypes, ||G - I||_F / numel with
weight 1, the multi-label loss averaged over batch x classes, mAP / cmAP from scikit-learn."""
import math

import pytest
import torch

from mae_audio.bird_probe import (ReferencePrototypicalHead, asymmetric_loss_mean, average_precisions,
                                  bird_mae_probe)
from mae_audio.methods import AudioMAE, AudioMAEConfig


def test_prototypes_start_uniform_0_1():
    torch.manual_seed(0)
    h = ReferencePrototypicalHead(16, 3, 20)
    p = h.prototypes.detach()
    assert p.shape == (3, 20, 16) and p.min() >= 0 and p.max() < 1
    assert 0.45 < float(p.mean()) < 0.55


def test_orthogonality_hand_computed():
    h = ReferencePrototypicalHead(2, 1, 2)
    with torch.no_grad():
        h.prototypes.copy_(torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))
    # G - I has 1/sqrt(2) off the diagonal: ||.||_F = 1, divided by 1 * 2 * 2 entries
    assert float(h.orthogonality().detach()) == pytest.approx(0.25)
    with torch.no_grad():
        h.prototypes.copy_(torch.tensor([[[3.0, 0.0], [0.0, 0.5]]]))
    assert float(h.orthogonality().detach()) == pytest.approx(0.0, abs=1e-7)


def test_multilabel_loss_is_a_mean_over_batch_and_classes():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.5, 1.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    p = torch.sigmoid(logits)
    pm = (p - 0.05).clamp(min=0)
    per = -(y * (1 - p) * torch.log(p) + (1 - y) * pm ** 4 * torch.log(1 - pm))  # gamma+ 1, gamma- 4, clip 0.05
    assert float(asymmetric_loss_mean(logits, y)) == pytest.approx(float(per.mean()), rel=1e-5)


def test_average_precisions_hand_computed():
    y = torch.tensor([[1, 0], [0, 1], [1, 0]])
    s = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2]])
    r = average_precisions(s, y)
    # class 0: positives ranked 1st and 3rd -> (1 + 2/3) / 2; class 1: its positive ranked first -> 1
    assert r["cmAP"] == pytest.approx((5 / 6 + 1.0) / 2)
    # micro: the six pairs ranked 0.9+ 0.8- 0.7+ 0.3+ 0.2- 0.1- -> (1 + 2/3 + 3/4) / 3
    assert r["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert average_precisions(s, torch.tensor([0, 1, 0]))["cmAP"] == pytest.approx(r["cmAP"])


def test_focal_tokens_are_patch_minus_cls():
    cfg = AudioMAEConfig(target_length=64, num_mel_bins=32, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16,
                         decoder_depth=1, decoder_num_heads=2)
    m = AudioMAE(cfg).eval()
    x = torch.randn(2, 1, 64, 32)
    feats = m.forward_features({"x": x})
    tokens, grid = m.token_grid({"x": x})
    assert grid == (4, 2)
    assert torch.allclose(tokens, feats[:, 1:] - feats[:, :1])
    m.config.probe_tokens = "patch"
    assert torch.allclose(m.token_grid({"x": x})[0], feats[:, 1:])


def test_probe_learns_and_reports_ap():
    torch.manual_seed(0)
    grid = (2, 2)
    centers = torch.randn(3, 8) * 3
    y = torch.arange(60) % 3
    x = centers[y][:, None, :] + 0.3 * torch.randn(60, 4, 8)
    res = bird_mae_probe(x[:45], y[:45], x[45:], y[45:], grid, 3, num_prototypes=4, epochs=30, proto_lr=0.05)
    assert res["acc"] > 0.9 and res["cmAP"] > 0.9 and 0 < res["mAP"] <= 1
    assert res["loss_last_epoch"] < res["loss_first_epoch"]
    ym = torch.nn.functional.one_hot(y, 3).float()
    res = bird_mae_probe(x[:45], ym[:45], x[45:], ym[45:], grid, 3, num_prototypes=4, epochs=200, head_lr=0.05,
                         multilabel=True)
    assert {"auc", "mAP", "cmAP"} <= set(res) and res["auc"] > 0.9
    assert not math.isnan(res["mAP"])
