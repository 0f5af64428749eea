"""Pins of the reference behaviour of RetroMAE (staoxiao/RetroMAE ``src/pretrain``), DupMAE (same repository,
``modeling_duplex.py`` / ``DupMAECollator``), Starbucks (ielab/Starbucks ``smae``) and the plain-MLM baseline:
values computed by hand from the reference formulas, or by an independent re-computation."""
import math

import pytest
import torch
import torch.nn.functional as F

from mae_core.registry import build_model
from mae_text.masking import corrupt, word_masks
from mae_text.methods.dupmae import bow_loss, bow_pool_mask, bow_target
from mae_text.methods.layers import PostNormLayer
from mae_text.methods.starbucks import truncate
from mae_text.tokenizer import SPECIALS


def _capture(module):
    """Record the positional / keyword inputs of ``module``'s next calls."""
    calls = []
    module.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    return calls


def test_post_norm_layer_by_hand():
    """BERT layer: x = LN(q + softmax(qK^T / sqrt(d_h)) V W_o); out = LN(x + W2 GELU(W1 x)), exact GELU, eps 1e-12."""
    torch.manual_seed(0)
    layer = PostNormLayer(8, 2, mlp_ratio=2.0).eval()
    q, kv = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    mask = torch.tensor([[True, False, True, True], [True, True, False, False], [False, True, True, True]])
    a = layer.attn
    qh = a.q(q).view(1, 3, 2, 4).transpose(1, 2)
    k, v = a.kv(kv).view(1, 4, 2, 2, 4).permute(2, 0, 3, 1, 4)
    logits = (qh @ k.transpose(-1, -2)) / 2.0  # sqrt(4)
    p = logits.masked_fill(~mask, float("-inf")).softmax(-1)
    ctx = a.proj((p @ v).transpose(1, 2).reshape(1, 3, 8))

    def ln(t):
        return (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-12)

    x = ln(q + ctx)  # the LayerNorms are at init (weight 1, bias 0)
    want = ln(x + layer.mlp.fc2(0.5 * layer.mlp.fc1(x) * (1 + torch.erf(layer.mlp.fc1(x) / math.sqrt(2)))))
    with torch.no_grad():
        got = layer(q, kv, attn_mask=mask[None, None])
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got.mean(-1), torch.zeros(1, 3), atol=1e-5)  # post-norm: the output is normalised


def test_retromae_decoder_reads_the_original_tokens(tiny_cfg, corpus_texts):
    """Content stream = [encoder [CLS]; embeddings of the *uncorrupted* ids]; query = [CLS] + positions; the only
    decoder masking is the per-row attention matrix; loss on every token but [CLS] / [SEP] / padding."""
    torch.manual_seed(0)
    m = build_model("retromae", tiny_cfg())
    calls = _capture(m.decoder)
    batch = {"text": corpus_texts[:3]}
    out = m(batch, generator=torch.Generator().manual_seed(1))
    (q, kv), kw = calls[0]
    enc = m.tokenize_text(batch)
    masks = m.draw_masks(enc, torch.Generator().manual_seed(1))
    h = m.run_encoder(masks["enc_in"], enc.attention_mask)
    assert (masks["enc_in"] != enc.input_ids).any()  # the encoder input is corrupted ...
    assert torch.allclose(kv[:, 1:], m.embed(enc.input_ids)[:, 1:], atol=1e-6)  # ... the decoder's is not
    assert torch.allclose(kv[:, 0], h[:, 0], atol=1e-5)
    assert torch.allclose(q, h[:, :1] + m.pos_embed[:, :enc.input_ids.shape[1]], atol=1e-5)
    assert torch.equal(kw["attn_mask"], masks["dec_attn"][:, None])
    dec = m.decode(h[:, 0], enc, masks)
    target = enc.attention_mask & ~enc.special
    want = F.cross_entropy(m.mlm_logits(h[masks["enc_mask"]]), enc.input_ids[masks["enc_mask"]]) + \
        F.cross_entropy(m.mlm_logits(dec[target]), enc.input_ids[target])
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_retromae_decoder_sees_half_the_context(tiny_cfg, corpus_texts):
    """With the reference 0.5 ratio each real row sees about half of the other positions (n - round(n / 2) - 1 or
    n - round(n / 2)), not a quarter as a second token-corrupted copy with Bernoulli keys gave."""
    m = build_model("retromae", tiny_cfg())
    enc = m.tokenize_text({"text": corpus_texts[:8]})
    v = m.draw_masks(enc, torch.Generator().manual_seed(0))["dec_attn"]
    for b in range(8):
        n = int(enc.attention_mask[b].sum())
        k = round(0.5 * n)
        seen = v[b, 1:n - 1, :n].sum(-1)
        # a whole-word mask hides at most k tokens and, stopping before a word that would overshoot, up to a few
        # fewer (the reference collator); the row's own position is hidden too
        assert (seen >= n - k - 1).all() and (seen <= n - k + 3).all()
        assert seen.float().mean() / (n - 1) > 0.4


def test_dupmae_bow_target_one_over_length():
    """weight[t] = 1 / n for each token t of the text, n counted with repeats, assigned (not summed)."""
    ids = torch.tensor([[1, 2, 1, 0]])
    ordinary = torch.tensor([[True, True, True, False]])
    assert torch.allclose(bow_target(ids, ordinary, 4), torch.tensor([[0.0, 1 / 3, 1 / 3, 0]]))
    assert torch.allclose(bow_target(torch.tensor([[3, 3, 3]]), torch.ones(1, 3, dtype=torch.bool), 4),
                          torch.tensor([[0.0, 0, 0, 1 / 3]]))


