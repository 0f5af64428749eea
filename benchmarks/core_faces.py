"""FMAE-IAT in miniature on the embedded faces: a face MAE is pretrained once per seed, then fine-tuned for action-unit
detection with the identity adversary at several strengths lambda (0 = the head trains but sends no gradient to the
encoder). For each fine-tuned model: AU F1 (at 0.5 and at the best shared threshold, the reference's number), mean
AUC on the unseen test subjects, and an identity probe on the fine-tuned features (BN + linear head on frozen
features; per subject 70 % of the images train it, 30 % test it, as FMAE-IAT's ID probe split) for the unseen test
subjects and for the training subjects. One JSON line per fine-tune is appended to ``--out``/results.jsonl.

    uv run python benchmarks/core_faces.py --out runs/faces --seed 0 [--lambdas 0,0.5,1,2] [--pretrain-epochs 30] \
        [--finetune-epochs 10]
    uv run python benchmarks/core_faces.py --out runs/faces --table
    uv run python benchmarks/core_faces.py --out runs/faces --picture docs/benchmarks/faces-au-heatmaps.png
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def split_per_subject(subjects: torch.Tensor, frac: float = 0.7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tr, te = [], []
    for s in subjects.unique():
        idx = (subjects == s).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(frac * len(idx))
        tr.append(idx[:k])
        te.append(idx[k:])
    return torch.cat(tr), torch.cat(te)


def identity_probe(clf, ds, seed: int) -> float:
    """Accuracy of a linear identity probe on the classifier's pooled features of ``ds`` (per-subject 70 / 30)."""
    from mae_core.eval import extract_features, linear_probe

    x, s = extract_features(clf, ds, label_key="subject")
    tr, te = split_per_subject(s, seed=seed)
    s = torch.unique(s, return_inverse=True)[1]
    return linear_probe(x[tr], s[tr], x[te], s[te], seed=seed)["acc"]


def run_seed(args) -> None:
    import mae_core
    from mae_core.api import build_split
    from mae_core.eval.finetune import load_classifier
    from mae_core.runconfig import resolve_run_config

    out = Path(args.out)
    pre = out / f"pretrain-s{args.seed}"
    if not (pre / "model.safetensors").is_file():
        mae_core.pretrain("face-mae", out=str(pre), overwrite=True, epochs=args.pretrain_epochs, seed=args.seed)
    cfg = resolve_run_config(run=str(pre), base="finetune")
    train_set, test_set = build_split(cfg, "train"), build_split(cfg, "test")
    for lam in [float(v) for v in args.lambdas.split(",")]:
        dest = out / f"ft-s{args.seed}-l{lam:g}"
        t0 = time.process_time()
        summary = mae_core.finetune(str(pre), out=str(dest), overwrite=True, epochs=args.finetune_epochs,
                                    warmup_epochs=1, seed=args.seed, adversary="subject", adversary_lambda=lam)
        clf = load_classifier(dest)
        rec = {"seed": args.seed, "lambda": lam, "au_f1": summary["test_f1"], "au_f1_best": summary["test_f1_best"],
               "au_auc": summary["test_auc"], "id_probe_test_subjects": identity_probe(clf, test_set, args.seed),
               "id_probe_train_subjects": identity_probe(clf, train_set, args.seed),
               "adversary_train_acc": last_metric(dest, "adversary_acc"),
               "pretrain_epochs": args.pretrain_epochs, "finetune_epochs": args.finetune_epochs,
               "cpu_s": round(time.process_time() - t0, 1)}
        with open(out / "results.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


def last_metric(run: Path, key: str):
    vals = [json.loads(l).get(key) for l in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [v for v in vals if v is not None]
    return vals[-1] if vals else None


def table(out: Path) -> str:
    rows: dict[float, list[dict]] = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["lambda"], []).append(r)

    def cell(rs, key):
        v = [100 * r[key] for r in sorted(rs, key=lambda r: r["seed"])]
        return " / ".join(f"{x:.1f}" for x in v) + (f" (mean {statistics.mean(v):.1f})" if len(v) > 1 else "")

    lines = ["| lambda | AU F1 @0.5 (%) | AU F1, best threshold (%) | AU AUC (%) | ID probe, unseen subjects (%) "
             "| ID probe, training subjects (%) |", "|---|---|---|---|---|---|"]
    for lam in sorted(rows):
        rs = rows[lam]
        lines.append(f"| {lam:g} | {cell(rs, 'au_f1')} | {cell(rs, 'au_f1_best')} | {cell(rs, 'au_auc')} | "
                     f"{cell(rs, 'id_probe_test_subjects')} | {cell(rs, 'id_probe_train_subjects')} |")
    return "\n".join(lines)


def picture(out: Path, path: str, lambdas=(0.0, 2.0), seed: int = 0) -> None:
    """AU heat maps: |d sigmoid(AU logit) / d image| averaged over the unseen test subjects' images that show the AU,
    one row per lambda, next to the mean test face."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mae_core.api import build_split
    from mae_core.data.faces import AUS
    from mae_core.eval.finetune import load_classifier
    from mae_core.runconfig import resolve_run_config

    cfg = resolve_run_config(run=str(out / f"pretrain-s{seed}"), base="finetune")
    ds = build_split(cfg, "test")
    x = ds.images.clone().requires_grad_(True)
    fig, axes = plt.subplots(len(lambdas), len(AUS) + 1, figsize=(1.6 * (len(AUS) + 1), 1.8 * len(lambdas)))
    for r, lam in enumerate(lambdas):
        clf = load_classifier(out / f"ft-s{seed}-l{lam:g}")
        axes[r, 0].imshow((ds.images.mean(0).permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1))
        axes[r, 0].set_ylabel(f"lambda {lam:g}")
        for j, name in enumerate(AUS):
            x.grad = None
            p = torch.sigmoid(clf.logits({"image": x}))[:, j]
            (p * ds.labels[:, j]).sum().backward()
            heat = x.grad.abs().sum(1)[ds.labels[:, j] > 0].mean(0)
            axes[r, j + 1].imshow(heat / heat.max(), cmap="inferno")
            axes[0, j + 1].set_title(name, fontsize=9)
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle("AU saliency on unseen test subjects (seed %d)" % seed, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lambdas", default="0,0.5,1,2")
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--table", action="store_true", help="print the table of results.jsonl")
    ap.add_argument("--picture", metavar="PNG", help="draw the AU heat maps of seed 0, lambda 0 and 2")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.table:
        print(table(Path(args.out)))
    elif args.picture:
        picture(Path(args.out), args.picture)
    else:
        run_seed(args)


if __name__ == "__main__":
    main()
