"""Text masks, drawn from the generator the trainer passes (a ``torch.Generator`` or, under DDP, mae-core's
``ShardedGenerator``) through mae-core's noise source, like every mae-core masking strategy.

* :func:`word_masks`: BERT whole-word masking as the reference collators sample it (Hugging Face
  ``DataCollatorForWholeWordMask._whole_word_mask``, used by RetroMAE, DupMAE and Starbucks): the words of a text
  (never [CLS] / [SEP] / padding) are shuffled and taken whole, in that order, while the masked *token* count stays
  within ``k = max(1, round(ratio x tokens))``, where ``tokens`` counts [CLS] and [SEP]; a word that would overflow
  ``k`` is skipped. Several ratios give nested masks (Starbucks: a word joins the smaller mask only if it joins the
  larger one and fits the smaller count).
* :func:`corrupt`: BERT's 80 / 10 / 10 replacement of the masked tokens ([MASK] / random token / unchanged).
* :func:`retromae_decoder_visibility`: RetroMAE's enhanced-decoding mask (B, L, L) as its collator builds it: one
  whole-word mask at the decoder ratio is drawn per token of the text (the "mask set"), each row i takes one of them
  at random, also hides itself, and sees every other real position ([CLS], [SEP] and the words left unmasked).
"""
from __future__ import annotations

import torch

from mae_core.masking import uniform_noise


def token_budget(attention_mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B,) tokens to mask: ``max(1, round(ratio x real tokens))`` (real tokens include [CLS] and [SEP]), as the
    reference ``num_to_predict``. ``torch.round`` rounds half to even, as Python's ``round``."""
    n = attention_mask.sum(1).to(torch.float64)
    return torch.round(n * ratio).long().clamp(min=1)


def word_masks(word_ids: torch.Tensor, attention_mask: torch.Tensor, ratios, draws: int = 1,
               generator=None) -> list[torch.Tensor]:
    """(B, L) word index per token (-1 = special / padding) -> one (B, draws, L) bool mask per ratio (True = masked).

    ``ratios`` ascending; with two ratios the first mask lies inside the second (nested, as Starbucks' collator).
    """
    ratios = list(ratios)
    if ratios != sorted(ratios):
        raise ValueError(f"ratios must be ascending, got {ratios}")
    b, length = word_ids.shape
    device = word_ids.device
    n_words = int((word_ids.max().item() + 1)) if word_ids.numel() else 0
    if n_words <= 0:
        return [torch.zeros(b, draws, length, dtype=torch.bool, device=device) for _ in ratios]
    real = word_ids >= 0
    sizes = torch.zeros(b, n_words + 1, dtype=torch.long, device=device)
    sizes.scatter_add_(1, torch.where(real, word_ids, n_words), torch.ones_like(word_ids))
    sizes = sizes[:, :n_words]  # (B, W) tokens per word; 0 = no such word in this text
    scores = uniform_noise((b, draws, n_words), generator, device).masked_fill(sizes[:, None] == 0, 2.0)
    order = scores.argsort(dim=-1)  # the shuffled word order of each draw
    sorted_sizes = torch.gather(sizes[:, None].expand(b, draws, n_words), 2, order)
    budgets = [token_budget(attention_mask, r)[:, None] for r in ratios]
    counts = [torch.zeros(b, draws, dtype=torch.long, device=device) for _ in ratios]
    chosen = [torch.zeros(b, draws, n_words, dtype=torch.bool, device=device) for _ in ratios]
    for j in range(n_words):
        s = sorted_sizes[..., j]
        top = (s > 0) & (counts[-1] + s <= budgets[-1])  # fits the largest budget (else skipped)
        for c, (k, cnt) in enumerate(zip(budgets, counts)):
            add = top & (cnt + s <= k)
            counts[c] = cnt + add * s
            chosen[c][..., j] = add
    out = []
    idx = word_ids.clamp(min=0)[:, None].expand(b, draws, length)
    for ch in chosen:
        per_word = torch.zeros_like(ch).scatter_(2, order, ch)  # back from shuffled order to word index
        out.append(torch.gather(per_word, 2, idx) & real[:, None])
    return out


def whole_word_mask(word_ids: torch.Tensor, attention_mask: torch.Tensor, ratio: float,
                    generator=None) -> torch.Tensor:
    """One reference whole-word mask (B, L) at ``ratio``."""
    return word_masks(word_ids, attention_mask, [ratio], 1, generator)[0][:, 0]


def corrupt(input_ids: torch.Tensor, mask: torch.Tensor, mask_id: int, vocab_size: int, first_normal: int,
            generator=None, p_mask: float = 0.8, p_random: float = 0.1) -> torch.Tensor:
    """Replace masked tokens: ``p_mask`` by [MASK], ``p_random`` by a random ordinary token, the rest unchanged."""
    u = uniform_noise(input_ids.shape, generator, input_ids.device)
    r = uniform_noise(input_ids.shape, generator, input_ids.device)
    rand_tok = first_normal + (r * (vocab_size - first_normal)).long().clamp(max=vocab_size - first_normal - 1)
    out = input_ids.clone()
    out = torch.where(mask & (u < p_mask), torch.full_like(out, mask_id), out)
    out = torch.where(mask & (u >= p_mask) & (u < p_mask + p_random), rand_tok, out)
    return out


def retromae_decoder_visibility(word_ids: torch.Tensor, attention_mask: torch.Tensor, ratio: float,
                                generator=None) -> torch.Tensor:
    """(B, L, L) bool, True = query row i may attend to key j (RetroMAE's collator, ``1 - mask``).

    A set of ``min(n, 256)`` whole-word masks at ``ratio`` is drawn per text of n real tokens; row i takes one of
    them uniformly at random (with replacement) and also hides position i. [CLS] and [SEP] are never in a word
    mask, so they are visible to every other row. Padding keys are never visible; padding rows see [CLS] only
    (they are not in the loss; this keeps their softmax finite).
    """
    b, length = word_ids.shape
    device = word_ids.device
    mask_set = word_masks(word_ids, attention_mask, [ratio], length, generator)[0]  # (B, draws=L, L)
    m = attention_mask.sum(1).clamp(min=1, max=256)
    pick = (uniform_noise((b, length), generator, device) * m[:, None]).long()
    pick = torch.minimum(pick, m[:, None] - 1)
    hidden = torch.gather(mask_set, 1, pick[..., None].expand(b, length, length))  # (B, rows, keys)
    eye = torch.eye(length, dtype=torch.bool, device=device)[None]
    visible = ~hidden & ~eye & attention_mask[:, None, :]
    visible[:, :, 0] |= ~attention_mask
    return visible
