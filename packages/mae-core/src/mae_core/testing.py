"""Small helpers for tests of mae-core and the domain packages (tiny configs, quick checks)."""
from __future__ import annotations

import contextlib

import torch

from .models.image_mae import ImageMAEConfig


def tiny_image_cfg(**kw) -> ImageMAEConfig:
    base = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2, decoder_embed_dim=16,
                decoder_depth=1, decoder_num_heads=2)
    base.update(kw)
    return ImageMAEConfig(**base)


def loss_falls(model, batch: dict, steps: int = 30, lr: float = 2e-3, seed: int = 0, factor: float = 0.8) -> tuple[float, float]:
    """Train ``model`` on one fixed batch; returns (mean of the first 5 losses, mean of the last 5)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(steps):
        out = model(batch, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5


class MarkerPayload:
    """Stands in for an attacker's object: unpickling it runs code that writes ``marker``. Pickle it, put it in an
    object array (``np.save``) or a ``torch.save`` checkpoint, then check that a reader refuses the file and that
    ``marker`` does not exist. Its pickle names only ``builtins.exec``, so loading needs no import of this module."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@contextlib.contextmanager
def single_thread():
    """One intra-op thread while the block runs: tiny models run fastest that way, and on a loaded machine far
    faster than with several (OpenMP threads wait for each other). Test fixtures wrap their tests in it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
