"""Shared pieces for contrastive and distillation methods: InfoNCE, the feature queue, encoder taps and the
decoder block that cross-attends to them."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.checkpoint import load_checkpoint, save_checkpoint
from mae_core.layers import CrossBlock, FeatureQueue, TapCrossBlock
from mae_core.losses import info_nce
from mae_core.models.mae import TransformerEncoder

# ---- InfoNCE -----------------------------------------------------------------------------------------------------


def _hand_example():
    e = torch.eye(3)
    query = 2.0 * e  # scaled: info_nce must normalise
    keys = torch.stack([e[0], 3.0 * e[0], e[2]])
    return query, keys


def test_info_nce_hand_computed_3x3():
    q, k = _hand_example()
    # cosine similarities q_i . k_j: row 0 [1, 1, 0], row 1 [0, 0, 0], row 2 [0, 0, 1]; temperature 1
    rows = [math.log(2 + math.exp(-1)), math.log(3), math.log(1 + 2 * math.exp(-1))]
    assert info_nce(q, k, temperature=1.0).item() == pytest.approx(sum(rows) / 3, abs=1e-6)
    assert info_nce(q, k, temperature=1.0, reduction="none").tolist() == pytest.approx(rows, abs=1e-6)
    # the other direction, k_i . q_j: row 0 [1, 0, 0], row 1 [1, 0, 0] (positive is 0), row 2 [0, 0, 1]
    back = [math.log(1 + 2 * math.exp(-1)), math.log(math.e + 2), math.log(1 + 2 * math.exp(-1))]
    sym = info_nce(q, k, temperature=1.0, symmetric=True)
    assert sym.item() == pytest.approx((sum(rows) + sum(back)) / 6, abs=1e-6)
    # temperature 0.5 doubles every logit: row 1 stays log 3, row 0 becomes log(2 + e^-2)
    half = info_nce(q, k, temperature=0.5, reduction="none")
    assert half[0].item() == pytest.approx(math.log(2 + math.exp(-2)), abs=1e-6)
    assert half[1].item() == pytest.approx(math.log(3), abs=1e-6)


def test_info_nce_matches_cross_entropy_on_the_similarity_matrix():
    g = torch.Generator().manual_seed(0)
    q, k, neg = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), torch.randn(10, 8, generator=g)
    qn, kn, nn_ = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(neg, dim=1)
    t = 0.2
    target = torch.arange(6)
    ref = F.cross_entropy(qn @ kn.T / t, target)
    assert torch.allclose(info_nce(q, k, temperature=t), ref, atol=1e-6)
    ref_neg = F.cross_entropy(torch.cat([qn @ kn.T, qn @ nn_.T], 1) / t, target)
    assert torch.allclose(info_nce(q, k, temperature=t, negatives=neg), ref_neg, atol=1e-6)
    ref_sym = 0.5 * (ref_neg + F.cross_entropy(torch.cat([kn @ qn.T, kn @ nn_.T], 1) / t, target))
    assert torch.allclose(info_nce(q, k, temperature=t, negatives=neg, symmetric=True), ref_sym, atol=1e-6)
    assert not torch.allclose(ref, ref_neg)  # the extra negatives matter


def test_info_nce_symmetric_self_negatives_is_simclr_nt_xent():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = (z @ z.T / 0.5).masked_fill(torch.eye(10, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(5, 10), torch.arange(5)])  # view i's positive is the other view of sample i
    ref = F.cross_entropy(sim, target)
    got = info_nce(a, b, temperature=0.5, symmetric=True, self_negatives=True)
    assert torch.allclose(got, ref, atol=1e-6)
    assert not torch.allclose(got, info_nce(a, b, temperature=0.5, symmetric=True))


def test_info_nce_learned_temperature_and_bad_input():
    q, k = _hand_example()
    t = torch.tensor(0.5, requires_grad=True)
    info_nce(q, k, temperature=t).backward()
    assert t.grad is not None and t.grad.abs() > 0
    with pytest.raises(ValueError, match="same"):
        info_nce(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        info_nce(q, k, reduction="sum")


# ---- feature queue -----------------------------------------------------------------------------------------------


def _rows(*values):
    return torch.tensor([[float(v), -float(v)] for v in values])


def test_queue_wraps_around_like_a_hand_built_fifo():
    q = FeatureQueue(4, 2)
    assert len(q) == 0 and q.features.shape == (0, 2)
    q.enqueue(_rows(1, 2, 3))
    assert torch.equal(q.features, _rows(1, 2, 3)) and int(q.ptr) == 3 and not q.full
    q.enqueue(_rows(4, 5))  # 4 fills the last slot, 5 wraps to slot 0
    assert torch.equal(q.queue, _rows(5, 2, 3, 4)) and int(q.ptr) == 1 and q.full
    assert torch.equal(q.ordered(), _rows(2, 3, 4, 5))
    q.enqueue(_rows(6, 7, 8, 9, 10, 11))  # more rows than slots: the last four stay, as if enqueued one by one
    assert torch.equal(q.queue, _rows(9, 10, 11, 8)) and int(q.ptr) == 3  # 6..11 written at slots 1, 2, 3, 0, 1, 2
    assert torch.equal(q.ordered(), _rows(8, 9, 10, 11))
    q.enqueue(_rows(12))
    assert torch.equal(q.queue, _rows(9, 10, 11, 12)) and int(q.ptr) == 0
    assert torch.equal(q.ordered(), _rows(9, 10, 11, 12)) and torch.equal(q.features, q.queue)


def test_queue_matches_one_at_a_time_reference():
    g = torch.Generator().manual_seed(0)
    q, ref = FeatureQueue(7, 3), []
    for n in [2, 5, 1, 9, 0, 3, 14, 6]:
        x = torch.randn(n, 3, generator=g)
        q.enqueue(x)
        ref = (ref + list(x))[-7:]
        assert torch.equal(q.ordered(), torch.stack(ref))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        q.enqueue(torch.randn(2, 4))


def test_queue_is_saved_and_restored_with_a_checkpoint(tmp_path):
    model = nn.Module()
    model.proj = nn.Linear(2, 2)
    model.queue = FeatureQueue(5, 2)
    model.queue.enqueue(_rows(1, 2, 3, 4, 5, 6, 7))
    save_checkpoint(tmp_path / "ckpt", model)
    fresh = nn.Module()
    fresh.proj = nn.Linear(2, 2)
    fresh.queue = FeatureQueue(5, 2)
    load_checkpoint(tmp_path / "ckpt", fresh)
    assert torch.equal(fresh.queue.queue, model.queue.queue)
    assert int(fresh.queue.ptr) == int(model.queue.ptr) == 2 and len(fresh.queue) == 5
    model.queue.enqueue(_rows(8))
    fresh.queue.enqueue(_rows(8))
    assert torch.equal(fresh.queue.ordered(), _rows(4, 5, 6, 7, 8))
    assert torch.equal(fresh.queue.ordered(), model.queue.ordered())


# ---- encoder taps and the tap cross-attention block ----------------------------------------------------------------


def test_encoder_taps_equal_the_hidden_states_and_keep_the_output():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 4, 2).eval()
    x, pos = torch.randn(2, 6, 16), torch.randn(1, 6, 16)
    out, hidden = enc(x, pos, return_hidden=True)
    out2, taps = enc(x, pos, taps=(2, 0, -1))
    assert torch.equal(out, out2) and len(taps) == 3
    assert torch.equal(taps[0], hidden[2]) and torch.equal(taps[1], hidden[0]) and torch.equal(taps[2], hidden[3])
    assert torch.allclose(enc.norm(taps[2]), out)  # taps are raw: the final norm turns the last one into the output
    with pytest.raises(ValueError, match="out of range"):
        enc(x, taps=(4,))
    with pytest.raises(ValueError, match="not both"):
        enc(x, taps=(1,), return_hidden=True)


def test_tap_block_with_one_tap_is_a_cross_block_on_the_normed_tap():
    torch.manual_seed(0)
    blk = TapCrossBlock(16, 2, num_taps=1, context_dim=24).eval()
    ref = CrossBlock(16, 2, context_dim=24).eval()
    ref.load_state_dict(blk.block.state_dict())
    x, tap = torch.randn(2, 5, 16), torch.randn(2, 7, 24) * 3 + 1
    assert torch.allclose(blk(x, [tap]), ref(x, F.layer_norm(tap, (24,), eps=1e-6)), atol=1e-6)


def test_tap_block_mixes_levels():
    torch.manual_seed(0)
    a, b = torch.randn(2, 7, 16), torch.randn(2, 7, 16) * 5
    na, nb = F.layer_norm(a, (16,), eps=1e-6), F.layer_norm(b, (16,), eps=1e-6)
    w = TapCrossBlock(16, 2, num_taps=2)
    assert torch.allclose(w.context([a, b]), 0.5 * (na + nb), atol=1e-6)  # starts as the plain average
    with torch.no_grad():
        w.tap_logits.copy_(torch.tensor([math.log(3.0), 0.0]))
    assert torch.allclose(w.context([a, b]), 0.75 * na + 0.25 * nb, atol=1e-6)
    c = TapCrossBlock(16, 2, num_taps=2, mix="concat")
    with torch.no_grad():
        c.level_pos_embed[1].fill_(2.0)
    ctx = c.context([a, b[:, :3]])  # lengths may differ
    assert ctx.shape == (2, 10, 16)
    assert torch.allclose(ctx[:, :7], na, atol=1e-6) and torch.allclose(ctx[:, 7:], nb[:, :3] + 2.0, atol=1e-6)
    x = torch.randn(2, 4, 16, requires_grad=True)
    a.requires_grad_(True)
    b.requires_grad_(True)
    c(x, [a, b]).sum().backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # the queries read both levels
    with pytest.raises(ValueError, match="2 taps"):
        c(x, [a])
    with pytest.raises(ValueError, match="mix"):
        TapCrossBlock(16, 2, num_taps=2, mix="sum")
