"""Pictures of 3-D multimodal reconstructions: axial, coronal and sagittal slices of every modality (original,
masked input, reconstruction), and an imputed modality beside the real one. Written atomically."""
from __future__ import annotations

import torch

from mae_core.layers import patchify, unpatchify
from mae_core.viz import MASK_SEED_TRIES, best_mask_seed, pyplot, save_figure

VIEWS = ("axial", "coronal", "sagittal")


def _slices(vol: torch.Tensor, centre=None):
    """(D, H, W) volume in RAS array order (x, y, z) -> axial (z), coronal (y), sagittal (x) mid slices."""
    x, y, z = vol.shape
    cx, cy, cz = centre or (x // 2, y // 2, z // 2)
    return [vol[:, :, cz].T, vol[:, cy, :].T, vol[cx, :, :].T]


TRIES = MASK_SEED_TRIES  # masking seeds tried for a case with a known tumour


@torch.no_grad()
def tumour_mask_seed(model, sample: dict, tumour: torch.Tensor, first: int = 0, tries: int = TRIES) -> int:
    """Of the masking seeds ``first .. first + tries - 1``, the one that hides the largest share of the tumour's
    voxels over the modalities while at least one modality shows at least half of them: a tumour hidden everywhere
    can only be guessed, one visible everywhere shows no reconstruction. Depends on the masks only."""
    model.eval()
    batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor) and v.ndim == 4}
    weight = patchify(tumour[None, None].float(), model.config.patch_size).sum(-1)  # (1, L) tumour voxels per patch

    def score(s):
        mask = model(batch, generator=torch.Generator().manual_seed(s)).mask.reshape(1, len(model.modalities), -1)
        hidden = (mask * weight[:, None]).sum(-1)[0] / weight.sum().clamp(min=1)  # per modality
        return float(hidden.mean()) if float(hidden.min()) <= 0.5 else -1.0

    return best_mask_seed(score, first, tries)


@torch.no_grad()
def save_multimodal_reconstruction(model, sample: dict, path, seed: int = 0, tumour: torch.Tensor | None = None):
    """One case: rows = modality x (original, masked, reconstruction), columns = the three views. ``tumour``
    (D, H, W) bool: the slices go through its centre, and the mask (of ``seed`` .. ``seed + 15``) hides most of it
    in some modalities while one shows it (``tumour_mask_seed``); the title says so."""
    plt = pyplot()
    model.eval()
    batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor) and v.ndim == 4}
    centre = None
    if tumour is not None:
        seed = tumour_mask_seed(model, sample, tumour, first=seed)
        centre = tuple(int(c) for c in tumour.nonzero().float().mean(0).round().long())
    g = torch.Generator().manual_seed(seed)
    out = model(batch, generator=g)
    mods = [m for m in model.modalities if m in batch]
    p = model.config.patch_size
    length = out.mask.shape[1] // len(model.modalities)
    grid = model._grid_of(batch, model.present(batch))
    fig, axes = plt.subplots(3 * len(mods), 3, figsize=(6.3, 2.1 * 3 * len(mods)), layout="constrained")
    for r, m in enumerate(mods):
        i = model.modalities.index(m)
        sl = slice(i * length, (i + 1) * length)
        orig = batch[m][0, 0].float()
        mask = out.mask[:, sl][..., None]
        tgt = patchify(batch[m].float(), p)
        masked = unpatchify(tgt * (1 - mask), p, grid, 1)[0, 0]
        recon = unpatchify(out.pred[:, sl].float() * mask + tgt * (1 - mask), p, grid, 1)[0, 0]
        vis = 100.0 * (1 - float(out.mask[:, sl].mean()))
        lo, hi = float(orig.min()), float(orig.max())
        for k, (vol, what) in enumerate([(orig, "original"), (masked, f"masked ({vis:.0f}% visible)"),
                                         (recon, "reconstruction")]):
            for j, img in enumerate(_slices(vol, centre)):
                ax = axes[3 * r + k, j]
                ax.imshow(img.numpy(), cmap="gray", origin="lower", vmin=lo, vmax=hi)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{m}\n{what}", fontsize=7)
                if r == 0 and k == 0:
                    ax.set_title(VIEWS[j], fontsize=8)
    title = "BM-MAE: original / masked input / reconstruction (visible patches pasted back)"
    if tumour is not None:
        title += (f"\nslices through the tumour's centre; mask: of {TRIES} draws, the one hiding most of the tumour "
                  "while one modality shows it")
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def save_imputation_figure(real: torch.Tensor | None, imputed: torch.Tensor, inputs: dict[str, torch.Tensor],
                           name: str, path, baseline: torch.Tensor | None = None, centre=None):
    """Rows: the present modalities, the imputed one, (the baseline,) the real one; columns: three views."""
    plt = pyplot()
    rows = [(f"input {m}", v) for m, v in inputs.items()] + [(f"imputed {name}", imputed)]
    if baseline is not None:
        rows.append((f"baseline {name}", baseline))
    if real is not None:
        rows.append((f"real {name}", real))
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.3, 2.1 * len(rows)), layout="constrained")
    ref = real if real is not None else imputed
    lo, hi = float(ref.min()), float(ref.max())
    for r, (label, vol) in enumerate(rows):
        v_lo, v_hi = (lo, hi) if name in label else (float(vol.min()), float(vol.max()))
        for j, img in enumerate(_slices(vol.float(), centre)):
            ax = axes[r, j]
            ax.imshow(img.numpy(), cmap="gray", origin="lower", vmin=v_lo, vmax=v_hi)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(VIEWS[j], fontsize=8)
    fig.suptitle(f"BM-MAE imputation of {name}", fontsize=8)
    return save_figure(fig, path)


