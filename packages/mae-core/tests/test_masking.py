import pytest
import torch

from mae_core.errors import MaeError
from mae_core.masking import (block_masking, gather_tokens, mask_from_mask, random_masking, restore_tokens,
                              running_cell_masking, token_budget_masking, tube_masking)


def check_contract(m, b, length, k):
    assert m.ids_keep.shape == (b, k)
    assert m.ids_restore.shape == (b, length)
    assert m.mask.shape == (b, length)
    assert torch.all(m.mask.sum(1) == length - k)
    # kept ids are exactly the unmasked positions
    kept = torch.zeros(b, length).scatter_(1, m.ids_keep, 1.0)
    assert torch.equal(kept, 1 - m.mask)
    # ids_restore inverts the shuffle: kept tokens followed by masked tokens, gathered, give back the sequence
    x = torch.arange(length).float().expand(b, length)[..., None]
    ids_shuffle = torch.argsort(m.ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :k], m.ids_keep)
    assert torch.equal(gather_tokens(gather_tokens(x, ids_shuffle), m.ids_restore), x)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_random_masking_contract(ratio):
    length = 49
    m = random_masking(4, length, ratio, torch.Generator().manual_seed(0))
    check_contract(m, 4, length, int(length * (1 - ratio)))
    if ratio == 0:
        assert m.mask.sum() == 0


def test_random_masking_deterministic_and_per_sample():
    a = random_masking(8, 64, 0.75, torch.Generator().manual_seed(3))
    b = random_masking(8, 64, 0.75, torch.Generator().manual_seed(3))
    c = random_masking(8, 64, 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    assert not torch.equal(a.mask[0], a.mask[1])  # each sample draws its own mask


def test_random_masking_matches_reference_noise():
    g = torch.Generator().manual_seed(0)
    m = random_masking(2, 16, 0.75, g)
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(0))
    ids_shuffle = torch.argsort(noise, dim=1)
    assert torch.equal(m.ids_keep, ids_shuffle[:, :4])


def test_external_mask():
    mask = torch.zeros(2, 10)
    mask[0, [1, 2, 3]] = 1
    mask[1, [7, 8, 9]] = 1
    m = mask_from_mask(mask)
    check_contract(m, 2, 10, 7)
    assert torch.equal(m.mask, mask)
    bad = mask.clone()
    bad[0, 5] = 1
    with pytest.raises(MaeError, match="same number"):
        mask_from_mask(bad)


def test_block_masking_is_contiguous():
    m = block_masking(6, (8, 8), 0.25, torch.Generator().manual_seed(0))
    check_contract(m, 6, 64, 48)
    grid = m.mask.reshape(6, 8, 8)
    for g in grid:  # 16 masked tokens forming a 4x4 square
        rows = g.sum(1).nonzero().flatten()
        cols = g.sum(0).nonzero().flatten()
        assert len(rows) == 4 and len(cols) == 4
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3


def test_tube_masking_identical_over_time():
    m = tube_masking(3, (4, 6, 6), 0.9, torch.Generator().manual_seed(0))
    check_contract(m, 3, 4 * 36, 4 * (36 - int(0.9 * 36)))  # the reference count: 4 kept (int(36 * 0.1) = 3)
    assert tube_masking(1, (8, 14, 14), 0.9).num_keep == 8 * 20  # VideoMAE's 20 of 196 per frame
    grid = m.mask.reshape(3, 4, 36)
    assert torch.all(grid == grid[:, :1])
    assert not torch.equal(grid[0, 0], grid[1, 0])


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_running_cell_pattern(ratio):
    t, h, w = 4, 4, 6
    m = running_cell_masking(5, (t, h, w), ratio, torch.Generator().manual_seed(0))
    check_contract(m, 5, t * h * w, int(t * h * w * (1 - ratio)))
    grid = m.mask.reshape(5, t, h, w)
    # every 2x2 cell masks int(4 * ratio) slots in every frame, and the pattern is the same in every cell
    cells = grid.reshape(5, t, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(5, t, -1, 4)
    assert torch.all(cells.sum(-1) == int(4 * ratio))
    assert torch.all(cells == cells[:, :, :1])
    # the pattern rotates by one slot per frame (a running cell)
    order = [0, 1, 2, 3]  # flattened 2x2 slot index
    first = cells[:, :, 0]  # (B, T, 4)
    assert torch.equal(first[:, 1], torch.roll(first[:, 0], shifts=-1, dims=-1)[:, order])


def test_running_cell_needs_even_grid():
    with pytest.raises(MaeError, match="even"):
        running_cell_masking(1, (2, 3, 4), 0.5)


def test_token_budget_dirichlet():
    sizes = [8, 8, 8, 8]
    budget = 8
    g = torch.Generator().manual_seed(0)
    m = token_budget_masking(sizes, budget, 512, alpha=1.0, generator=g)
    check_contract(m, 512, 32, budget)
    per_group = (1 - m.mask).reshape(512, 4, 8).sum(-1)
    assert torch.all(per_group.sum(1) == budget)
    assert (per_group == 0).any()  # a modality can get no visible token
    assert (per_group >= 6).any()  # and one can take most of the budget
    assert torch.all(per_group.float().mean(0).sub(2).abs() < 0.5)  # symmetric on average
    # determinism
    m2 = token_budget_masking(sizes, budget, 512, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.mask, m2.mask)
    # unequal group sizes: caps are respected and the budget is still exact
    m3 = token_budget_masking([2, 30], 10, 64, alpha=0.3, generator=torch.Generator().manual_seed(1))
    vis = (1 - m3.mask)
    assert torch.all(vis.sum(1) == 10) and torch.all(vis[:, :2].sum(1) <= 2)


def test_restore_tokens_places_mask_token():
    m = random_masking(2, 6, 0.5, torch.Generator().manual_seed(0))
    x = torch.arange(6).float().expand(2, 6)[..., None]
    vis = gather_tokens(x, m.ids_keep)
    full = restore_tokens(vis, torch.full((1, 1, 1), -1.0), m.ids_restore)
    assert torch.equal(full[..., 0] == -1, m.mask.bool())
    assert torch.equal(full[~m.mask.bool()], x[~m.mask.bool()])
