"""Pictures: spectrogram original / masked / reconstruction (the methods' ``visualize``), and where the prototypes of
the prototypical probe fire on a clip."""
from __future__ import annotations

from pathlib import Path

import torch

from mae_core.layers import patchify, unpatchify
from mae_core.losses import normalize_patches
from mae_core.viz import pyplot, save_figure


def _show(ax, spec: torch.Tensor, title: str | None, vmin=None, vmax=None, cmap="magma"):
    """spec (T, F) shown with time on x and frequency (mel bin) on y, low frequencies at the bottom."""
    ax.imshow(spec.T.numpy(), origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


@torch.no_grad()
def spectrogram_reconstruction(model, x: torch.Tensor, seed: int = 0):
    """(original, masked, reconstruction, reconstruction + visible, mask, prediction alone) as (B, T, F): the first
    four in input units (with ``norm_pix_loss`` the reconstruction is de-normalised with the true patch statistics);
    the last is the model's output as it is (per-patch normalised with ``norm_pix_loss``)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = model({"x": x}, generator=g)
    p = model.config.patch_size
    grid = (x.shape[-2] // p, x.shape[-1] // p)
    target = patchify(x, p)
    pred = out.pred.float()
    raw = pred
    if getattr(model, "norm_pix_loss", False):
        _, (mean, scale) = normalize_patches(target, return_stats=True)
        pred = pred * scale + mean
    m = out.mask[..., None]
    un = lambda t: unpatchify(t, p, grid, 1)[:, 0]  # noqa: E731
    return (x[:, 0], un(target * (1 - m)), un(pred), un(pred * m + target * (1 - m)), un(m.expand_as(target)),
            un(raw))


def save_spectrogram_reconstruction(model, dataset, path, num: int = 4, seed: int = 0) -> Path:
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    x = torch.stack([dataset[i]["x"] for i in idx]).float()
    model = model.cpu()
    orig, masked, recon, pasted, mask, raw = spectrogram_reconstruction(model, x, seed)
    norm = bool(getattr(model, "norm_pix_loss", False))
    plt = pyplot()
    n = len(idx)
    cols = ["original", "masked input", "reconstruction", "reconstruction + visible"]
    if norm:
        cols.append("prediction alone\n(no true patch statistics)")
    fig, axes = plt.subplots(n, len(cols), figsize=(2.75 * len(cols), 2.0 * n), squeeze=False)
    for i in range(n):
        lo, hi = float(orig[i].min()), float(orig[i].max())
        shown = masked[i].clone()
        shown[mask[i] > 0] = float("nan")  # masked patches blank
        for j, img in enumerate([orig[i], shown, recon[i], pasted[i]]):
            _show(axes[i, j], img, cols[j] if i == 0 else None, lo, hi)
        if norm:  # on its own range: normalised patches have no absolute level
            _show(axes[i, 4], raw[i], cols[4] if i == 0 else None)
        names = getattr(dataset, "names", None)
        if names:
            axes[i, 0].set_ylabel(Path(str(names[idx[i]])).name[:24], fontsize=7)
    ratio = float(mask.mean())
    title = f"{getattr(model, 'method_name', 'audio-mae')}: {ratio:.0%} of the 16 x 16 patches masked " \
            f"({model.config.mask_strategy}); time ->, mel bins ^"
    if getattr(model, "norm_pix_loss", False):
        title += ("\n(targets normalised per patch: columns 3-4 are de-normalised with the true patch mean / "
                  "variance; the last column is the prediction alone, on its own colour range)")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def visualize_audio(model, dataset, path, num: int = 4, seed: int = 0):
    return save_spectrogram_reconstruction(model, dataset, path, num=num, seed=seed)


@torch.no_grad()
def save_prototype_map(model, head, sample: dict, path, classes=None, top: int = 3) -> Path:
    """Where the prototypes fire on one clip: the spectrogram, then for the ``top`` best-scoring classes the
    similarity map of that class's most active prototype (upsampled token grid, shown over the spectrogram), with
    the prototype's contribution ReLU(w) x similarity."""
    model.eval()
    head = head.cpu().eval()
    x = sample["x"][None].float().cpu()
    tokens, grid = model.cpu().token_grid({"x": x})
    logits, maps = head(tokens, grid, return_maps=True)  # (1, C), (1, C, J, H, W)
    probs = torch.softmax(logits[0], -1)
    order = logits[0].argsort(descending=True)[:top].tolist()
    plt = pyplot()
    fig, axes = plt.subplots(1, top + 1, figsize=(3.2 * (top + 1), 2.8), squeeze=False)
    spec = x[0, 0]
    _show(axes[0, 0], spec, "input (label: %s)" % _label_name(sample.get("label"), classes))
    t_len, f_len = spec.shape
    for k, c in enumerate(order):
        m = maps[0, c]  # (J, H, W)
        contrib = torch.relu(head.weight[c])[:, None, None] * m
        j = int(contrib.flatten(1).amax(-1).argmax())
        sim = m[j]
        up = torch.nn.functional.interpolate(sim[None, None], size=(t_len, f_len), mode="nearest")[0, 0]
        ax = axes[0, k + 1]
        _show(ax, spec, None, cmap="gray")
        ax.imshow(up.T.numpy(), origin="lower", aspect="auto", cmap="inferno", alpha=0.55, vmin=0, vmax=1,
                  interpolation="nearest")
        name = classes[c] if classes else str(c)
        ax.set_title(f"class {name} (p={float(probs[c]):.2f})\nprototype {j}, max sim {float(sim.max()):.2f}",
                     fontsize=8)
    fig.suptitle("prototypical probe: similarity of the most active prototype of the top classes "
                 "(time ->, mel bins ^)", fontsize=9, y=1.06)
    return save_figure(fig, path)


def _label_name(label, classes):
    if label is None:
        return "?"
    if isinstance(label, torch.Tensor) and label.ndim == 1:
        ids = label.nonzero().flatten().tolist()
        return ",".join(classes[i] if classes else str(i) for i in ids)
    i = int(label)
    return classes[i] if classes else str(i)
