"""Pictures with matplotlib (Open3D's offscreen renderer does not start headless): 3-D scatter plots of a cloud, its
visible groups and the reconstruction; for LiDAR, bird's-eye views of the kept sectors and the predicted occupancy.
Written atomically through ``mae_core.viz.save_figure``."""
from __future__ import annotations

import torch

from mae_core.viz import _plt, save_figure


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
    plt = _plt()
    fig = plt.figure(figsize=(9, 3 * b))
    for r in range(b):
        vis = target[r][~mask[r]].reshape(-1, 3)
        rec = pred[r][mask[r]].reshape(-1, 3)
        ax = fig.add_subplot(b, 3, 3 * r + 1, projection="3d")
        _scatter(ax, pts[r], "tab:gray", title="original" if r == 0 else None)
        ax = fig.add_subplot(b, 3, 3 * r + 2, projection="3d")
        _scatter(ax, vis, "tab:blue", title=f"visible groups ({int((~mask[r]).sum())}/{g})" if r == 0 else None)
        ax = fig.add_subplot(b, 3, 3 * r + 3, projection="3d")
        _scatter(ax, vis, "tab:blue")
        _scatter(ax, rec, "tab:red", title="visible (blue) + reconstructed masked groups (red)" if r == 0 else None)
    fig.suptitle(f"{getattr(model, 'method_name', 'point-mae')}: {float(mask.float().mean()):.0%} of groups masked",
                 fontsize=9)
    return save_figure(fig, path)
