"""Label propagation (the video object segmentation protocol of CRW / DINO, with the settings of the SiamMAE and
CropMAE evaluations): the first frame's mask is propagated through the clip by feature affinity.

As the released evaluation code (CropMAE repository, ``downstreams/propagation``): features are L2-normalised; the
first frame's one-hot labels are resized bilinearly to the feature grid; for frame t every cell takes the softmax
(temperature 0.7) of its top-7 affinities (cosine similarities) over a context of the first frame plus the
``window = 20`` previous frames (the clip is padded in front with copies of the first frame, which carry its true
labels; later frames carry their predicted soft labels), and its label is the weighted vote of those 7 cells.
Cells of the previous frames count only within a spatial radius (distance < ``radius`` cells; the first frame
is not restricted). The reference radius is 20 cells of a 30-row grid (480 px frames, patch 16); here it is
scaled to the grid (``radius * h / radius_rows``; ``radius_rows = 0`` takes it in cells as given). The soft labels
are resized bilinearly to the frame and the argmax is the prediction, scored by the foreground IoU over frames
1..T-1 and by DAVIS's J (region similarity), F (contour accuracy) and J&F over frames 1..T-2
(:mod:`mae_video.davis_metrics`).

``mae-video propagate`` runs it on the synthetic clips (which carry per-frame object masks) next to the
copy-the-first-mask baseline.
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from mae_core.errors import ConfigError, MaeError

from .davis_metrics import sequence_jf

TOPK, TEMPERATURE, WINDOW, RADIUS, RADIUS_ROWS = 7, 0.7, 20, 20.0, 30


def context_frames(t: int, window: int) -> list[int]:
    """Frames whose labels vote for frame ``t``: the first frame, then the ``window`` previous frames, indices
    before 0 being the copies of frame 0 that pad the clip in front (so the list always has ``window + 1``)."""
    return [0] + [max(0, j) for j in range(t - window, t)]


def scaled_radius(radius: float | None, rows: int, radius_rows: int = RADIUS_ROWS) -> float | None:
    """The spatial radius in cells of a grid of ``rows`` rows, from ``radius`` cells of a ``radius_rows`` grid."""
    if radius is None or radius <= 0:
        return None
    return radius * rows / radius_rows if radius_rows else radius


@torch.no_grad()
def propagate_labels(feats: torch.Tensor, first_mask: torch.Tensor, num_labels: int | None = None,
                     topk: int = TOPK, window: int = WINDOW, temperature: float = TEMPERATURE,
                     radius: float | None = None) -> torch.Tensor:
    """feats (T, h, w, D) of one clip, first_mask (H, W) integer labels -> soft labels (T, K, H, W).

    ``radius`` is in cells of this grid (None: no restriction). Frame 0 keeps its true labels; frames 1.. are
    predicted in order.
    """
    t, h, w, d = feats.shape
    size = first_mask.shape[-2:]
    k = num_labels or int(first_mask.max()) + 1
    onehot = F.one_hot(first_mask.long(), k).permute(2, 0, 1).float()[None]  # (1, K, H, W)
    lab0 = F.interpolate(onehot, size=(h, w), mode="bilinear", align_corners=False)[0].reshape(k, h * w).T
    f = F.normalize(feats.reshape(t, h * w, d).float(), dim=-1)
    n = h * w
    if radius is not None:
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
        far = torch.cdist(pos, pos) >= radius  # (N, N): outside the radius
    else:
        far = None
    labels = [lab0]
    for i in range(1, t):
        ctx = context_frames(i, window)
        aff = torch.einsum("qd,mnd->qmn", f[i], f[ctx]) / temperature  # (N, M, N)
        if far is not None:
            aff[:, 1:] = aff[:, 1:].masked_fill(far[:, None, :], float("-inf"))  # not on the first frame
        top, idx = aff.reshape(n, -1).topk(min(topk, aff[0].numel()), dim=1)
        wts = torch.softmax(top, dim=1)
        vals = torch.stack([labels[j] for j in ctx]).reshape(-1, k)  # (M * N, K)
        labels.append(torch.einsum("qk,qkc->qc", wts, vals[idx]))
    out = torch.stack(labels).permute(0, 2, 1).reshape(t, k, h, w)
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


def clip_scores(soft: torch.Tensor, masks: torch.Tensor) -> dict:
    """IoU, J, F of the propagation and of copying the first mask, for one clip with one object."""
    pred = soft.argmax(1) > 0
    true = masks.bool()
    ours, copy = clip_ious(soft, masks)
    j, f = sequence_jf(pred, true)
    cj, cf = sequence_jf(true[:1].expand_as(true), true)
    return {"iou": ours, "J": j, "F": f, "copy_first_iou": copy, "copy_first_J": cj, "copy_first_F": cf}


def pixel_features(video: torch.Tensor, patch: int) -> torch.Tensor:
    """A reference feature without learning: each patch's mean colour, (B, T, H/p, W/p, C)."""
    b, c, t, h, w = video.shape
    x = F.avg_pool2d(video.transpose(1, 2).reshape(b * t, c, h, w), patch)
    return x.reshape(b, t, c, h // patch, w // patch).permute(0, 1, 3, 4, 2)


@torch.no_grad()
def evaluate_propagation(feature_fn, dataset, num_clips: int = 64, batch_size: int = 16, topk: int = TOPK,
                         window: int = WINDOW, temperature: float = TEMPERATURE, radius: float | None = RADIUS,
                         radius_rows: int = RADIUS_ROWS, moving=None) -> dict:
    """IoU, J, F and J&F of propagation with ``feature_fn(video (B, C, T, H, W)) -> (B, T, h, w, D)`` next to the
    copy-first-mask baseline, over the first ``num_clips`` clips of ``dataset`` (samples need ``masks``), overall
    and on the clips whose label is in ``moving``. ``radius`` is scaled to the grid (see :func:`scaled_radius`)."""
    n = min(num_clips, len(dataset))
    if n == 0:
        raise MaeError("label propagation needs at least one clip")
    scores, labels = [], []
    for s in range(0, n, batch_size):
        items = [dataset[i] for i in range(s, min(n, s + batch_size))]
        if "masks" not in items[0]:
            raise MaeError("label propagation needs clips with per-frame object masks (the moving-shapes dataset)")
        video = torch.stack([it["video"] for it in items])
        feats = feature_fn(video)
        r = scaled_radius(radius, feats.shape[2], radius_rows)
        for j, it in enumerate(items):
            soft = propagate_labels(feats[j], it["masks"][0], 2, topk, window, temperature, r)
            scores.append(clip_scores(soft, it["masks"]))
            labels.append(int(it["label"]))

    def mean(rows, prefix=""):
        out = {f"{prefix}{key}": sum(r[key] for r in rows) / len(rows) for key in rows[0]}
        for who in ("", "copy_first_"):
            out[f"{prefix}{who}JF"] = (out[f"{prefix}{who}J"] + out[f"{prefix}{who}F"]) / 2
        return out

    res = {**mean(scores), "clips": n}
    if moving is not None:
        sel = [sc for sc, lab in zip(scores, labels) if lab in moving]
        if sel:
            res.update(mean(sel, "moving_"))
            res["moving_clips"] = len(sel)
    return res


# ---- the `propagate` command ------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--run", metavar="DIR", help="run directory of a pretraining run (its encoder gives the features)")
    p.add_argument("--features", default="model", choices=["model", "pixels"],
                   help="model: the run's encoder; pixels: mean colour per patch (a reference without learning)")
    p.add_argument("--num-clips", type=int, default=128, help="test clips evaluated")
    p.add_argument("--topk", type=int, default=TOPK, help="neighbours voting for each cell")
    p.add_argument("--window", type=int, default=WINDOW, help="previous frames in the context (plus the first frame)")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="softmax temperature of the affinity")
    p.add_argument("--radius", type=float, default=RADIUS,
                   help="neighbours in the previous frames only closer than this many cells of a --radius-rows grid "
                        "(0 = no restriction)")
    p.add_argument("--radius-rows", type=int, default=RADIUS_ROWS,
                   help="grid rows the radius is given for (scaled to the features' rows; 0 = cells as given)")
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

    for flag, value in (("--topk", args.topk), ("--window", args.window), ("--num-clips", args.num_clips)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if not args.temperature > 0:
        raise ConfigError(f"--temperature must be positive, got {args.temperature}")
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
                               temperature=args.temperature, radius=args.radius or None,
                               radius_rows=args.radius_rows, moving=MOVING)
    res.update({"features": args.features, "topk": args.topk, "window": args.window,
                "temperature": args.temperature, "radius": args.radius, "radius_rows": args.radius_rows})
    print(f"label propagation J&F {res['JF']:.4f} (J {res['J']:.4f}, F {res['F']:.4f}), IoU {res['iou']:.4f}   "
          f"copy-first-mask baseline J&F {res['copy_first_JF']:.4f}, IoU {res['copy_first_iou']:.4f}")
    if "moving_iou" in res:
        print(f"  moving objects: J&F {res['moving_JF']:.4f}, IoU {res['moving_iou']:.4f}   baseline J&F "
              f"{res['moving_copy_first_JF']:.4f}, IoU {res['moving_copy_first_iou']:.4f}")
    if args.run:
        RunDir(args.run, create=False).write_summary({f"propagate_{args.features}": res})
    print(json.dumps(res))
    return 0
