"""A first-in-first-out queue of feature vectors (MoCo's dictionary of negatives, memory banks).

The queue, its write pointer and its fill count are buffers, so they travel with ``state_dict``: a training
checkpoint saves them and an exact resume restores them.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class FeatureQueue(nn.Module):
    """``size`` slots of ``dim``-dimensional features, overwritten oldest first.

    ``enqueue(x)`` writes the rows of ``x`` (N, dim) in order at the write pointer, wrapping around the end; when
    N > size only the last ``size`` rows stay, exactly as if the rows had been enqueued one at a time. Rows are
    detached and stored in the queue's dtype. ``features`` is a view of the filled slots in storage order (all
    ``size`` of them once the queue has wrapped); ``ordered()`` is a copy, oldest first. Under DDP gather the rows
    of every process before enqueueing (MoCo's ``concat_all_gather``) so that every process holds the same queue.
    """

    def __init__(self, size: int, dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.size, self.dim = int(size), int(dim)
        self.register_buffer("queue", torch.zeros(self.size, self.dim, dtype=dtype))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.count)

    @property
    def full(self) -> bool:
        return int(self.count) == self.size

    @property
    def features(self) -> torch.Tensor:
        """The filled slots (len(self), dim): a view in storage order."""
        return self.queue[:int(self.count)]

    def ordered(self) -> torch.Tensor:
        """The filled slots, oldest first (a copy)."""
        if not self.full:
            return self.features.clone()
        return torch.roll(self.queue, -int(self.ptr), dims=0)

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"FeatureQueue.enqueue expects (N, {self.dim}) features, got {tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return
        m = min(n, self.size)  # only the last `size` rows survive
        idx = (self.ptr + torch.arange(n - m, n, device=self.queue.device)) % self.size
        self.queue[idx] = x[n - m:].detach().to(self.queue.device, self.queue.dtype)
        self.ptr.copy_((self.ptr + n) % self.size)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))

    @torch.no_grad()
    def reset(self) -> None:
        self.queue.zero_()
        self.ptr.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
