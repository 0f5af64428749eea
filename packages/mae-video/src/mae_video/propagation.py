"""Label propagation (the video object segmentation protocol of CRW / DINO / SiamMAE): the first frame's mask is
propagated through the clip by feature affinity. For frame t every patch takes a weighted vote of the labels of
its top-k most similar patches in a context of frames (the first frame, whose labels are true, plus the ``window``
previous frames, whose labels were predicted), optionally only among patches within ``radius`` patches. The
predicted soft labels are upsampled to pixels and scored by the foreground IoU (Jaccard) against the true masks.

``mae-video propagate`` runs it on the synthetic clips (which carry per-frame object masks) next to the
copy-the-first-mask baseline.
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from mae_core.errors import ConfigError, MaeError


@torch.no_grad()
def propagate_labels(feats: torch.Tensor, first_mask: torch.Tensor, num_labels: int | None = None, topk: int = 5,
                     window: int = 4, temperature: float = 0.07, radius: float | None = None) -> torch.Tensor:
    """feats (T, h, w, D) of one clip, first_mask (H, W) integer labels -> soft labels (T, K, H, W).

    Frame 0 keeps its true labels; frames 1.. are predicted in order.
    """
    t, h, w, d = feats.shape
    size = first_mask.shape[-2:]
    k = num_labels or int(first_mask.max()) + 1
    onehot = F.one_hot(first_mask.long(), k).permute(2, 0, 1).float()[None]  # (1, K, H, W)
    lab0 = F.adaptive_avg_pool2d(onehot, (h, w))[0].reshape(k, h * w).T  # (N, K)
    f = F.normalize(feats.reshape(t, h * w, d).float(), dim=-1)
    if radius is not None and radius > 0:
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
        near = torch.cdist(pos, pos) <= radius  # (N, N)
    else:
        near = None
    labels = [lab0]
    for i in range(1, t):
        ctx = [0] + [j for j in range(max(1, i - window), i)]
        keys = f[ctx]  # (M, N, D)
        vals = torch.stack([labels[j] for j in ctx])  # (M, N, K)
        aff = torch.einsum("qd,mnd->qmn", f[i], keys)  # (N, M, N)
        if near is not None:
            aff = aff.masked_fill(~near[:, None, :], float("-inf"))
        aff = aff.reshape(h * w, -1)
        top, idx = aff.topk(min(topk, aff.shape[1]), dim=1)
        wts = torch.softmax(top / temperature, dim=1)  # exp(aff / T) over the top k, normalised
        vals = vals.reshape(-1, k)
        labels.append(torch.einsum("qk,qkc->qc", wts, vals[idx]))
    out = torch.stack(labels)  # (T, N, K)
    out = out.permute(0, 2, 1).reshape(t, k, h, w)
    out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    out[0] = onehot[0]
    return out


def iou(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Foreground IoU of two boolean masks (1 when both are empty)."""
    inter = (pred & true).sum().item()
    union = (pred | true).sum().item()
    return 1.0 if union == 0 else inter / union


