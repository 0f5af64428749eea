"""Masking strategies with the reference contract of the MAE code.

Every strategy returns a :class:`MaskInfo` for a batch: ``ids_keep`` (B, K) the kept token indices,
``ids_restore`` (B, L) the permutation that puts a kept-then-masked sequence back in order, and ``mask`` (B, L),
1 = masked, 0 = kept. ``K`` is the same for every sample, so everything stays a dense tensor, and no strategy
loops over samples. Randomness comes from a ``torch.Generator`` when one is given (deterministic), else from the
global torch RNG.

The core is :func:`mask_from_scores`: tokens with the lowest score are kept. Each strategy only decides the
scores (uniform noise, a block bonus, one spatial draw repeated over time, a budget race between groups...), so an
externally supplied mask goes through exactly the same path (:func:`mask_from_mask`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import MaeError


@dataclass
class MaskInfo:
    ids_keep: torch.Tensor  # (B, K) long
    ids_restore: torch.Tensor  # (B, L) long
    mask: torch.Tensor  # (B, L) float, 1 = masked

    @property
    def num_keep(self) -> int:
        return self.ids_keep.shape[1]

    def to(self, device) -> "MaskInfo":
        return MaskInfo(self.ids_keep.to(device), self.ids_restore.to(device), self.mask.to(device))


def uniform_noise(shape, generator, device) -> torch.Tensor:
    """Uniform noise from a torch.Generator, a ShardedGenerator (DDP: the rank's rows of the global draw), or the
    global RNG."""
    if generator is not None and hasattr(generator, "rand"):
        return generator.rand(tuple(shape)).to(device)
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def num_keep(length: int, ratio: float) -> int:
    """``int(L * (1 - ratio))`` as in the MAE reference code."""
    if not 0.0 <= ratio < 1.0:
        raise MaeError(f"mask ratio must be in [0, 1), got {ratio}")
    return int(length * (1 - ratio))


def mask_from_scores(scores: torch.Tensor, len_keep: int) -> MaskInfo:
    """Keep the ``len_keep`` lowest-score tokens of each row (ties broken by position)."""
    b, length = scores.shape
    ids_shuffle = torch.argsort(scores, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones(b, length, device=scores.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return MaskInfo(ids_keep, ids_restore, mask)


def random_masking(batch: int, length: int, ratio: float, generator: torch.Generator | None = None,
                   device="cpu") -> MaskInfo:
    """MAE's per-sample random masking: argsort of uniform noise, keep ``int(L * (1 - ratio))``."""
    return mask_from_scores(uniform_noise((batch, length), generator, device), num_keep(length, ratio))


def saliency_masking(logits: torch.Tensor, len_keep: int, generator: torch.Generator | None = None) -> MaskInfo:
    """Keep ``len_keep`` tokens per row drawn *without replacement* with probabilities ``softmax(logits)`` (B, L):
    the distribution of ``torch.multinomial(softmax(logits), L, replacement=False)[:, :len_keep]`` (sequential
    draws, each renormalised over the tokens left; I2P-MAE's 2-D-guided masking, MaskAlign's attention masking with
    ``logits = log(weights)``). Drawn as the Gumbel top-k (keys ``logits + Gumbel noise``, the ``len_keep`` largest
    kept), which has exactly that distribution and takes its noise from the generator path every mask here uses
    (``torch.multinomial`` cannot draw from a :class:`~mae_core.train.distributed.ShardedGenerator`). ``-inf``
    logits are never kept while finite ones remain."""
    if not 0 <= len_keep <= logits.shape[1]:
        raise MaeError(f"cannot keep {len_keep} of {logits.shape[1]} tokens")
    u = uniform_noise(logits.shape, generator, logits.device).clamp_(1e-12, 1 - 1e-7)
    keys = logits.float() - torch.log(-torch.log(u))
    return mask_from_scores(-keys, len_keep)


def mask_from_mask(mask: torch.Tensor) -> MaskInfo:
    """An externally supplied binary mask (1 = masked); every row must mask the same number of tokens."""
    mask = mask.float()
    counts = mask.sum(1)
    if counts.numel() and not bool((counts == counts[0]).all()):
        raise MaeError(f"external mask must mask the same number of tokens per sample, got {counts.tolist()}")
    len_keep = mask.shape[1] - int(counts[0].item()) if counts.numel() else 0
    return mask_from_scores(mask, len_keep)


def block_masking(batch: int, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None,
                  device="cpu") -> MaskInfo:
    """Mask one contiguous hyper-rectangle per sample covering about ``ratio`` of the grid.

    The block's side along each axis is ``round(g * ratio ** (1 / n))``; its corner is random. The exact kept count
    ``int(L * (1 - ratio))`` is kept: tokens inside the block are masked first, then the difference is made up at
    random.
    """
    grid = tuple(grid)
    length = math.prod(grid)
    k = num_keep(length, ratio)
    n = len(grid)
    coords = torch.stack(torch.meshgrid(*[torch.arange(g, device=device) for g in grid], indexing="ij"), -1)
    coords = coords.reshape(length, n)  # (L, n)
    side = torch.tensor([max(1, min(g, round(g * ratio ** (1.0 / n)))) if ratio > 0 else 0 for g in grid],
                        device=device)
    u = uniform_noise((batch, n), generator, device)
    start = (u * (torch.tensor(grid, device=device) - side + 1)).floor().long()  # (B, n)
    inside = ((coords[None] >= start[:, None]) & (coords[None] < (start + side)[:, None])).all(-1)  # (B, L)
    scores = inside.float() + 0.5 * uniform_noise((batch, length), generator, device)
    return mask_from_scores(scores, k)


def tube_masking(batch: int, grid: Sequence[int], ratio: float, generator: torch.Generator | None = None,
                 device="cpu") -> MaskInfo:
    """VideoMAE tube masking on a (T, H, W) token grid: one spatial mask repeated over every time slot. The count
    is the reference's (``TubeMaskingGenerator``): ``int(ratio * H W)`` positions masked per slot, so 20 of 196
    stay visible at 0.9 (``int(H W (1 - ratio))`` would give 19)."""
    t, *spatial = tuple(grid)
    hw = math.prod(spatial)
    num_keep(hw, ratio)  # checks the ratio
    k = hw - int(ratio * hw)
    noise = uniform_noise((batch, 1, hw), generator, device).expand(batch, t, hw).reshape(batch, t * hw)
    return mask_from_scores(noise, t * k)


def running_cell_masking(batch: int, grid: Sequence[int], ratio: float = 0.5, generator: torch.Generator | None = None,
                         device="cpu") -> MaskInfo:
    """VideoMAE V2's running-cell mask on a (T, H, W) grid (H and W even).

    Each 2x2 spatial cell masks ``int(4 * ratio)`` of its 4 slots (ratio 0.25, 0.5 or 0.75); the masked slots
    rotate by one position every frame, and every sample starts at a random phase. Used as the decoder mask in dual
    masking: 1 = dropped from the decoder.
    """
    t, h, w = tuple(grid)
    n_mask = int(4 * ratio)
    if not 0 < n_mask < 4:
        raise MaeError(f"running-cell mask ratio must be 0.25, 0.5 or 0.75, got {ratio}")
    if h % 2 or w % 2:
        raise MaeError(f"running-cell masking needs an even spatial token grid, got {h} x {w}")
    queue = torch.cat([torch.ones(n_mask), torch.zeros(4 - n_mask)]).to(device)  # 1 = masked
    phase = (uniform_noise((batch,), generator, device) * 4).long().clamp_max(3)  # (B,)
    ti = torch.arange(t, device=device)
    hh, ww = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    slot = ((hh % 2) * 2 + (ww % 2)).reshape(-1)  # (HW,) position inside the 2x2 cell
    # as the reference generator: at frame t the queue is read from offset (phase + t + 1)
    idx = (slot[None, None, :] + phase[:, None, None] + ti[None, :, None] + 1) % 4  # (B, T, HW)
    mask = queue[idx].reshape(batch, t * h * w)
    return mask_from_mask(mask)


def token_budget_masking(group_sizes: Sequence[int], num_visible: int, batch: int, alpha: float | Sequence[float] = 1.0,
                         generator: torch.Generator | None = None, device="cpu") -> MaskInfo:
    """A fixed budget of visible tokens shared between token groups (modalities) by a Dirichlet draw per sample.

    Tokens are laid out group after group (group sizes ``group_sizes``). Each sample draws shares
    ``p ~ Dirichlet(alpha)``; tokens then race with exponential clocks ``E / (p_g / L_g)`` and the ``num_visible``
    first finish kept. So exactly ``num_visible`` tokens are visible, group g receives about ``p_g * num_visible``
    (never more than it has), a group can receive none, and the kept tokens inside a group are uniformly random.
    This is the MultiMAE / BM-MAE token-budget mask without a per-sample loop.
    """
    sizes = torch.tensor([int(s) for s in group_sizes], device=device)
    length = int(sizes.sum())
    if not 0 <= num_visible <= length:
        raise MaeError(f"visible-token budget {num_visible} must be between 0 and {length}")
    g = len(group_sizes)
    a = torch.as_tensor(alpha, dtype=torch.float32).expand(g).to(device)
    # Dirichlet = normalised Gamma draws. torch's gamma sampler takes no generator, so with a generator the
    # draw runs under a forked global RNG seeded from it (deterministic, and the global RNG is left untouched).
    rows, sl = batch, slice(None)
    base = generator
    if generator is not None and hasattr(generator, "rand"):  # ShardedGenerator: draw the global batch
        rows, sl, base = batch * generator.world, slice(generator.rank, None, generator.world), generator.generator
    conc = a.cpu().expand(rows, g).contiguous()
    if base is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=base, device=base.device).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gam = torch._standard_gamma(conc)
    else:
        gam = torch._standard_gamma(conc)
    gam = gam[sl].to(device)
    p = gam / gam.sum(1, keepdim=True).clamp_min(1e-30)  # (B, G)
    group_of = torch.repeat_interleave(torch.arange(g, device=device), sizes)  # (L,)
    rate = (p / sizes.clamp_min(1)[None].float())[:, group_of]  # (B, L)
    e = -torch.log(uniform_noise((batch, length), generator, device).clamp_min(1e-12))
    clocks = e / rate.clamp_min(1e-30)
    return mask_from_scores(clocks, num_visible)



