import torch

from mae_text.masking import corrupt, decoder_attention_mask, whole_word_mask


def _word_ids():
    # [CLS] w0 w0 w1 w2 w2 w2 w3 ... [SEP] pad pad ; second row has 10 words of one piece each
    a = [-1, 0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 6, 7, 8, 9, -1, -1, -1]
    b = [-1] + list(range(10)) + [-1] + [-1] * 6
    return torch.tensor([a, b])


def test_whole_word_mask_counts_and_words_stay_whole():
    wid = _word_ids()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        m = whole_word_mask(wid, 0.3, g)
        assert not m[wid < 0].any()  # specials and padding never masked
        for row in range(2):
            words = {int(w) for w in wid[row][m[row]]}
            assert len(words) == round(0.3 * 10)  # exactly round(0.3 * n_words) words
            for w in words:  # every piece of a chosen word is masked
                assert m[row][wid[row] == w].all()


def test_whole_word_mask_rate_is_uniform_over_words():
    n = 4000
    wid = _word_ids()[:1].expand(n, -1)
    m = whole_word_mask(wid, 0.3, torch.Generator().manual_seed(1))
    rate = torch.stack([m[:, wid[0] == w].any(1).float().mean() for w in range(10)])
    assert torch.allclose(rate, torch.full_like(rate, 0.3), atol=0.04), rate


def test_whole_word_mask_deterministic_and_high_ratio():
    wid = _word_ids()
    a = whole_word_mask(wid, 0.5, torch.Generator().manual_seed(3))
    b = whole_word_mask(wid, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert len({int(w) for w in wid[1][a[1]]}) == 5


def test_corrupt_80_10_10():
    ids = torch.full((200, 50), 7)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, :10] = False
    out = corrupt(ids, mask, mask_id=4, vocab_size=100, first_normal=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :10], ids[:, :10])
    m = out[:, 10:]
    frac_mask = (m == 4).float().mean().item()
    frac_same = (m == 7).float().mean().item()
    assert abs(frac_mask - 0.8) < 0.02
    assert 0.09 < frac_same < 0.12  # 10 % kept + random draws that happen to hit 7
    assert ((m >= 5) | (m == 4)).all()  # random replacements are never special tokens


def test_decoder_attention_mask():
    b, length = 64, 40
    att = torch.ones(b, length, dtype=torch.bool)
    att[:, 30:] = False  # padding
    m = decoder_attention_mask(att, 0.5, torch.Generator().manual_seed(0))
    assert m.shape == (b, length, length)
    real = torch.arange(length) < 30
    idx = torch.arange(1, length)
    assert not m[:, idx, idx].any()  # never itself
    assert m[:, :, 0].all()  # [CLS] always visible
    assert not m[:, :, 30:].any()  # padding never visible
    # the expected fraction of the other real positions (excluding [CLS] and the row itself) is visible
    other = real[None, :] & real[:, None] & ~torch.eye(length, dtype=torch.bool)
    other[:, 0] = False
    frac = m[:, other].float().mean().item()
    assert abs(frac - 0.5) < 0.01, frac
    m2 = decoder_attention_mask(att, 0.2, torch.Generator().manual_seed(0))
    assert abs(m2[:, other].float().mean().item() - 0.2) < 0.01
    # rows differ: the mask is position specific
    assert not torch.equal(m[0, 5], m[0, 6])
