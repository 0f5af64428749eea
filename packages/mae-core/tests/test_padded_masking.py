"""padded_masking (variable-length sequences) and predecessor_similarity, by hand."""
from __future__ import annotations

import torch

from mae_core.masking import padded_masking, predecessor_similarity


def test_padded_masking_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.0, 0.0], [0.2, 0.8, 0.6, 0.4, 0.1, 0.7]])
    info = padded_masking(scores, torch.tensor([4, 6]), 0.5)  # keep 2 of 4, 3 of 6
    assert info.ids_keep.tolist() == [[1, 3, 4], [4, 0, 3]]  # row 0: its two best real ones, then padding
    assert info.mask.tolist() == [[1, 0, 1, 0, 0, 1], [0, 1, 1, 0, 0, 1]]
    restored = torch.gather(torch.cat([info.ids_keep, torch.full((2, 3), -1)], 1), 1, info.ids_restore)
    assert restored[0].tolist() == [-1, 1, -1, 3, 4, -1]


def test_padded_masking_fills_with_padding_only():
    g = torch.Generator().manual_seed(0)
    for ratio in (0.5, 0.3, 0.75, 0.9):
        lengths = torch.randint(1, 40, (16,), generator=g)
        total = int(lengths.max()) + int(torch.randint(0, 3, (1,), generator=g))
        info = padded_masking(torch.rand(16, total, generator=g), lengths, ratio)
        for i, n in enumerate(lengths.tolist()):
            k = int(n * (1 - ratio))
            kept = info.ids_keep[i]
            assert (kept[:k] < n).all() and (kept[k:] >= n).all()
            assert int((info.mask[i, :n] == 0).sum()) == k


def test_predecessor_similarity():
    x = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]]])
    assert torch.allclose(predecessor_similarity(x), torch.tensor([[0.0, 1.0, 0.0, -2 ** -0.5]]))
