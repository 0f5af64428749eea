"""Trajectory prediction with a ``traj-mae`` encoder: fine-tuning, the Argoverse metrics and the picture.

``mae-graph traj-predict --run RUN --out DIR`` fine-tunes the whole model (encoder + multi-modal head,
:meth:`TrajMAE.prediction_loss`) on the driving scenes (``--data DIR``: Argoverse-style CSVs instead) and reports on
the test split minADE6 / minFDE6 (the best of the 6 modes, metres) and the miss rate (min FDE > 2 m), as the
Argoverse forecasting benchmark; ``--scratch`` trains the same architecture from random weights (with ``--run``: the
run's architecture). Writes ``DIR/summary.json`` and ``DIR/pictures/predictions.png``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from mae_core.data.utils import collate_dicts
from mae_core.errors import ConfigError
from mae_core.models import ModelOutput
from mae_core.registry import CommandSpec, register_command


def trajectory_metrics(pred: torch.Tensor, future: torch.Tensor, miss_threshold: float = 2.0) -> dict:
    """``pred`` (N, K, T, 2), ``future`` (N, T, 2) -> minADE_K, minFDE_K (each sample's best mode by its own
    criterion, as Argoverse) and miss rate (min FDE > ``miss_threshold``), means over the samples."""
    dist = (pred - future[:, None]).norm(dim=-1)  # (N, K, T)
    ade, fde = dist.mean(-1).min(1).values, dist[..., -1].min(1).values
    return {"minADE": float(ade.mean()), "minFDE": float(fde.mean()),
            "MR": float((fde > miss_threshold).float().mean())}


@torch.no_grad()
def evaluate_prediction(model, ds, batch_size: int = 64, device="cpu") -> dict:
    from torch.utils.data import DataLoader

    from mae_core.train import move_to

    model.eval()
    preds, futs = [], []
    for b in DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_dicts):
        b = move_to(b, device)
        preds.append(model.predict(b)[0].cpu())
        futs.append(b["future"].float().cpu())
    return trajectory_metrics(torch.cat(preds), torch.cat(futs))


class PredictionObjective(torch.nn.Module):
    """The trainer's view of fine-tuning: ``forward`` returns :meth:`TrajMAE.prediction_loss` as a ModelOutput."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        return ModelOutput(loss=self.model.prediction_loss(batch))


