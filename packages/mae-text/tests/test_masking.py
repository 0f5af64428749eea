import torch

import pytest

from mae_text.masking import corrupt, retromae_decoder_visibility, token_budget, word_masks


def _word_ids():
    # [CLS] w0 w0 w1 w2 w2 w2 w3 ... [SEP] pad pad ; second row has 10 words of one piece each
    a = [-1, 0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 6, 7, 8, 9, -1, -1, -1]
    b = [-1] + list(range(10)) + [-1] + [-1] * 6
    return torch.tensor([a, b])


def _att(wid):
    # real tokens: words plus [CLS] at 0 and [SEP] right after the last word
    n = (wid >= 0).sum(1) + 2
    return torch.arange(wid.shape[1])[None] < n[:, None]


def test_token_budget_hand_computed():
    """Reference ``num_to_predict = max(1, round(ratio x tokens))``, [CLS] / [SEP] counted, half to even."""
    att = torch.arange(20)[None] < torch.tensor([7, 3, 17, 17])[:, None]
    assert token_budget(att, 0.3).tolist() == [2, 1, 5, 5]  # 2.1, 0.9, 5.1
    assert token_budget(att, 0.5).tolist() == [4, 2, 8, 8]  # 3.5 -> 4, 1.5 -> 2, 8.5 -> 8 (half to even)
    assert token_budget(att[1:2], 0.15).tolist() == [1]  # round(0.45) = 0 -> at least 1


def test_word_masks_reference_greedy_fill():
    """Words are taken whole in a random order; one that would overflow the budget k is skipped, so in the end
    every word left out is larger than the room left (k - masked)."""
    wid = _word_ids()
    att = _att(wid)
    k = token_budget(att, 0.3)  # row 0: 17 real tokens -> 5; row 1: 12 -> 4 (3.6)
    assert k.tolist() == [5, 4]
    (m,) = word_masks(wid, att, [0.3], draws=200, generator=torch.Generator().manual_seed(0))
    assert m.shape == (2, 200, wid.shape[1])
    assert not (m & (wid < 0)[:, None]).any()  # never specials / padding
    for row in range(2):
        sizes = torch.bincount(wid[row][wid[row] >= 0])
        for d in range(200):
            mask = m[row, d]
            count = int(mask.sum())
            assert count <= k[row]
            words = set(wid[row][mask].tolist())
            for w in range(len(sizes)):
                if w in words:
                    assert mask[wid[row] == w].all()  # whole word
                else:
                    assert count + sizes[w] > k[row]  # skipped only because it did not fit
    assert (m[1].sum(-1) == 4).all()  # one-piece words fill the budget exactly


def test_word_masks_rate_is_uniform_over_words():
    wid = torch.tensor([[-1] + list(range(10)) + [-1]])
    (m,) = word_masks(wid, _att(wid), [0.5], draws=4000, generator=torch.Generator().manual_seed(1))
    rate = m[0, :, 1:11].float().mean(0)  # k = 6 of 10 words
    assert torch.allclose(rate, torch.full_like(rate, 0.6), atol=0.04), rate


def test_nested_masks_encoder_inside_decoder():
    """Starbucks' collator: encoder 0.2 inside decoder 0.4, from one word order."""
    wid = _word_ids()
    att = _att(wid)
    enc, dec = word_masks(wid, att, [0.2, 0.4], draws=300, generator=torch.Generator().manual_seed(2))
    assert not (enc & ~dec).any()
    assert (dec[1].sum(-1) == round(12 * 0.4)).all() and (enc[1].sum(-1) == round(12 * 0.2)).all()  # 5 and 2
    assert (enc[0].sum(-1) <= 3).all() and (dec[0].sum(-1) <= 7).all()  # 17 tokens: 3.4 -> 3, 6.8 -> 7
    assert (enc[0].sum(-1) >= 1).all()
    a = word_masks(wid, att, [0.2, 0.4], draws=3, generator=torch.Generator().manual_seed(3))
    b = word_masks(wid, att, [0.2, 0.4], draws=3, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


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


def test_retromae_decoder_visibility_per_row_counts():
    """Row i hides one whole-word mask at 0.5 (exactly k = round(0.5 n) tokens with one-piece words) plus itself and
    sees every other real position: n - |mask U {i}|, i.e. n - k - 1 or n - k; [CLS] always (rows >= 1), [SEP]
    always (other rows), padding never."""
    length, n = 24, 17  # [CLS] 15 one-piece words [SEP] + 7 pads
    wid = torch.full((64, length), -1)
    wid[:, 1:16] = torch.arange(15)
    att = torch.arange(length)[None].expand(64, -1) < n
    v = retromae_decoder_visibility(wid, att, 0.5, torch.Generator().manual_seed(0))
    assert v.shape == (64, length, length)
    k = 8  # round(8.5) = 8
    idx = torch.arange(length)
    assert not v[:, idx, idx].any()  # never itself
    assert v[:, 1:n, 0].all()  # [CLS] visible to every real row after it
    sep = n - 1
    assert v[:, [i for i in range(n) if i != sep], sep].all()  # [SEP] visible to every other row
    assert not v[:, :, n:].any()  # padding keys never
    seen = v[:, :n, :n].sum(-1)  # (64, n) positions each real row sees
    assert ((seen[:, 1:16] == n - k - 1) | (seen[:, 1:16] == n - k)).all(), seen
    # rows whose own token is not in their mask hide exactly k other words; the others k - 1 (themselves counted)
    other_hidden = (~v[:, 1:16, 1:16]).sum(-1) - 1  # hidden ordinary keys other than the row itself
    assert ((other_hidden == k) | (other_hidden == k - 1)).all()
    assert (other_hidden == k).float().mean().item() == pytest.approx(1 - k / 15, abs=0.05)
    # per-row, not per-text: rows of one text differ
    assert not all(torch.equal(v[0, 1], v[0, i]) for i in range(2, 16))
