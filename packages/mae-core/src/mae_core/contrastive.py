"""SimCLR's two-view recipe, shared by every encoder that trains with it (the contrastive ViT, and CNNs in the
domain packages): two augmented views of each image made in ``forward`` from the trainer's generator
(:func:`simclr_pair`), and the NT-Xent loss over the 2B views with the top-1 positive-retrieval rate
(:func:`nt_xent`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .augment import simclr_view
from .losses import info_nce
from .masking import uniform_noise

VIEW_PARAMS = 11  # uniform numbers per view (see mae_core.augment.simclr_view)


def simclr_pair(images: torch.Tensor, config, generator: torch.Generator | None = None) -> torch.Tensor:
    """(2B, C, H, W): view 1 of every normalised image, then view 2 (:func:`mae_core.augment.simclr_view`).

    ``config`` carries the augmentation fields of :class:`mae_core.models.contrastive_vit.ContrastiveViTConfig`
    (``mean``, ``std``, ``crop_scale``, ``crop_aspect``, ``flip_prob``, ``jitter_prob``, ``jitter``,
    ``grayscale_prob``). One row of uniform numbers per image (both views), so a sharded generator gives every
    sample the same views whatever the process split."""
    c = config
    u = uniform_noise((images.shape[0], 2 * VIEW_PARAMS), generator, images.device).to(images.dtype)
    kw = dict(mean=c.mean, std=c.std, scale=c.crop_scale, aspect=c.crop_aspect, flip_prob=c.flip_prob,
              jitter_prob=c.jitter_prob, jitter=c.jitter, grayscale_prob=c.grayscale_prob)
    return torch.cat([simclr_view(images, u[:, :VIEW_PARAMS], **kw), simclr_view(images, u[:, VIEW_PARAMS:], **kw)])


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """SimCLR's NT-Xent of the projections of view 1 (B, D) and view 2 (B, D): InfoNCE over the 2B views, each
    view's positive its other view and its 2B - 2 negatives every other view (``mae_core.losses.info_nce``,
    symmetric, with self-negatives). Returns (loss, how often a view's nearest other view by cosine is its
    positive)."""
    loss = info_nce(z1, z2, temperature=temperature, symmetric=True, self_negatives=True)
    with torch.no_grad():
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        sim = (z @ z.T).fill_diagonal_(float("-inf"))
        b = z1.shape[0]
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(sim.device)
        acc = (sim.argmax(1) == target).float().mean()
    return loss, float(acc)
