"""Pictures of video reconstructions: a strip of frames (rows original / masked / reconstruction, one column per
frame) as PNG, and the same three panels side by side as an animated GIF. Both are written atomically.

Any model with ``reconstruct_video(video, generator) -> (hidden (B, T, H, W), reconstruction (B, C, T, H, W))``
can be drawn (VideoMAE reconstructs every masked tubelet; the siamese methods reconstruct frame t from t - 1); a model
with ``norm_pix_loss`` also takes ``return_raw=True`` and gets a fourth row, its prediction alone.

On a dataset with object masks (the embedded moving shapes) each clip gets, of the first ``tries`` masking seeds, the
one that hides about half of the object's pixels: a clip whose object is hidden in every frame shows only a guess at
the background, one whose object is all visible shows no reconstruction of it. The title says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mae_core.checkpoint import atomic_write
from mae_core.viz import MASK_SEED_TRIES, best_mask_seed, pyplot, save_figure, stretch


def _display(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(C, T, H, W) model space -> (T, H, W, C) in [0, 1]."""
    m = torch.tensor(mean).view(-1, 1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1, 1)
    return (x.cpu().float() * s + m).clamp(0, 1).permute(1, 2, 3, 0)


TRIES = MASK_SEED_TRIES  # masking seeds tried per clip for the picture


@torch.no_grad()
def object_mask_seeds(model, videos: torch.Tensor, objects: torch.Tensor, first: int = 0, tries: int = TRIES,
                      hidden: float = 0.5) -> list[int]:
    """Per clip, the masking seed in ``first .. first + tries - 1`` whose mask hides the fraction of the object's
    pixels (``objects`` (B, T, H, W), 1 on the object) closest to ``hidden``: the object partly visible, partly
    hidden."""
    model.eval()

    def closeness(v, obj):
        def score(s):
            hid = model.reconstruct_video(v[None], generator=torch.Generator().manual_seed(s))[0][0]
            return -abs(((hid.cpu().float() * obj).sum() / obj.sum().clamp(min=1)).item() - hidden)
        return score

    return [best_mask_seed(closeness(v, obj.float()), first, tries) for v, obj in zip(videos, objects)]


def reconstruction_panels(model, videos: torch.Tensor, mean, std, seed: int = 0, seeds: list[int] | None = None):
    """(original, masked, reconstruction[, prediction alone]), each (B, T, H, W, C) in [0, 1]; hidden patches are
    mid-grey. A model trained on per-patch normalised targets (``norm_pix_loss``) has its reconstruction
    de-normalised with the true patch statistics; the fourth panel is then its prediction alone, each clip
    stretched to [0, 1] by its own range. ``seeds``: one masking seed per clip (else ``seed`` for the batch)."""
    model.eval()
    norm = bool(getattr(model, "norm_pix_loss", False))
    parts = list(zip(videos.split(1), seeds)) if seeds is not None else [(videos, seed)]
    outs = []
    for clips, s in parts:
        g = torch.Generator().manual_seed(s)
        outs.append(model.reconstruct_video(clips, generator=g, return_raw=True) if norm else
                    model.reconstruct_video(clips, generator=g))
    out = [torch.cat(x) for x in zip(*outs)]
    hidden, recon = out[:2]
    orig = torch.stack([_display(v, mean, std) for v in videos])
    rec = torch.stack([_display(v, mean, std) for v in recon])
    hid = hidden.cpu().float()[..., None]
    masked = orig * (1 - hid) + 0.5 * hid
    if not norm:
        return orig, masked, rec
    raw = torch.stack([stretch(v).permute(1, 2, 3, 0) for v in out[2]])
    return orig, masked, rec, raw


def save_video_reconstruction(model, videos: torch.Tensor, path, mean=(0.5,) * 3, std=(0.5,) * 3, seed: int = 0,
                              title: str | None = None, gif: bool = True, fps: int = 4,
                              objects: torch.Tensor | None = None) -> Path:
    """Write the PNG strip at ``path`` and, with ``gif``, the animation next to it (same name, ``.gif``).
    ``objects`` (B, T, H, W): object masks; each clip's masking seed (of ``seed`` .. ``seed + 15``) then hides
    about half of its object."""
    seeds = object_mask_seeds(model, videos, objects, first=seed) if objects is not None else None
    panels = reconstruction_panels(model, videos, mean, std, seed, seeds)
    b, t = panels[0].shape[:2]
    plt = pyplot()
    rows = ["original", "masked", "reconstruction", "prediction\nalone"][:len(panels)]
    k = len(rows)
    fig, axes = plt.subplots(k * b, t, figsize=(1.1 * t, 1.15 * k * b), squeeze=False, layout="constrained")
    for i in range(b):
        for r, panel in enumerate(panels):
            for j in range(t):
                ax = axes[k * i + r, j]
                ax.imshow(panel[i, j].numpy(), vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(rows[r], fontsize=6)
                if i == 0 and r == 0:
                    ax.set_title(f"frame {j}", fontsize=7)
    name = getattr(model, "method_name", type(model).__name__)
    if title is None:
        title = f"{name}: original / masked input / reconstruction (visible patches pasted back)"
        if k == 4:
            title += (" / prediction alone\n(targets normalised per patch: the reconstruction is de-normalised with "
                      "the true patch mean / std; the last row is the prediction without them, stretched per clip)")
        if seeds is not None:
            title += f"\nmasks: of {TRIES} draws per clip, the one hiding about half of the object"
    fig.suptitle(title, fontsize=8)
    path = save_figure(fig, path)
    if gif:
        save_gif(*panels, path=Path(path).with_suffix(".gif"), fps=fps)
    return path


def save_gif(*panels: torch.Tensor, path, fps: int = 4, scale: int = 4) -> Path:
    """One GIF frame per video frame: samples stacked vertically, the panels side by side (original | masked |
    reconstruction [| prediction alone])."""
    from PIL import Image

    b, t, h, w, _ = panels[0].shape
    sep = 2
    frames = []
    for j in range(t):
        canvas = np.ones((b * (h + sep) - sep, len(panels) * (w + sep) - sep, 3), dtype=np.float32)
        for i in range(b):
            for k, panel in enumerate(panels):
                y, x = i * (h + sep), k * (w + sep)
                canvas[y:y + h, x:x + w] = panel[i, j].numpy()
        im = Image.fromarray((canvas * 255).round().astype(np.uint8))
        frames.append(im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST))
    path = Path(path)

    def write(tmp):
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    atomic_write(path, write)
    return path


def visualize_video(model, dataset, path, num: int = 4, seed: int = 0):
    """The MethodSpec.visualize hook: ``num`` clips spread over ``dataset``."""
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    samples = [dataset[i] for i in idx]
    videos = torch.stack([s["video"] for s in samples])
    objects = torch.stack([torch.as_tensor(s["masks"]) for s in samples]) if all("masks" in s for s in samples) \
        else None
    mean = getattr(dataset, "mean", (0.5,) * videos.shape[1])
    std = getattr(dataset, "std", (0.5,) * videos.shape[1])
    model = model.cpu()
    return save_video_reconstruction(model, videos, path, mean=mean, std=std, seed=seed, objects=objects)