def padded_masking(scores: torch.Tensor, lengths: torch.Tensor, ratio: float) -> MaskInfo:
    """Masking of padded variable-length sequences (LV-MAE's segment sequences): row i has ``lengths[i]`` real
    tokens at its front and padding after them. Each row keeps the ``int(n_i (1 - ratio))`` real tokens of lowest
    ``scores`` (ties by position) and masks its other real tokens; the dense kept set (``K = max_i k_i``) is
    completed with padding positions, never with masked real ones, so no hidden token reaches the encoder (padding
    always suffices: ``K - k_i <= L - n_i``). ``mask`` is 1 at every position outside ``ids_keep`` (padding
    included): multiply by the real-token mask for the loss."""
    b, length = scores.shape
    lengths = lengths.to(scores.device).long()
    pos = torch.arange(length, device=scores.device)
    real = pos[None] < lengths[:, None]
    num_keep(1, ratio)  # checks the ratio
    k = (lengths.double() * (1 - ratio)).long()  # int(n (1 - ratio)) per row, as num_keep
    rank = torch.argsort(torch.argsort(scores.masked_fill(~real, float("inf")), dim=1, stable=True), dim=1)
    # three groups sorted in this order: kept real tokens (by score), padding (by position), masked real tokens
    group = torch.where(real, (rank >= k[:, None]).long() * 2, torch.ones_like(rank))
    order = group * (length + 1) + torch.where(real, rank, pos[None].expand(b, -1))
    return mask_from_scores(order.float(), int(k.max()) if b else 0)