def test_dupmae_bow_loss_pools_sep():
    """[CLS] a b a [SEP]: the max-pool runs over positions 1..4 ([SEP] included, [CLS] not);
    loss = -sum_t w_t log softmax(r)_t with w = 1/3 at a and b."""
    logits = torch.tensor([[[9.0, 9, 9, 9], [0, 2, 0, 0], [1, 0, 3, 0], [0, 1, 0, 0], [0, 0, 0, 4]]])
    ids = torch.tensor([[5, 1, 2, 1, 6]])  # ids 5 / 6 stand for [CLS] / [SEP]; vocabulary of 4 here
    att = torch.ones(1, 5, dtype=torch.bool)
    ordinary = torch.tensor([[False, True, True, True, False]])
    pool = bow_pool_mask(att)
    assert pool.tolist() == [[False, True, True, True, True]]
    r = torch.tensor([1.0, 2, 3, 4])  # column 3 comes from [SEP]
    lse = torch.logsumexp(r, 0).item()
    want = -((2 - lse) + (3 - lse)) / 3
    assert bow_loss(logits, ids.clamp(max=3) * ordinary, ordinary, pool).item() == pytest.approx(want, rel=1e-5)


def test_dupmae_decoder_query_is_normed(tiny_cfg, corpus_texts):
    torch.manual_seed(0)
    m = build_model("dupmae", tiny_cfg("dupmae"))
    cls = torch.randn(2, m.config.embed_dim)
    q = m.decoder_query(cls, 5)
    assert torch.allclose(q, m.embed_norm(cls[:, None] + m.pos_embed[:, :5]))


def test_starbucks_pretraining_reference(tiny_cfg, corpus_texts):
    """Nested masks 0.2 in 0.4; per pair (L, D): MLM on layer L truncated to D, and a self-attention decoder over
    [transform(truncated [CLS]); embeddings of the decoder-masked input] scored on the decoder-masked tokens only;
    loss = mean over pairs of (MLM + MAE) / 2. Recomputed here from the parts."""
    torch.manual_seed(0)
    m = build_model("starbucks", tiny_cfg("starbucks", pairs=["1x8", "2x32"]))
    assert (m.config.mask_ratio, m.config.decoder_mask_ratio) == (0.2, 0.4)
    batch = {"text": corpus_texts[:4]}
    calls = _capture(m.decoder)
    out = m(batch, generator=torch.Generator().manual_seed(3))
    (x,), kw = calls[0]
    assert "kv" not in kw  # self-attention
    g = torch.Generator().manual_seed(3)
    enc = m.tokenize_text(batch)
    cfg = m.config
    em, dm = (t[:, 0] for t in word_masks(enc.word_ids, enc.attention_mask, [0.2, 0.4], 1, g))
    enc_in = corrupt(enc.input_ids, em, m.mask_id, cfg.vocab_size, len(SPECIALS), g)
    dec_in = corrupt(enc.input_ids, dm, m.mask_id, cfg.vocab_size, len(SPECIALS), g)
    assert em.any() and not (em & ~dm).any() and (dm & ~em).any()
    _, hidden = m.run_encoder(enc_in, enc.attention_mask, return_hidden=True)
    total = 0.0
    for i, (layer, d) in enumerate([(1, 8), (2, 32)]):
        h = truncate(m.encoder.norm(hidden[layer - 1]), d)
        mlm = F.cross_entropy(m.mlm_logits(h[em]), enc.input_ids[em])
        xin = torch.cat([m.mlm_head.transform(h[:, :1]), m.embed(dec_in)[:, 1:]], dim=1)
        if i == 0:
            assert torch.allclose(x, xin, atol=1e-5)
        y = m.decoder(xin, attn_mask=enc.attention_mask[:, None, None, :])
        mae = F.cross_entropy(m.mlm_logits(y[dm]), enc.input_ids[dm])
        total = total + (mlm + mae) / 2
    assert out.loss.item() == pytest.approx((total / 2).item(), rel=1e-5)


def test_starbucks_rejects_encoder_mask_larger_than_decoder(tiny_cfg):
    with pytest.raises(Exception, match="mask_ratio"):
        build_model("starbucks", tiny_cfg("starbucks", mask_ratio=0.5, decoder_mask_ratio=0.4))


def test_mlm_baseline_is_the_encoder_loss_alone(tiny_cfg, corpus_texts):
    torch.manual_seed(0)
    m = build_model("mlm", tiny_cfg("mlm"))
    assert not hasattr(m, "decoder") and m.config.mask_ratio == 0.3
    batch = {"text": corpus_texts[:4]}
    out = m(batch, generator=torch.Generator().manual_seed(2))
    enc = m.tokenize_text(batch)
    masks = m.draw_masks(enc, torch.Generator().manual_seed(2))
    assert set(masks) == {"enc_mask", "enc_in"}
    h = m.run_encoder(masks["enc_in"], enc.attention_mask)
    want = F.cross_entropy(m.mlm_logits(h[masks["enc_mask"]]), enc.input_ids[masks["enc_mask"]])
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.equal(m.encode(batch), m.run_encoder(enc.input_ids, enc.attention_mask)[:, 0])
