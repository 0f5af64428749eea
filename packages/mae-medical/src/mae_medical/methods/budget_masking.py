"""BM-MAE's token budget as the reference code draws it (``BMMAE.generate_random_masks``, adapted from MultiMAE).

Per sample, shares ``p ~ Dirichlet(alpha)`` over the G token groups (modalities) are drawn, and redrawn while a
share reaches ``L_g / K`` (a group cannot give more tokens than it has). Group g then keeps ``round(p_g * K)`` of
its tokens, chosen uniformly at random. The rounded counts need not add up to K; as in the reference, the kept
tokens are put first (in random order), the other tokens after them (in random order), and the first K of that
order are visible: a shortfall is filled with random other tokens, an excess drops random kept ones.

This differs from :func:`mae_core.masking.token_budget_masking`, whose exponential race gives group g about
``p_g * K`` tokens only in expectation, with a flatter split (mean largest share 0.477 instead of the Dirichlet's
0.521 for four groups of 64 tokens and K = 64). Both go through :func:`mae_core.masking.mask_from_scores`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from mae_core.errors import MaeError
from mae_core.masking import MaskInfo, mask_from_scores, uniform_noise


def dirichlet_shares(batch: int, num_groups: int, alpha: float = 1.0, generator=None, device="cpu") -> torch.Tensor:
    """(B, G) Dirichlet(alpha) draws. alpha = 1 (the reference): normalised exponentials of the generator's uniform
    noise (exact, and split-invariant under DDP). Other alphas: Gamma draws under a forked global RNG seeded from
    the generator (deterministic for a given generator)."""
    if alpha <= 0:
        raise MaeError(f"dirichlet_alpha must be > 0, got {alpha}")
    if alpha == 1.0:
        gam = -torch.log(uniform_noise((batch, num_groups), generator, device).clamp_min(1e-12))
    else:
        conc = torch.full((batch, num_groups), float(alpha))
        if generator is not None:
            seed = int(uniform_noise((1,), generator, "cpu")[0].item() * 2**62)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                gam = torch.distributions.Gamma(conc, torch.ones_like(conc)).sample()
        else:
            gam = torch.distributions.Gamma(conc, torch.ones_like(conc)).sample()
        gam = gam.to(device)
    return gam / gam.sum(1, keepdim=True).clamp_min(1e-30)


def dirichlet_round_masking(group_sizes: Sequence[int], num_visible: int, batch: int, alpha: float = 1.0,
                            generator=None, device="cpu", shares: torch.Tensor | None = None,
                            max_redraws: int = 1000) -> MaskInfo:
    """Exactly ``num_visible`` visible tokens per sample, group g receiving ``round(p_g * K)`` of them (before the
    reference's adjustment to K). Tokens are laid out group after group. ``shares`` (B, G) replaces the Dirichlet
    draw (tests)."""
    sizes = [int(s) for s in group_sizes]
    g, length, k = len(sizes), sum(sizes), int(num_visible)
    if not 0 <= k <= length:
        raise MaeError(f"visible-token budget {k} must be between 0 and {length}")
    if k == 0:
        return mask_from_scores(torch.zeros(batch, length, device=device), 0)
    limit = torch.tensor(sizes, dtype=torch.float32, device=device) / k  # a share must stay below L_g / K
    if shares is None:
        p = dirichlet_shares(batch, g, alpha, generator, device)
        for _ in range(max_redraws):
            bad = (p >= limit).any(1)
            if not bool(bad.any()):
                break
            p = torch.where(bad[:, None], dirichlet_shares(batch, g, alpha, generator, device), p)
        else:
            raise MaeError(f"no Dirichlet split of {k} visible tokens fits group sizes {sizes}")
    else:
        p = shares.to(device).float()
    counts = (p * k).round().long()  # (B, G), as the reference: no correction of the rounding here
    group_of = torch.repeat_interleave(torch.arange(g, device=device), torch.tensor(sizes, device=device))
    # rank of every token inside its group under a random order: the first counts[g] are the group's picks
    noise = uniform_noise((batch, length), generator, device)
    order = torch.argsort(noise + group_of[None].float(), dim=1)  # groups stay in order, random inside
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(length, device=device).expand(batch, -1).contiguous())
    starts = torch.tensor([0] + sizes[:-1], device=device).cumsum(0)[group_of]
    picked = (rank - starts[None]) < counts[:, group_of]
    # picked tokens first, then the others, each in random order; the first K are visible
    scores = (~picked).float() + uniform_noise((batch, length), generator, device)
    return mask_from_scores(scores, k)
