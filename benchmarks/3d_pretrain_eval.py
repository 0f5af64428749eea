"""Does pretraining help? Point-MAE on the embedded shapes (or ModelNet10): pretrain, then a linear SVM on frozen
features of the pretrained vs a randomly initialised encoder (same architecture, same features, same SVM with
standardisation and C by cross-validation), few-shot 5-way 10-shot for both, and fine-tuning (pretrained vs scratch).

Stages (run by hand, each under the CPU lock; they write JSON into the run directory):

    # pretrain with a wall-clock budget: a 12-step calibration run measures the step rate, then the real run gets
    # as many whole epochs as fit in --budget-s (the cosine schedule ends at the end of the budget)
    OMP_NUM_THREADS=1 uv run python benchmarks/3d_pretrain_eval.py pretrain shapes \
        --out runs/b3d-shapes --budget-s 480
    # frozen-feature evaluation in one process: SVM on max+mean (and max / mean alone) + few-shot, pretrained and
    # random-init encoders
    OMP_NUM_THREADS=1 uv run python benchmarks/3d_pretrain_eval.py eval shapes \
        --out runs/b3d-shapes
    # ModelNet10 (the shared .npz), fine-tuning pretrained vs scratch
    ... pretrain modelnet10 --npz ../shared/data/modelnet10/modelnet10_pcd1024.npz --out DIR --budget-s 420
    ... finetune modelnet10 --npz ... --out DIR --finetune-epochs 3

The pretraining and fine-tuning stages run the real ``mae-3d`` commands (printed); ``eval`` does what
``mae-3d probe --probe svm [--random-init]`` and ``mae-3d fewshot [--random-init]`` do, sharing the features.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> str:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stdout[-3000:], p.stderr[-3000:])
        sys.exit(p.returncode)
    print(f"  ({time.time() - t0:.0f} s)", flush=True)
    return p.stdout


def data_flags(a) -> list[str]:
    if a.data == "shapes":
        return ["--preset", a.preset] if a.preset else []
    return ["--data", a.npz] + (["--preset", a.preset] if a.preset else [])


def stage_pretrain(a, exe):
    out = Path(a.out)
    # the sets on docs/benchmarks/3d.md train at Point-MAE's lr 1e-3; the no-argument run on the embedded shapes
    # defaults to 3e-4 since 2026-12-07 (--extra "--lr X" still wins: the last flag counts)
    lr = ["--lr", "1e-3"] if a.data == "shapes" else []
    base = ["pretrain", *data_flags(a), *lr, "--overwrite", "--no-progress", *shlex.split(a.extra)]
    steps_per_epoch = None
    epochs = a.epochs
    if a.budget_s:
        cal = out.with_name(out.name + "-calibration")
        run(exe + base + ["--out", str(cal), "--max-steps", "12", "--log-every", "4"])
        rows = [json.loads(line) for line in (cal / "metrics.jsonl").read_text().splitlines() if line.strip()]
        rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]  # the first window holds start-up
        rate = sorted(rates)[len(rates) // 2]
        import yaml
        batch = yaml.safe_load((cal / "config.yaml").read_text())["train"]["batch_size"]
        steps_per_epoch = max(1, a.num_train // batch)  # the trainer drops the last partial batch
        # the budget covers training only; start-up, data generation and pictures come on top
        epochs = max(1, int(a.budget_s * rate / batch / steps_per_epoch))
        print(f"calibration: {rate:.1f} samples/s, {steps_per_epoch} steps/epoch -> {epochs} epochs", flush=True)
    cmd = exe + base + ["--out", str(out)]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    if a.warmup_epochs is not None:
        cmd += ["--warmup-epochs", str(a.warmup_epochs)]
    t0 = time.time()
    run(cmd)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    res = {"command": " ".join(cmd[2:]), "wall_s": round(time.time() - t0, 1), "steps": summary.get("steps"),
           "epochs": epochs, "train_time_s": summary.get("train_time_s"),
           "loss_first": rows[0]["loss"] if rows else None, "loss_last": rows[-1]["loss"] if rows else None}
    print(json.dumps(res, indent=1))
    (out / "bench-pretrain.json").write_text(json.dumps(res, indent=1))


def features(run_dir: str, random_init: bool, extra: list[str]):
    """Frozen max+mean features (train, test) of the run's encoder or of a freshly initialised one (seed 0),
    built exactly as ``mae-3d probe`` / ``fewshot`` build them."""
    import mae_3d  # noqa: F401  (registers the domain)
    from mae_core.cli.flags import parse_run_command
    from mae_core.eval import extract_features
    from mae_core.train import resolve_device
    from mae_core.workflows import prepare_eval

    def flags(p):
        p.add_argument("--random-init", action="store_true")
        p.add_argument("--seed", type=int, default=0)

    argv = ["--run", run_dir, *extra] + (["--random-init"] if random_init else [])
    r, args = parse_run_command("3d", argv, "bench", flags, "")
    train_set, test_set, model = prepare_eval(r, args.run, args.random_init, args.seed)
    device = resolve_device(r.train.device)
    model.to(device)
    xtr, ytr = extract_features(model, train_set, batch_size=128, device=device)
    xte, yte = extract_features(model, test_set, batch_size=128, device=device)
    return xtr, ytr, xte, yte


def stage_eval(a):
    import torch
    from mae_core.eval.svm import few_shot, linear_svm

    out = Path(a.out)
    extra = (data_flags(a)[2:] if a.data == "modelnet10" else []) + shlex.split(a.eval_extra)
    res = {}
    tags = (("pretrained", False),) + (() if a.no_random_init else (("random_init", True),))
    for tag, rnd in tags:
        t0 = time.time()
        xtr, ytr, xte, yte = features(str(out), rnd, extra)
        d = xtr.shape[1] // 2  # encode = cat(max, mean)
        r = {"feature_s": round(time.time() - t0, 1)}
        for pool, sl in (("max+mean", slice(None)), ("max", slice(0, d)), ("mean", slice(d, None))):
            if pool not in a.pools.split(","):
                continue
            r[f"svm_{pool}"] = linear_svm(xtr[:, sl], ytr, xte[:, sl], yte)
        grid = tuple(float(c) for c in a.c_grid.split(","))
        if grid != (0.01, 0.1, 1.0):
            r["svm_max+mean_wide_C"] = linear_svm(xtr, ytr, xte, yte, c_grid=grid)
        for n in [int(v) for v in a.label_counts.split(",") if v]:
            # label efficiency: SVM on n labelled training clouds per class (5 random draws), same test set
            accs = []
            for seed in range(5):
                g = torch.Generator().manual_seed(seed)
                idx = torch.cat([c[torch.randperm(len(c), generator=g)[:n]]
                                 for c in (torch.nonzero(ytr == k).squeeze(1) for k in ytr.unique())])
                accs.append(linear_svm(xtr[idx], ytr[idx], xte, yte, c_grid=grid)["acc"])
            r[f"svm_{n}_per_class"] = {"acc": sum(accs) / len(accs), "accs": accs}
        if not a.no_fewshot:
            r["fewshot_5w10s"] = few_shot(xtr, ytr, way=5, shot=10, query=20, folds=10, test_features=xte,
                                          test_labels=yte)
        r["time_s"] = round(time.time() - t0, 1)
        res[tag] = r
        print(tag, json.dumps(r), flush=True)
    res["threads"] = torch.get_num_threads()
    print(json.dumps(res, indent=1))
    name = "bench-eval.json" if not (a.label_counts or a.eval_extra or a.c_grid != "0.01,0.1,1") else \
        f"bench-eval-{int(time.time())}.json"
    (out / name).write_text(json.dumps(res, indent=1))


def stage_finetune(a, exe):
    out = Path(a.out)
    extra = data_flags(a)[2:] if a.data == "modelnet10" else []
    res = {}
    for tag, flag in (("pretrained", []), ("scratch", ["--scratch"])):
        ft = out / f"finetune-{tag}"
        cmd = exe + ["finetune", "--run", str(out), *flag, "--epochs", str(a.finetune_epochs), "--batch-size", "32",
                     "--lr", str(a.finetune_lr), "--warmup-epochs", "0.5", "--no-progress", "--overwrite",
                     "--out", str(ft), *extra, *shlex.split(a.finetune_extra)]
        t0 = time.time()
        run(cmd)
        res[tag] = {"command": " ".join(cmd[2:]), "wall_s": round(time.time() - t0, 1),
                    **json.loads((ft / "summary.json").read_text())}
        print(tag, json.dumps(res[tag]), flush=True)
    (out / "bench-finetune.json").write_text(json.dumps(res, indent=1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["pretrain", "eval", "finetune"])
    ap.add_argument("data", choices=["shapes", "modelnet10"])
    ap.add_argument("--npz", help="ModelNet10 npz (modelnet10 only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--budget-s", type=float, default=None, help="pretraining wall-clock budget (training only)")
    ap.add_argument("--num-train", type=int, default=1200, help="training clouds (shapes: 1200, ModelNet10: 3991)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--warmup-epochs", type=float, default=None)
    ap.add_argument("--extra", default="", help="extra pretrain flags")
    ap.add_argument("--no-fewshot", action="store_true")
    ap.add_argument("--no-random-init", action="store_true", help="eval: only the run's pretrained encoder")
    ap.add_argument("--pools", default="max+mean,max,mean", help="eval: SVM on these poolings of the tokens")
    ap.add_argument("--c-grid", default="0.01,0.1,1", help="eval: SVM C values tried by cross-validation")
    ap.add_argument("--label-counts", default="", help="eval: also SVM on N labelled clouds per class (e.g. 5,10,20)")
    ap.add_argument("--eval-extra", default="", help="eval: extra data flags (e.g. a smaller labelled train split)")
    ap.add_argument("--finetune-epochs", type=int, default=3)
    ap.add_argument("--finetune-lr", type=float, default=5e-4)
    ap.add_argument("--finetune-extra", default="")
    a = ap.parse_args()
    exe = [sys.executable, "-m", "mae_3d.cli"]
    {"pretrain": lambda: stage_pretrain(a, exe), "eval": lambda: stage_eval(a),
     "finetune": lambda: stage_finetune(a, exe)}[a.stage]()


if __name__ == "__main__":
    main()
