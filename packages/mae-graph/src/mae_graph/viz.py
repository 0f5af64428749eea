"""Pictures: a 2-D projection of GraphMAE embeddings coloured by class; skeleton poses (original vs
reconstructed, masked joints marked) for SkeletonMAE."""
from __future__ import annotations

import numpy as np
import torch

from mae_core.viz import pyplot, save_figure


def _project(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    if len(x) > 10:
        from sklearn.manifold import TSNE
        x50 = PCA(n_components=min(50, x.shape[1], len(x) - 1), random_state=seed).fit_transform(x)
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, len(x) / 4)).fit_transform(x50)
    return PCA(n_components=2).fit_transform(x)


@torch.no_grad()
def draw_graph_embeddings(model, dataset, path, num: int = 1500, seed: int = 0, **_):
    """t-SNE of the frozen node (or pooled graph) embeddings, coloured by class; at most ``num`` points (all when
    the dataset is small; ``num`` below 100 is treated as 1500 so `reconstruct --num 8` still shows a picture)."""
    from mae_core.eval.probes import cached_features

    model.eval()
    num = 1500 if num < 100 else num
    base = getattr(dataset, "dataset", dataset)
    if hasattr(base, "data") and hasattr(base.data, "train_mask"):
        data = base.data
        dev = next(model.parameters()).device
        x = model.embed({"graph": data.to(dev)}).float().cpu()
        y = data.y.cpu()
    else:
        x, y = cached_features(model, dataset, {}, "viz", next(model.parameters()).device, 256)
    g = torch.Generator().manual_seed(seed)
    if len(x) > num:
        idx = torch.randperm(len(x), generator=g)[:num]
        x, y = x[idx], y[idx]
    xy = _project(x.numpy(), seed)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=y.numpy(), cmap="tab10", s=6, alpha=0.8)
    ax.legend(*sc.legend_elements(), title="class", loc="best", fontsize=7)
    ax.set_title(f"{getattr(model, 'method_name', 'graphmae')} embeddings (t-SNE), {len(x)} points")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


@torch.no_grad()
def draw_skeleton_reconstruction(model, dataset, path, num: int = 4, seed: int = 0, **_):
    """Original and reconstructed pose (front view, x-y) of one sequence for ``num`` frames (at most 6); the masked
    joints are red, the bones grey; reconstructed = visible joints as given + masked joints predicted."""
    model.eval()
    sample = dataset[0]
    x = sample["skeleton"][None].float()
    out = model({"skeleton": x, "label": torch.tensor([sample["label"]])},
                generator=torch.Generator().manual_seed(seed))
    mask = out.mask[0].bool()
    rec = torch.where(mask[None, None, :], out.pred[0].float(), x[0])
    t = x.shape[2]
    frames = torch.linspace(0, t - 1, max(1, min(num, 6))).round().long().tolist()
    edges = model.adj.nonzero().tolist()
    plt = pyplot()
    fig, axes = plt.subplots(2, len(frames), figsize=(2.2 * len(frames), 4.6), squeeze=False)
    for row, (title, seq) in enumerate((("original", x[0]), ("reconstructed", rec))):
        for col, f in enumerate(frames):
            ax = axes[row][col]
            p = seq[:, f].numpy()  # (C, V)
            for i, j in edges:
                if i < j:
                    ax.plot([p[0, i], p[0, j]], [p[1, i], p[1, j]], color="0.6", lw=1.2)
            ax.scatter(p[0, ~mask.numpy()], p[1, ~mask.numpy()], s=10, color="tab:blue")
            ax.scatter(p[0, mask.numpy()], p[1, mask.numpy()], s=22, color="tab:red", marker="x" if row else "o")
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {f}", fontsize=8)
            if col == 0:
                ax.set_ylabel(title, fontsize=8)
    fig.suptitle(f"SkeletonMAE: {int(mask.sum())} of {mask.numel()} joints masked (red)", fontsize=9)
    return save_figure(fig, path)
