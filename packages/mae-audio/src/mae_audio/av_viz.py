"""HiCMAE's picture: for a few clips, the video (original, masked, reconstruction + visible tubelets) and the fbank
(original, masked, reconstruction, reconstruction + visible patches), predictions mapped back to input units."""
from __future__ import annotations

from pathlib import Path

import torch

from mae_core.layers import patchify, unpatchify
from mae_core.losses import normalize_patches
from mae_core.viz import pyplot, save_figure


@torch.no_grad()
def av_reconstruction(model, video: torch.Tensor, audio: torch.Tensor, seed: int = 0) -> dict:
    """Panels in input units: video (B, 3, T, H, W) in [0, 1] and fbank (B, T, F) for original / masked / recon."""
    model.eval()
    c = model.config
    out = model({"video": video, "audio": audio}, generator=torch.Generator().manual_seed(seed))
    patch = (c.tubelet_size, c.patch_size, c.patch_size)
    frames = video * model.v_std + model.v_mean
    tv = patchify(frames, patch)
    _, (mean, scale) = normalize_patches(tv, channels=3, per_channel=True, return_stats=True)
    pred = out.pred.float()
    if c.frame_diff:  # undo [f0, f1 - f0, ...] inside every tubelet
        b, n, d = pred.shape
        p = pred.reshape(b, n, c.tubelet_size, d // c.tubelet_size)
        pred = torch.cat([p[:, :, :1], p[:, :, 1:] + p[:, :, :1]], dim=2).reshape(b, n, d)
    pred = pred * scale + mean
    m = out.mask[..., None]
    uv = lambda t: unpatchify(t, patch, model.video_grid, 3).clamp(0, 1)  # noqa: E731
    ta = patchify(audio, c.audio_patch_size)
    _, (am, ascale) = normalize_patches(ta, channels=1, per_channel=True, return_stats=True)
    pa = out.extra["pred_audio"].float() * ascale + am
    ma = out.extra["mask_audio"][..., None]
    ua = lambda t: unpatchify(t, c.audio_patch_size, model.audio_grid, 1)[:, 0]  # noqa: E731
    return {"video": [frames.clamp(0, 1), uv(tv * (1 - m) + 0.5 * m), uv(pred * m + tv * (1 - m))],
            "audio": [audio[:, 0], ua(ta * (1 - ma)), ua(pa), ua(pa * ma + ta * (1 - ma))],
            "audio_mask": ua(ma.expand_as(ta)), "ratios": (float(out.mask.mean()), float(ma.mean()))}


def visualize_av(model, dataset, path, num: int = 2, seed: int = 0) -> Path:
    """The MethodSpec.visualize hook: ``num`` clips spread over ``dataset``."""
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    video = torch.stack([dataset[i]["video"] for i in idx]).float()
    audio = torch.stack([dataset[i]["audio"] for i in idx]).float()
    model = model.cpu()
    panels = av_reconstruction(model, video, audio, seed)
    t = video.shape[2]
    cols = min(8, t)
    shown = torch.linspace(0, t - 1, cols).round().long().tolist()
    plt = pyplot()
    fig = plt.figure(figsize=(1.3 * cols, 5.6 * len(idx)))
    grid = fig.add_gridspec(5 * len(idx), cols)
    names = ["original", "masked", "reconstruction + visible"]
    classes = getattr(dataset, "classes", None)
    for k, i in enumerate(idx):
        for r, name in enumerate(names):
            for j, f in enumerate(shown):
                ax = fig.add_subplot(grid[5 * k + r, j])
                ax.imshow(panels["video"][r][k, :, f].permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    label = name if r else f"{name}\n{classes[int(dataset[i]['label'])] if classes else ''}"
                    ax.set_ylabel(label, fontsize=7)
                if r == 0 and k == 0:
                    ax.set_title(f"frame {f}", fontsize=7)
        spec = panels["audio"]
        lo, hi = float(spec[0][k].min()), float(spec[0][k].max())
        for j, name in enumerate(["fbank", "masked", "reconstruction", "reconstruction + visible"]):
            ax = fig.add_subplot(grid[5 * k + 3:5 * k + 5, 2 * j * cols // 8:2 * (j + 1) * cols // 8])
            img = spec[j][k].clone()
            if j == 1:
                img[panels["audio_mask"][k] > 0] = float("nan")
            ax.imshow(img.T.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi,
                      interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(name, fontsize=7)
    rv, ra = panels["ratios"]
    fig.suptitle(f"{getattr(model, 'method_name', 'hicmae')}: {rv:.0%} of the video tubelets (tube masking) and "
                 f"{ra:.0%} of the fbank patches masked; video target "
                 f"{'frame difference' if model.config.frame_diff else 'pixels'}", fontsize=8)
    return save_figure(fig, path)
