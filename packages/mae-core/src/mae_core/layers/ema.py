"""An exponential-moving-average copy of a module (EMA teachers: BYOL, DINO, data2vec, iBOT ...).

``EMA(source)`` holds a deep copy of ``source`` whose parameters have ``requires_grad=False``: they live in the
state dict (so a training checkpoint saves them and an exact resume restores them) but
:func:`~mae_core.train.param_groups` skips them, so the optimizer never sees them, and DDP does not reduce them.
``update(source, momentum)`` does, for every parameter, ``ema = momentum * ema + (1 - momentum) * source`` (the
DINO / BYOL rule) and copies the buffers (running statistics, fixed position embeddings) as they are.
:class:`~mae_core.train.EMACallback` calls it after every optimizer step with a constant or cosine momentum.

Put the EMA inside the model that uses it (``self.teacher = EMA(self.encoder)``): it then follows the model's
``.to()``, its weights are in ``save_pretrained`` and in every training checkpoint. By default it stays in eval mode
(no dropout / drop path in the teacher) whatever ``train()`` the model receives; ``always_eval=False`` lets it
follow. Its forward runs the copy under ``torch.no_grad()``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA(nn.Module):
    def __init__(self, source: nn.Module, always_eval: bool = True):
        super().__init__()
        self.always_eval = always_eval
        self.module = copy.deepcopy(source)
        for p in self.module.parameters():
            p.requires_grad_(False)
            p.grad = None
        if always_eval:
            self.module.eval()
            self.training = False

    def train(self, mode: bool = True) -> "EMA":
        if self.always_eval:
            mode = False
        return super().train(mode)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, source: nn.Module, momentum: float) -> None:
        """``ema = momentum * ema + (1 - momentum) * source`` for every parameter; buffers copied from ``source``."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        dst_named, src_named = list(self.module.named_parameters()), list(source.named_parameters())
        if [n for n, _ in dst_named] != [n for n, _ in src_named]:
            raise ValueError(f"EMA.update: the source's parameters ({len(src_named)}) do not match the EMA copy's "
                             f"({len(dst_named)}); pass the module the EMA was made from")
        dst = [p for _, p in dst_named]
        src = [p.detach() for _, p in src_named]
        if dst:
            torch._foreach_mul_(dst, momentum)
            torch._foreach_add_(dst, src, alpha=1.0 - momentum)
        dst_b, src_b = list(self.module.named_buffers()), list(source.named_buffers())
        if [n for n, _ in dst_b] != [n for n, _ in src_b]:
            raise ValueError("EMA.update: the source's buffers do not match the EMA copy's")
        for (_, b), (_, sb) in zip(dst_b, src_b):
            b.copy_(sb)

    def extra_repr(self) -> str:
        return f"always_eval={self.always_eval}"