def visualize_bm_mae(model, dataset, path, num: int = 1, seed: int = 0):
    sample = dataset[0]
    tumour = dataset.tumour(0) if hasattr(dataset, "tumour") else None  # the embedded synthetic heads know theirs
    return save_multimodal_reconstruction(model.cpu(), sample, path, seed=seed, tumour=tumour)


@torch.no_grad()
def save_volume_reconstruction(model, sample: dict, path, seed: int = 0, title: str = "Hi-End-MAE"):
    """One case of a model with ``reconstruct(batch, generator)`` -> {input, masked, reconstruction, mask}
    (B, C, D, H, W): rows = channel x (original, masked, reconstruction), columns = the three views."""
    plt = pyplot()
    model.eval()
    batch = {k: v[None] for k, v in sample.items() if isinstance(v, torch.Tensor) and v.ndim == 4}
    out = model.reconstruct(batch, generator=torch.Generator().manual_seed(seed))
    names = list(getattr(model, "modalities", None) or [f"channel {i}" for i in range(out["input"].shape[1])])
    vis = 100.0 * (1 - float(out["mask"].mean()))
    fig, axes = plt.subplots(3 * len(names), 3, figsize=(6.3, 2.1 * 3 * len(names)), layout="constrained")
    for r, name in enumerate(names):
        orig = out["input"][0, r].float()
        lo, hi = float(orig.min()), float(orig.max())
        rows = [(orig, "original"), (out["masked"][0, r], f"masked ({vis:.0f}% visible)"),
                (out["reconstruction"][0, r], "reconstruction")]
        for k, (vol, what) in enumerate(rows):
            for j, img in enumerate(_slices(vol.float())):
                ax = axes[3 * r + k, j]
                ax.imshow(img.numpy(), cmap="gray", origin="lower", vmin=lo, vmax=hi)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{name}\n{what}", fontsize=7)
                if r == 0 and k == 0:
                    ax.set_title(VIEWS[j], fontsize=8)
    fig.suptitle(f"{title}: original / masked input / reconstruction (visible patches pasted back)", fontsize=8)
    return save_figure(fig, path)


def visualize_volume_mae(model, dataset, path, num: int = 1, seed: int = 0):
    return save_volume_reconstruction(model.cpu(), dataset[0], path, seed=seed)


@torch.no_grad()
def save_image_reconstruction_rows(model, images: torch.Tensor, path, seed: int = 0, title: str = "SparK"):
    """2-D images (N, C, H, W) of a model with ``reconstruct``: one row per image (original, masked,
    reconstruction; first channel)."""
    plt = pyplot()
    model.eval()
    out = model.reconstruct({"image": images}, generator=torch.Generator().manual_seed(seed))
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(4.2, 1.4 * n), layout="constrained", squeeze=False)
    for i in range(n):
        lo, hi = float(images[i, 0].min()), float(images[i, 0].max())
        for j, key in enumerate(("input", "masked", "reconstruction")):
            ax = axes[i, j]
            ax.imshow(out[key][i, 0].float().numpy(), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(("original", "masked", "reconstruction")[j], fontsize=8)
    fig.suptitle(f"{title}: visible patches pasted back", fontsize=8)
    return save_figure(fig, path)


def visualize_spark(model, dataset, path, num: int = 6, seed: int = 0):
    model = model.cpu()
    if model.config.spatial_dims == 3:
        return save_volume_reconstruction(model, dataset[0], path, seed=seed, title="SparK")
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    return save_image_reconstruction_rows(model, torch.stack([dataset[i]["image"] for i in idx]), path, seed=seed)
