"""Pictures with matplotlib (Open3D's offscreen renderer does not start headless): 3-D scatter plots of a cloud, its
visible groups and the reconstruction; for LiDAR, bird's-eye views of the kept sectors and the predicted occupancy.
Written atomically through ``mae_core.viz.save_figure``."""
from __future__ import annotations

import torch

from mae_core.viz import pyplot, save_figure


def _scatter(ax, pts, color, size=1.5, title=None):
    pts = pts.detach().cpu().float().numpy()
    if len(pts):
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=size, c=color, depthshade=False, linewidths=0)
    ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
    ax.set_axis_off()
    ax.view_init(elev=20, azim=-60)
    if title:
        ax.set_title(title, fontsize=8)


@torch.no_grad()
def draw_point_reconstruction(model, dataset, path, num: int = 4, seed: int = 0):
    """Rows: samples; columns: original cloud, visible groups, visible + reconstructed masked groups."""
    model.eval()
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    pts = torch.stack([dataset[i]["points"] for i in idx]).float()
    out = model({"points": pts}, generator=torch.Generator().manual_seed(seed))
    centers = out.extra["centers"]
    b, g, _ = centers.shape
    target = out.target.reshape(b, g, -1, 3) + centers[:, :, None]
    pred = out.pred.reshape(b, g, -1, 3) + centers[:, :, None]
    mask = out.mask.bool()
    plt = pyplot()
    fig = plt.figure(figsize=(9.0, 2.8 * b), layout="constrained")
    for r in range(b):
        vis = target[r][~mask[r]].reshape(-1, 3)
        rec = pred[r][mask[r]].reshape(-1, 3)
        ax = fig.add_subplot(b, 3, 3 * r + 1, projection="3d")
        _scatter(ax, pts[r], "tab:gray", title="original cloud" if r == 0 else None)
        ax = fig.add_subplot(b, 3, 3 * r + 2, projection="3d")
        _scatter(ax, vis, "tab:blue", title=f"encoder input:\nvisible groups ({int((~mask[r]).sum())}/{g})"
                 if r == 0 else None)
        ax = fig.add_subplot(b, 3, 3 * r + 3, projection="3d")
        _scatter(ax, vis, "tab:blue")
        _scatter(ax, rec, "tab:red", title="visible (blue) +\nreconstructed masked groups (red)" if r == 0 else None)
    fig.suptitle(f"{getattr(model, 'method_name', 'point-mae')}: {float(mask.float().mean()):.0%} of groups masked",
                 fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def draw_point_tokens(model, dataset, path, num: int = 4, seed: int = 0):
    """The dVAE tokenizer (``point-dvae``): original cloud, each group coloured by its code id (argmax), and the
    groups the decoder rebuilds from the Gumbel-softmax codes."""
    model.eval()
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    pts = torch.stack([dataset[i]["points"] for i in idx]).float()
    out = model({"points": pts}, generator=torch.Generator().manual_seed(seed))
    centers, ids = out.extra["centers"], out.extra["ids"]
    b, g, _ = centers.shape
    target = out.target.reshape(b, g, -1, 3) + centers[:, :, None]
    pred = out.pred.reshape(b, g, -1, 3) + centers[:, :, None]
    plt = pyplot()
    cmap = plt.get_cmap("tab20")
    fig = plt.figure(figsize=(9.0, 2.8 * b))
    for r in range(b):
        m = target.shape[2]
        colors = [cmap(int(i) % 20) for i in ids[r].repeat_interleave(m).tolist()]
        ax = fig.add_subplot(b, 3, 3 * r + 1, projection="3d")
        _scatter(ax, pts[r], "tab:gray", title="original cloud" if r == 0 else None)
        ax = fig.add_subplot(b, 3, 3 * r + 2, projection="3d")
        _scatter(ax, target[r].reshape(-1, 3), colors,
                 title=f"groups coloured by code id\n({len(ids[r].unique())} codes in {g} groups)" if r == 0 else None)
        ax = fig.add_subplot(b, 3, 3 * r + 3, projection="3d")
        _scatter(ax, pred[r].reshape(-1, 3), "tab:red", title="decoded groups" if r == 0 else None)
    fig.suptitle(f"point-dvae: {int(out.metrics['codes_used'])} of {model.config.num_tokens} codes used in this batch",
                 fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def draw_lidar_reconstruction(model, dataset, path, num: int = 2, seed: int = 0):
    """Bird's-eye views per scan: kept (blue) and masked (red) occupied voxels with the sensor, the predicted
    occupancy probability (max over height) and the true occupancy."""
    import numpy as np

    model.eval()
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    occ = torch.stack([dataset[i]["occupancy"] for i in idx]).float()
    out = model({"occupancy": occ}, generator=torch.Generator().manual_seed(seed))
    prob = torch.sigmoid(model.occupancy_logits(out.pred)).amax(-1)
    keep = out.extra["keep"].any(-1)
    occ2 = occ.amax(-1) > 0
    c = model.config
    ext = [c.grid_min[0], c.grid_min[0] + c.grid[0] * c.voxel_size[0],
           c.grid_min[1], c.grid_min[1] + c.grid[1] * c.voxel_size[1]]
    plt = pyplot()
    n = len(idx)
    fig, axes = plt.subplots(n, 3, figsize=(11, 3.7 * n), squeeze=False)
    for r in range(n):
        rgb = np.ones((*occ2[r].shape, 3))
        rgb[occ2[r].numpy()] = (0.85, 0.3, 0.3)
        rgb[keep[r].numpy()] = (0.2, 0.4, 0.9)
        panels = [(rgb.transpose(1, 0, 2), None, "encoder input: kept sectors (blue),\nmasked sectors (red)"),
                  (prob[r].T.numpy(), "viridis", "predicted occupancy\n(probability, max over height)"),
                  (occ2[r].float().T.numpy(), "gray_r", "true occupancy\n(bird's-eye view)")]
        for j, (img, cmap, title) in enumerate(panels):
            ax = axes[r, j]
            ax.imshow(img, origin="lower", extent=ext, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.plot([c.sensor_origin[0]], [c.sensor_origin[1]], "k^", ms=5)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"R-MAE: {c.mask_ratio:.0%} of the non-empty {c.sector_deg:g}-degree sectors masked"
                 + (" (range-aware)" if c.range_aware else ""), fontsize=9)
    return save_figure(fig, path)