def predecessor_similarity(x: torch.Tensor) -> torch.Tensor:
    """LV-MAE's importance scores for a sequence of embeddings (B, L, D): the cosine similarity of each token to
    the one before it, 0 for the first. With :func:`mask_from_scores` / :func:`padded_masking` (lowest kept), the
    tokens least like their predecessor are kept and the repetitive ones masked, as the reference
    ``importance_masking`` (``data/CombinedData.py``)."""
    sim = torch.nn.functional.cosine_similarity(x[:, :-1], x[:, 1:], dim=-1)
    return torch.cat([sim.new_zeros(x.shape[0], 1), sim], dim=1)


# ---- mask-ratio schedules over training ------------------------------------------------------------------------------
MASK_SCHEDULES = ("constant", "linear", "cosine")


def scheduled_mask_ratio(progress: float, schedule: str = "constant", start: float = 0.15, end: float = 0.75,
                         fraction: float = 2 / 3, offset: float = 0.008) -> float:
    """The mask ratio at training ``progress`` (in [0, 1]).

    ``constant``: ``end`` throughout. ``linear`` / ``cosine``: from ``start`` at progress 0 to ``end`` at progress
    ``fraction``, then ``end``. ``cosine`` is LMD's (``engine_pretrain.cosine_schedule``, the improved-DDPM cosine
    with offset ``s = 0.008``): with ``u = progress / fraction`` and ``f(u) = cos((u + s) / (1 + s) * pi / 2) ** 2``,
    ``ratio = start + (end - start) * (1 - f(u) / f(0))``.
    """
    if schedule not in MASK_SCHEDULES:
        raise MaeError(f"mask schedule must be one of {', '.join(MASK_SCHEDULES)}, got {schedule!r}")
    if schedule == "constant" or progress >= fraction:
        return end
    u = max(progress, 0.0) / fraction
    if schedule == "linear":
        w = u
    else:
        f = lambda t: math.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2  # noqa: E731
        w = 1.0 - f(u) / f(0.0)
    return start + (end - start) * w