def finetune_prediction(model, train_ds, test_ds, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
                        weight_decay: float = 0.01, seed: int = 0, progress: bool = False, device: str = "cpu") -> dict:
    """Fine-tune every parameter with mae-core's :class:`~mae_core.train.Trainer` and the core's fine-tuning
    optimiser defaults (AdamW betas (0.9, 0.999), linear warm-up over a tenth of the epochs, cosine to 1e-6) at the
    absolute ``lr``, every scene once per epoch (the last batch kept); returns the test metrics and the time taken."""
    from mae_core.runconfig import FINETUNE_TRAIN_DEFAULTS, FINETUNE_WARMUP_FRACTION
    from mae_core.train import Trainer, TrainConfig

    d = FINETUNE_TRAIN_DEFAULTS
    cfg = TrainConfig(epochs=epochs, batch_size=min(batch_size, len(train_ds)), lr=lr, betas=d["betas"],
                      warmup_epochs=min(d["warmup_epochs"], FINETUNE_WARMUP_FRACTION * epochs), min_lr=d["min_lr"],
                      weight_decay=weight_decay, drop_last=False, seed=seed, device=device, progress=progress,
                      log_every=max(1, len(train_ds) // batch_size))
    trainer = Trainer(PredictionObjective(model), train_ds, cfg, run_dir=None)
    summary = trainer.fit()
    res = evaluate_prediction(model, test_ds, device=trainer.device)
    res.update(train_s=summary["train_time_s"], steps=summary["steps"], epochs=epochs,
               final_loss=summary["final_loss"], train_scenes=len(train_ds), test_scenes=len(test_ds))
    return res


# ---- picture ---------------------------------------------------------------------------------------------------------
def _draw_map(ax, sample, skip=()):
    vec, vm, pm = sample["vectors"], sample["vector_mask"], sample["polyline_mask"]
    for k in range(int(pm.sum())):
        if k in skip:
            continue
        pts = vec[k][vm[k]]
        if not len(pts):
            continue
        xy = torch.cat([pts[:, :2], pts[-1:, 2:4]]).numpy()
        lane = bool(pts[0, 6])
        ax.plot(xy[:, 0], xy[:, 1], color="0.75" if lane else ("k" if k == 0 else "tab:blue"),
                lw=1 if lane else 2, zorder=1 if lane else 3)


def draw_predictions(model, dataset, path, num: int = 4, seed: int = 0) -> None:
    """Predicted futures (6 modes, red, width by score) with the true future (green) on the map."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.random.default_rng(seed).choice(len(dataset), size=min(num, len(dataset)), replace=False)
    batch = collate_dicts([dataset[int(i)] for i in idx])
    model.eval()
    with torch.no_grad():
        traj, logits = model.predict(batch)
    prob = logits.softmax(-1)
    fig, axes = plt.subplots(1, len(idx), figsize=(4 * len(idx), 4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        s = dataset[int(idx[j])]
        _draw_map(ax, s)
        for m in range(traj.shape[1]):
            ax.plot(traj[j, m, :, 0], traj[j, m, :, 1], color="tab:red", lw=0.5 + 3 * float(prob[j, m]), zorder=4)
        ax.plot(s["future"][:, 0], s["future"][:, 1], color="tab:green", lw=2, zorder=5)
        ax.set_xlim(-30, 50), ax.set_ylim(-40, 40), ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_title("lanes grey, agents blue, focal history black,\nfuture green, 6 predicted modes red",
                         fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def draw_pretext(model, dataset, path, num: int = 3, seed: int = 0) -> None:
    """The pretraining picture: top, a masked focal history and its 6 reconstructed modes (red) against the truth
    (green); bottom, the dropped polylines (orange, truth) and their reconstruction (purple)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.random.default_rng(seed).choice(len(dataset), size=min(num, len(dataset)), replace=False)
    batch = collate_dicts([dataset[int(i)] for i in idx])
    model.eval()
    s = model.config.coord_scale
    fig, axes = plt.subplots(2, len(idx), figsize=(4 * len(idx), 8), squeeze=False)
    with torch.no_grad():
        for row, task in enumerate(("traj", "map")):
            r = model.pretext(batch, torch.Generator().manual_seed(seed), task=task, rotate=False)
            for j, ax in enumerate(axes[row]):
                drop = set(r["drop"][j].nonzero().squeeze(1).tolist())
                _draw_map(ax, dataset[int(idx[j])], skip=drop)
                ok = r["qvalid"][j]
                tgt = r["target"][j][ok] * s
                poly = (r["ids"][j][ok] // batch["vectors"].shape[2]).numpy()
                pred = (r["pred_traj"][j][ok] if task == "traj" else r["pred_map"][j][ok][:, None]) * s
                for p in np.unique(poly):
                    sel = torch.from_numpy(poly == p)
                    t = torch.cat([tgt[sel][:, :2], tgt[sel][-1:, 2:]]).numpy()
                    ax.plot(t[:, 0], t[:, 1], color="tab:green" if task == "traj" else "tab:orange", lw=2, zorder=4)
                    for m in range(pred.shape[1]):
                        q = torch.cat([pred[sel][:, m, :2], pred[sel][-1:, m, 2:]]).numpy()
                        ax.plot(q[:, 0], q[:, 1], color="tab:red" if task == "traj" else "tab:purple", lw=1,
                                zorder=5)
                ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
        axes[0, 0].set_title("masked focal history: truth green, 6 modes red", fontsize=8)
        axes[1, 0].set_title("dropped polylines: truth orange, reconstruction purple", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---- command ---------------------------------------------------------------------------------------------------------
def predict_arguments(p) -> None:
    p.add_argument("--run", help="a traj-mae pretraining run (or save_pretrained folder) to fine-tune")
    p.add_argument("--scratch", action="store_true", help="random weights (with --run: the run's architecture)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for summary.json and pictures/")
    p.add_argument("--data", help="folder of Argoverse-style scene CSVs (default: the embedded driving scenes)")
    p.add_argument("--num-train", type=int, default=1000, help="fine-tuning scenes (embedded data)")
    p.add_argument("--num-test", type=int, default=500, help="test scenes (embedded data)")
    p.add_argument("--data-seed", type=int, default=100, help="embedded data: a stream apart from pretraining's")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)


def run_predict(args) -> int:
    import mae_core

    from .data.driving import DrivingCSVConfig, DrivingScenesConfig, make_driving_csv, make_driving_scenes

    for name in ("epochs", "batch_size", "num_train", "num_test"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise ConfigError(f"--lr: must be a positive number, got {args.lr}")
    if not args.run and not args.scratch:
        raise ConfigError("give --run RUN (a traj-mae pretraining run) or --scratch")
    if args.data:
        train, test = (make_driving_csv(DrivingCSVConfig(path=args.data), s) for s in ("train", "test"))
    else:
        cfg = DrivingScenesConfig(num_train=args.num_train, num_test=args.num_test, seed=args.data_seed)
        train, test = make_driving_scenes(cfg, "train"), make_driving_scenes(cfg, "test")
    torch.manual_seed(args.seed)
    if args.run:
        model = mae_core.load_run(args.run, weights=not args.scratch).model
        if getattr(model, "method_name", "") != "traj-mae":
            raise ConfigError(f"--run {args.run}: a {getattr(model, 'method_name', '?')} run, not traj-mae")
    else:
        model = mae_core.create_model("traj-mae", domain="graph")
    res = finetune_prediction(model, train, test, args.epochs, args.batch_size, args.lr, seed=args.seed,
                              progress=True)
    res.update(run=args.run, scratch=bool(args.scratch), seed=args.seed)
    out = Path(args.out)
    (out / "pictures").mkdir(parents=True, exist_ok=True)
    draw_predictions(model, test, out / "pictures" / "predictions.png")
    (out / "summary.json").write_text(json.dumps(res, indent=1))
    print(f"minADE6 {res['minADE']:.3f} m  minFDE6 {res['minFDE']:.3f} m  MR(2 m) {100 * res['MR']:.1f} %")
    return 0


register_command(CommandSpec(name="traj-predict", domain="graph",
                             help="fine-tune a traj-mae run for trajectory prediction: minADE6 / minFDE6 / miss rate",
                             add_arguments=predict_arguments, run=run_predict))
