"""Text masks, drawn from the generator the trainer passes (a ``torch.Generator`` or, under DDP, mae-core's
``ShardedGenerator``) through mae-core's noise source, like every mae-core masking strategy.

* :func:`whole_word_mask`: BERT whole-word masking: a fraction of the *words* of each text is chosen and every
  sub-word token of a chosen word is masked (never [CLS] / [SEP] / padding).
* :func:`corrupt`: BERT's 80 / 10 / 10 replacement of the masked tokens ([MASK] / random token / unchanged).
* :func:`decoder_attention_mask`: RetroMAE's enhanced-decoding mask (B, L, L): row i sees a random subset of the
  other real positions, never itself; position 0 ([CLS], the sentence embedding) is always visible.
"""
from __future__ import annotations

import torch

from mae_core.masking import uniform_noise


def whole_word_mask(word_ids: torch.Tensor, ratio: float, generator=None) -> torch.Tensor:
    """(B, L) word index per token (-1 = special / padding) -> (B, L) bool mask, True = masked.

    Each text with n words gets exactly ``max(1, round(ratio * n))`` masked words (0 when n = 0).
    """
    b, length = word_ids.shape
    device = word_ids.device
    n_words = (word_ids.max(dim=1).values + 1).clamp(min=0)  # (B,)
    w = int(n_words.max().item()) if b else 0
    if w == 0:
        return torch.zeros_like(word_ids, dtype=torch.bool)
    scores = uniform_noise((b, w), generator, device)
    valid = torch.arange(w, device=device)[None] < n_words[:, None]
    scores = scores.masked_fill(~valid, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)  # rank of each word within its text
    k = torch.where(n_words > 0, (ratio * n_words.float()).round().long().clamp(min=1), torch.zeros_like(n_words))
    word_masked = (rank < k[:, None]) & valid  # (B, W)
    idx = word_ids.clamp(min=0)
    return torch.gather(word_masked, 1, idx) & (word_ids >= 0)


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


def decoder_attention_mask(attention_mask: torch.Tensor, visible: float, generator=None) -> torch.Tensor:
    """(B, L) real-token mask -> (B, L, L) bool, True = query row i may attend to key j.

    Key j (j >= 1, real) is visible to row i with probability ``visible``, independently; j = i never; key 0 ([CLS])
    always. Padding keys are never visible.
    """
    b, length = attention_mask.shape
    device = attention_mask.device
    u = uniform_noise((b, length, length), generator, device)
    keep = u < visible
    keep &= attention_mask[:, None, :]
    eye = torch.eye(length, dtype=torch.bool, device=device)[None]
    keep &= ~eye
    keep[:, :, 0] = attention_mask[:, :1].expand(b, length)
    return keep