class MaskRatioSchedule:
    """Drives a model's mask ratio from the trainer's progress signal: ``set_progress(p)`` (called before every
    forward, :class:`~mae_core.train.Trainer`) sets the ratio :func:`scheduled_mask_ratio` gives, through the model's
    ``set_mask_ratio(r)`` when it has one, else its ``mask_ratio`` attribute (what :class:`MaskedAutoencoder`
    subclasses mask with). ``end=None`` ends at the ratio the model was built with. The ratio derives from the
    progress alone, so a resumed run gets the same ratios as an uninterrupted one."""

    def __init__(self, model, schedule: str = "cosine", start: float = 0.15, end: float | None = None,
                 fraction: float = 2 / 3, where: str = "train.mask_schedule"):
        has_setter = callable(getattr(model, "set_mask_ratio", None))
        base = getattr(model, "mask_ratio", None)
        if not has_setter and not isinstance(base, (int, float)):
            raise MaeError(f"{where}: {type(model).__name__} has no mask ratio to schedule (a schedule works for "
                           "methods that mask with a ratio, `mask_ratio`)")
        refused = getattr(model, "mask_schedule_refused", None)
        if refused:
            raise MaeError(f"{where}: {type(model).__name__} has no mask ratio to schedule: {refused}")
        if schedule not in MASK_SCHEDULES:
            raise MaeError(f"{where}: must be one of {', '.join(MASK_SCHEDULES)}, got {schedule!r}")
        end = float(base) if end is None else end
        for name, v in (("start", start), ("end", end)):
            if not 0.0 <= v < 1.0:
                raise MaeError(f"{where}_{name}: a mask ratio must be in [0, 1), got {v}")
        if not 0.0 < fraction <= 1.0:
            raise MaeError(f"{where}_fraction: must be in (0, 1], got {fraction}")
        self.model, self.schedule, self.start, self.end, self.fraction = model, schedule, start, end, fraction
        self.ratio = self.ratio_at(0.0)

    def ratio_at(self, progress: float) -> float:
        return scheduled_mask_ratio(progress, self.schedule, self.start, self.end, self.fraction)

    def set_progress(self, progress: float) -> None:
        self.ratio = self.ratio_at(progress)
        if callable(getattr(self.model, "set_mask_ratio", None)):
            self.model.set_mask_ratio(self.ratio)
        else:
            self.model.mask_ratio = self.ratio


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, L, D) gathered at (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def restore_tokens(x_vis: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Put visible tokens (B, K, D) back in order, filling the masked slots with ``mask_token`` (1, 1, D)."""
    b, k, d = x_vis.shape
    length = ids_restore.shape[1]
    x = torch.cat([x_vis, mask_token.to(x_vis.dtype).expand(b, length - k, d)], dim=1)
    return gather_tokens(x, ids_restore)


MASKERS = {
    "random": "random_masking",
    "block": "block_masking",
    "tube": "tube_masking",
    "running_cell": "running_cell_masking",
}


def make_mask(strategy: str, batch: int, grid: Sequence[int], ratio: float, generator=None, device="cpu") -> MaskInfo:
    """Dispatch by name over grid-shaped strategies (``random``, ``block``, ``tube``, ``running_cell``)."""
    grid = tuple(grid)
    if strategy == "random":
        return random_masking(batch, math.prod(grid), ratio, generator, device)
    if strategy == "block":
        return block_masking(batch, grid, ratio, generator, device)
    if strategy == "tube":
        return tube_masking(batch, grid, ratio, generator, device)
    if strategy == "running_cell":
        return running_cell_masking(batch, grid, ratio, generator, device)
    raise MaeError(f"unknown masking strategy {strategy!r}; choose from {sorted(MASKERS)}")
