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
    assert torch.allclose(bow_target(ids, ordinary, 4), torch.tensor([[0.0, 1 / 3, 1 / 3, 0]]))  # 1 / n, n = 3
    lse = math.log(math.e + math.e ** 2 + math.e ** 3 + 1)
    assert bow_loss(logits, ids, ordinary).item() == pytest.approx(2 / 3 * lse - 5 / 3, rel=1e-5)


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


def test_term_weights_known_values():
    from mae_text.methods.dupmae import term_weights
    z = torch.tensor([[-2.0, 0.0, 1.0, math.e - 1, 9.0]])
    assert torch.equal(term_weights(z, "relu"), torch.tensor([[0.0, 0, 1, math.e - 1, 9]]))
    assert torch.allclose(term_weights(z, "log1p"), torch.tensor([[0.0, 0, math.log(2), 1, math.log(10)]]))
    with pytest.raises(Exception, match="lexical_weighting"):
        term_weights(z, "softmax")


@pytest.mark.parametrize("weighting", ["log1p", "relu"])
def test_dupmae_lexical_by_hand(tiny_cfg, weighting):
    """lexical = top-k over the vocabulary of max over the ordinary tokens of phi(MLM-head logits), in place."""
    from mae_text.methods.dupmae import DupMAE
    torch.manual_seed(0)
    m = DupMAE(tiny_cfg("dupmae", topk=5, lexical_weighting=weighting)).eval()
    with torch.no_grad():
        m.mlm_head.bias.normal_(0, 2.0)  # plenty of positive logits
        batch = {"text": ["proteins fold into shapes", "the quick brown fox jumps over the dog"]}
        enc = m.tokenize_text(batch)
        h = m.run_encoder(enc.input_ids, enc.attention_mask)
        z = m.mlm_logits(h)
        lex = m.encode(batch, pool="lexical")
        for b in range(2):
            keep = enc.attention_mask[b] & ~enc.special[b]
            w = z[b][keep].max(0).values.clamp(min=0)
            w = torch.log1p(w) if weighting == "log1p" else w
            want = torch.zeros_like(w)
            top = w.topk(5)
            want[top.indices] = top.values
            assert torch.allclose(lex[b], want, atol=1e-6)
            assert (lex[b] > 0).sum() == 5


def test_dupmae_lexical_not_swamped_by_a_text_independent_prior(tiny_cfg):
    """After a short pretraining the MLM head predicts the same frequent tokens for every text. Simulate it with a
    large bias toward 50 tokens: with log-saturated weights the lexical inner products grow only logarithmically
    with that prior (so it cannot swamp the [CLS] part), with plain ReLU weights quadratically."""
    from mae_text.methods.dupmae import DupMAE
    batch = {"text": ["vitamin d and bone loss in older adults", "gradient descent with noisy gradients",
                      "antibiotic resistance spreads among bacteria"]}

    def lexical_scores(weighting, prior):
        torch.manual_seed(0)
        m = DupMAE(tiny_cfg("dupmae", topk=64, lexical_weighting=weighting)).eval()
        with torch.no_grad():
            m.mlm_head.bias[10:60] = prior
            lex = m.encode(batch, pool="lexical")
            dense = m.encode(batch, pool="dense")
        return (lex @ lex.T).mean().item(), (dense @ dense.T).abs().mean().item()

    low, dense = lexical_scores("log1p", 5.0)
    high, _ = lexical_scores("log1p", 50.0)
    assert high / low <= 1.02 * (math.log(51) / math.log(6)) ** 2  # 4.8: grows like log^2 of the prior
    relu_low, _ = lexical_scores("relu", 5.0)
    relu_high, _ = lexical_scores("relu", 50.0)
    assert relu_high / relu_low > 50  # plain ReLU weights: like the prior's square (~100)
    assert relu_high > 1000 * dense > high  # ... and then they swamp the [CLS] part by orders of magnitude
