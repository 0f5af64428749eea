"""Pictures of video reconstructions: a strip of frames (rows original / masked / reconstruction, one column per
frame) as PNG, and the same three panels side by side as an animated GIF. Both are written atomically.

Any model with ``reconstruct_video(video, generator) -> (hidden (B, T, H, W), reconstruction (B, C, T, H, W))``
can be drawn (VideoMAE reconstructs every masked tubelet; the siamese methods reconstruct frame t from t - 1).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mae_core.checkpoint import atomic_write
from mae_core.viz import pyplot, save_figure


def _display(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(C, T, H, W) model space -> (T, H, W, C) in [0, 1]."""
    m = torch.tensor(mean).view(-1, 1, 1, 1)
    s = torch.tensor(std).view(-1, 1, 1, 1)
    return (x.cpu().float() * s + m).clamp(0, 1).permute(1, 2, 3, 0)


def reconstruction_panels(model, videos: torch.Tensor, mean, std, seed: int = 0):
    """(original, masked, reconstruction), each (B, T, H, W, C) in [0, 1]; hidden patches are mid-grey."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    hidden, recon = model.reconstruct_video(videos, generator=g)
    orig = torch.stack([_display(v, mean, std) for v in videos])
    rec = torch.stack([_display(v, mean, std) for v in recon])
    hid = hidden.cpu().float()[..., None]
    masked = orig * (1 - hid) + 0.5 * hid
    return orig, masked, rec


def save_video_reconstruction(model, videos: torch.Tensor, path, mean=(0.5,) * 3, std=(0.5,) * 3, seed: int = 0,
                              title: str | None = None, gif: bool = True, fps: int = 4) -> Path:
    """Write the PNG strip at ``path`` and, with ``gif``, the animation next to it (same name, ``.gif``)."""
    orig, masked, rec = reconstruction_panels(model, videos, mean, std, seed)
    b, t = orig.shape[:2]
    plt = pyplot()
    rows = ["original", "masked", "reconstruction"]
    fig, axes = plt.subplots(3 * b, t, figsize=(1.1 * t, 1.15 * 3 * b), squeeze=False, layout="constrained")
    for i in range(b):
        for r, panel in enumerate((orig, masked, rec)):
            for j in range(t):
                ax = axes[3 * i + r, j]
                ax.imshow(panel[i, j].numpy(), vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(rows[r], fontsize=6)
                if i == 0 and r == 0:
                    ax.set_title(f"frame {j}", fontsize=7)
    name = getattr(model, "method_name", type(model).__name__)
    fig.suptitle(title or f"{name}: original / masked input / reconstruction (visible patches pasted back)",
                 fontsize=8)
    path = save_figure(fig, path)
    if gif:
        save_gif(orig, masked, rec, Path(path).with_suffix(".gif"), fps=fps)
    return path


def save_gif(orig: torch.Tensor, masked: torch.Tensor, rec: torch.Tensor, path, fps: int = 4,
             scale: int = 4) -> Path:
    """One GIF frame per video frame: samples stacked vertically, original | masked | reconstruction."""
    from PIL import Image

    b, t, h, w, _ = orig.shape
    sep = 2
    frames = []
    for j in range(t):
        canvas = np.ones((b * (h + sep) - sep, 3 * (w + sep) - sep, 3), dtype=np.float32)
        for i in range(b):
            for k, panel in enumerate((orig, masked, rec)):
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
    videos = torch.stack([dataset[i]["video"] for i in idx])
    mean = getattr(dataset, "mean", (0.5,) * videos.shape[1])
    std = getattr(dataset, "std", (0.5,) * videos.shape[1])
    model = model.cpu()
    return save_video_reconstruction(model, videos, path, mean=mean, std=std, seed=seed)
