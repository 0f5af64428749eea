import math

import pytest
import torch

from mae_text.methods.dupmae import bow_loss, bow_target, bow_vector
from mae_text.methods.starbucks import PAPER_PAIRS, parse_pairs, scaled_pairs, truncate


def test_bow_hand_computed():
    logits = torch.tensor([[[0.0, 2, 0, 0], [1, 0, 3, 0], [0, 1, 0, 0], [9, 9, 9, 9]]])
    ids = torch.tensor([[1, 2, 1, 0]])
    ordinary = torch.tensor([[True, True, True, False]])  # the last position is padding
    assert torch.equal(bow_vector(logits, ordinary), torch.tensor([[1.0, 2, 3, 0]]))
    assert torch.equal(bow_target(ids, ordinary, 4), torch.tensor([[0.0, 0.5, 0.5, 0]]))
    lse = math.log(math.e + math.e ** 2 + math.e ** 3 + 1)
    assert bow_loss(logits, ids, ordinary).item() == pytest.approx(lse - 2.5, rel=1e-5)


def test_bow_skips_texts_without_ordinary_tokens():
    logits = torch.randn(2, 3, 5)
    ids = torch.tensor([[1, 2, 3], [0, 0, 0]])
    ordinary = torch.tensor([[True, True, True], [False, False, False]])
    full = bow_loss(logits, ids, ordinary)
    alone = bow_loss(logits[:1], ids[:1], ordinary[:1])
    assert torch.isfinite(full) and full.item() == pytest.approx(alone.item())


def test_scaled_pairs():
    assert scaled_pairs(12, 768) == list(PAPER_PAIRS)
    assert scaled_pairs(6, 384) == [(1, 16), (2, 32), (3, 64), (4, 128), (5, 256), (6, 384)]
    with pytest.raises(Exception):
        parse_pairs(["13x32"], 12, 768)
    assert parse_pairs(["2x32", "4,64"], 12, 768) == [(2, 32), (4, 64)]


def test_truncate_zero_pads():
    h = torch.arange(12.0).view(2, 6)
    t = truncate(h, 2)
    assert t.shape == h.shape and torch.equal(t[:, :2], h[:, :2]) and not t[:, 2:].any()


def test_starbucks_encode_at_pair(tiny_cfg):
    from mae_text.methods.starbucks import Starbucks
    torch.manual_seed(0)
    m = Starbucks(tiny_cfg("starbucks", depth=4, pairs=["1x8", "2x16", "4x32"])).eval()
    batch = {"text": ["a passage about proteins", "the quick brown fox"]}
    with torch.no_grad():
        enc = m.tokenize_text(batch)
        final, hidden = m.run_encoder(enc.input_ids, enc.attention_mask, return_hidden=True)
        for layer, d in [(1, 8), (2, 16), (4, 32)]:
            e = m.encode(batch, pool=f"{layer}x{d}")
            assert e.shape == (2, d) and m.feature_dim(f"{layer}x{d}") == d
            assert torch.allclose(e, m.encoder.norm(hidden[layer - 1])[:, 0, :d], atol=1e-6)
        assert torch.allclose(m.encode(batch), final[:, 0], atol=1e-6)
        pairs = m.encode_pairs(batch)
        assert torch.allclose(pairs[(2, 16)], m.encode(batch, pool="2x16"), atol=1e-6)


def test_dupmae_representation(tiny_cfg):
    from mae_text.methods.dupmae import DupMAE
    torch.manual_seed(0)
    m = DupMAE(tiny_cfg("dupmae", topk=7, reduce_dim=12)).eval()
    with torch.no_grad():
        e = m.encode({"text": ["a passage about proteins", "the quick brown fox jumps"]})
    assert e.shape == (2, 12 + m.config.vocab_size) == (2, m.feature_dim())
    lex = e[:, 12:]
    assert ((lex > 0).sum(1) <= 7).all() and (lex >= 0).all()