def clip_ious(soft: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """(mean IoU of the propagated foreground, mean IoU of copying the first mask) over frames 1..T-1."""
    pred = soft.argmax(1) > 0  # (T, H, W)
    true = masks.bool()
    ours = [iou(pred[i], true[i]) for i in range(1, len(true))]
    copy = [iou(true[0], true[i]) for i in range(1, len(true))]
    return sum(ours) / len(ours), sum(copy) / len(copy)


def pixel_features(video: torch.Tensor, patch: int) -> torch.Tensor:
    """A reference feature without learning: each patch's mean colour, (B, T, H/p, W/p, C)."""
    b, c, t, h, w = video.shape
    x = F.avg_pool2d(video.transpose(1, 2).reshape(b * t, c, h, w), patch)
    return x.reshape(b, t, c, h // patch, w // patch).permute(0, 1, 3, 4, 2)


@torch.no_grad()
def evaluate_propagation(feature_fn, dataset, num_clips: int = 64, batch_size: int = 16, topk: int = 5,
                         window: int = 4, temperature: float = 0.07, radius: float | None = None,
                         classes=None, moving=None) -> dict:
    """Mean IoU of propagation with ``feature_fn(video (B, C, T, H, W)) -> (B, T, h, w, D)`` vs the copy baseline,
    over the first ``num_clips`` clips of ``dataset`` (samples need ``masks``), overall and on moving objects."""
    n = min(num_clips, len(dataset))
    if n == 0:
        raise MaeError("label propagation needs at least one clip")
    ours, copy, labels = [], [], []
    for s in range(0, n, batch_size):
        items = [dataset[i] for i in range(s, min(n, s + batch_size))]
        if "masks" not in items[0]:
            raise MaeError("label propagation needs clips with per-frame object masks (the moving-shapes dataset)")
        video = torch.stack([it["video"] for it in items])
        feats = feature_fn(video)
        for j, it in enumerate(items):
            soft = propagate_labels(feats[j], it["masks"][0], 2, topk, window, temperature, radius)
            a, b = clip_ious(soft, it["masks"])
            ours.append(a)
            copy.append(b)
            labels.append(int(it["label"]))
    res = {"iou": sum(ours) / n, "copy_first_iou": sum(copy) / n, "clips": n}
    if moving is not None:
        sel = [i for i, lab in enumerate(labels) if lab in moving]
        if sel:
            res["moving_iou"] = sum(ours[i] for i in sel) / len(sel)
            res["moving_copy_first_iou"] = sum(copy[i] for i in sel) / len(sel)
            res["moving_clips"] = len(sel)
    return res


# ---- the `propagate` command ------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--run", metavar="DIR", help="run directory of a pretraining run (its encoder gives the features)")
    p.add_argument("--features", default="model", choices=["model", "pixels"],
                   help="model: the run's encoder; pixels: mean colour per patch (a reference without learning)")
    p.add_argument("--num-clips", type=int, default=128, help="test clips evaluated")
    p.add_argument("--topk", type=int, default=5, help="neighbours voting for each patch")
    p.add_argument("--window", type=int, default=4, help="previous frames in the context (plus the first frame)")
    p.add_argument("--temperature", type=float, default=0.07, help="softmax temperature of the affinity")
    p.add_argument("--radius", type=float, default=0.0, help="only neighbours within this many patches (0 = all)")
    p.add_argument("--patch", type=int, default=4, help="patch side of --features pixels")
    p.add_argument("--num-frames", type=int, default=None, help="frames per clip (default: the run's)")
    p.add_argument("--image-size", type=int, default=None, help="frame side (default: the run's)")
    p.add_argument("--speed", type=float, default=None, help="object speed of the synthetic clips")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic clips")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args) -> int:
    from mae_core.api import load_run
    from mae_core.rundir import RunDir

    from .data.synthetic import MOVING, MovingShapes, MovingShapesConfig

    data_cfg = {}
    loaded = load_run(args.run) if args.run else None
    if loaded is not None:
        if loaded.config is not None and loaded.config.dataset.name == "moving-shapes":
            data_cfg = {k: getattr(loaded.config.data, k) for k in ("num_frames", "image_size", "speed")}
    elif args.features == "model":
        raise ConfigError("give --run DIR (a pretraining run), or --features pixels")
    for key in ("num_frames", "image_size", "speed"):
        if getattr(args, key) is not None:
            data_cfg[key] = getattr(args, key)
    ds = MovingShapes(MovingShapesConfig(num_train=0, num_test=args.num_clips, seed=args.seed, **data_cfg), "test")
    device = torch.device(args.device)
    if args.features == "model":
        model = loaded.model.to(device).eval()
        if not hasattr(model, "frame_features"):
            raise ConfigError(f"{args.run}: the model has no dense per-frame features")

        def feature_fn(v):
            return model.frame_features(v.to(device)).cpu()
    else:
        if ds.config.image_size % args.patch:
            raise ConfigError(f"--patch {args.patch} does not divide the frame size {ds.config.image_size}")

        def feature_fn(v):
            return pixel_features(v, args.patch)
    res = evaluate_propagation(feature_fn, ds, args.num_clips, topk=args.topk, window=args.window,
                               temperature=args.temperature, radius=args.radius or None, moving=MOVING)
    res.update({"features": args.features, "topk": args.topk, "window": args.window,
                "temperature": args.temperature, "radius": args.radius})
    print(f"label propagation IoU {res['iou']:.4f}   copy-first-mask baseline {res['copy_first_iou']:.4f}")
    if "moving_iou" in res:
        print(f"  moving objects: {res['moving_iou']:.4f}   baseline {res['moving_copy_first_iou']:.4f}")
    if args.run:
        RunDir(args.run, create=False).write_summary({f"propagate_{args.features}": res})
    print(json.dumps(res))
    return 0
