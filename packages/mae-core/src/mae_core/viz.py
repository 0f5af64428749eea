"""Pictures: image reconstructions (original | masked input | reconstruction | reconstruction + visible)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .checkpoint import atomic_write
from .layers import patchify, unpatchify
from .losses import normalize_patches


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (pictures are written to files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG (or the path's format)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt))
    pyplot().close(fig)
    return path


MASK_SEED_TRIES = 16  # masking draws a picture chooses from


def best_mask_seed(score, first: int = 0, tries: int = MASK_SEED_TRIES) -> int:
    """The seed in ``first .. first + tries - 1`` with the highest ``score(seed)`` (the first one on ties): a picture
    chooses the masking draw that shows what the model does (e.g. hides part of an object, not all of it)."""
    return max(range(first, first + tries), key=score)


def _to_display(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    return (x.cpu().float() * std + mean).clamp(0, 1)


@torch.no_grad()
def image_reconstruction(model, images: torch.Tensor, patch_size: int, seed: int = 0):
    """Run the MAE on ``images`` and return (original, masked, reconstruction, pasted, norm_undone, mask, raw) in
    model space.

    When the model was trained on per-patch normalised targets, its predictions are de-normalised with the true
    patch statistics of the original image (``norm_undone`` is then True); ``raw`` is the prediction as the model
    gives it (per-patch normalised in that case), as an image.
    """
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = model({"image": images}, generator=g)
    b, c, h, w = images.shape
    grid = (h // patch_size, w // patch_size)
    target = patchify(images, patch_size)
    pred = out.pred.float()
    raw = unpatchify(pred, patch_size, (h // patch_size, w // patch_size), c)
    norm = bool(getattr(model, "norm_pix_loss", False))
    if norm:
        _, (mean, scale) = normalize_patches(target, return_stats=True)
        pred = pred * scale + mean
    mask = out.mask[..., None]
    masked = unpatchify(target * (1 - mask), patch_size, grid, c)
    recon = unpatchify(pred, patch_size, grid, c)
    pasted = unpatchify(pred * mask + target * (1 - mask), patch_size, grid, c)
    return images, masked, recon, pasted, norm, out.mask, raw


def stretch(x: torch.Tensor) -> torch.Tensor:
    """An image stretched to [0, 1] by its own min and max (for a prediction with no absolute intensity)."""
    x = x.cpu().float()
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)


def save_image_reconstruction(model, images: torch.Tensor, path, mean=(0.5,) * 3, std=(0.5,) * 3,
                              patch_size: int | None = None, seed: int = 0, title: str | None = None) -> Path:
    patch_size = patch_size or model.config.patch_size
    orig, masked, recon, pasted, norm, mask, raw = image_reconstruction(model, images, patch_size, seed)
    plt = pyplot()
    n = len(images)
    cols = ["original", "masked input", "reconstruction", "reconstruction + visible"]
    if norm:
        cols.append("prediction alone\n(no true patch statistics)")
    fig, axes = plt.subplots(n, len(cols), figsize=(2 * len(cols), 2 * n + 0.6), squeeze=False, layout="constrained")
    b, c, h, w = images.shape
    # masked patches shown as mid-grey in display space
    grid = (h // patch_size, w // patch_size)
    grey_mask = unpatchify(mask[..., None].expand(-1, -1, patch_size * patch_size * c).float(), patch_size, grid, c)
    for i in range(n):
        shown = [_to_display(orig[i], mean, std),
                 _to_display(masked[i], mean, std) * (1 - grey_mask[i]) + 0.5 * grey_mask[i],
                 _to_display(recon[i], mean, std), _to_display(pasted[i], mean, std)]
        if norm:
            shown.append(stretch(raw[i]))
        for j, img in enumerate(shown):
            ax = axes[i, j]
            ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if c == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
    ratio = float(mask.float().mean())
    t = title or f"MAE reconstruction, {ratio:.0%} of patches masked"
    if norm:
        t += ("\n(target was normalised per patch: columns 3-4 are de-normalised with the true patch mean / variance; "
              "the last column is the prediction alone, stretched to the image's range)")
    fig.suptitle(t, fontsize=9)
    return save_figure(fig, path)

