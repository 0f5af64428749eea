"""Point-BERT in miniature on ModelNet10: the dVAE tokenizer (point-dvae), then masked point modeling (point-bert)
with and without the point-mixing contrastive loss, against Point-MAE and a random-init encoder, under the frozen
linear SVM and 5-way 10-shot. The dVAE's training time counts in Point-BERT's budget.

Stages (each its own process, one thread; they write JSON next to the runs):

    NPZ=ModelNet10/modelnet10_pcd1024.npz
    python benchmarks/3d_point_bert.py pretrain point-mae  --seed 0 --npz $NPZ --root runs/pb
    python benchmarks/3d_point_bert.py pretrain point-dvae --seed 0 --npz $NPZ --root runs/pb
    python benchmarks/3d_point_bert.py pretrain mpm        --seed 0 --npz $NPZ --root runs/pb   # needs the dVAE
    python benchmarks/3d_point_bert.py pretrain mpm-mix    --seed 0 --npz $NPZ --root runs/pb   # needs the dVAE
    python benchmarks/3d_point_bert.py eval --seed 0 --root runs/pb   # SVM + few-shot of every finished run + scratch
    python benchmarks/3d_point_bert.py table --root runs/pb

``pretrain`` runs the real ``mae-3d pretrain`` command (printed, recorded with its training time); ``eval`` reads the
frozen encoders' max + mean token features (``encode``, the default pool of both methods) on the run's own data.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

SMALL = ["--num-points", "512", "--pointnet-dims", "32", "64", "128"]
ENCODER = ["--embed-dim", "96", "--depth", "2", "--num-heads", "3"]
ARMS = {  # arm -> (method, flags, epochs)
    "point-mae": ("point-mae", ENCODER + ["--decoder-embed-dim", "96", "--decoder-depth", "2",
                                          "--decoder-num-heads", "3"], 10),
    "point-dvae": ("point-dvae", ["--num-tokens", "512", "--encoder-dims", "128"], 2),
    "mpm": ("point-bert", ENCODER + ["--no-mixing"], 4),
    "mpm-mix": ("point-bert", ENCODER, 2),
    # control: MPM with the targets of a random-weight dVAE of the same shape (no tokenizer training)
    "mpm-random": ("point-bert", ENCODER + ["--no-mixing", "--teacher", "random", "--num-tokens", "512",
                                            "--encoder-dims", "128"], 4),
}


def run_dir(root: Path, arm: str, seed: int) -> Path:
    return root / f"{arm}-s{seed}"


def stage_pretrain(a) -> None:
    root = Path(a.root)
    method, flags, epochs = ARMS[a.arm]
    out = run_dir(root, a.arm, a.seed)
    if method == "point-bert" and "random" not in flags:
        flags = flags + ["--teacher", str(run_dir(root, "point-dvae", a.seed))]
    cmd = [sys.executable, "-m", "mae_3d.cli", "pretrain", "--method", method, "--data", a.npz, *SMALL, *flags,
           "--epochs", str(a.epochs or epochs), "--warmup-epochs", "0.25", "--seed", str(a.seed), "--out", str(out),
           "--overwrite", "--no-progress", "--log-every", "20"]
    print("$ " + " ".join(shlex.quote(c) for c in cmd[2:]), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        print(p.stdout[-3000:], p.stderr[-3000:])
        sys.exit(p.returncode)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    res = {"command": "mae-3d " + " ".join(cmd[3:]), "wall_s": round(time.time() - t0, 1),
           "steps": summary["steps"], "train_time_s": round(summary["train_time_s"], 1), "first": rows[0],
           "last": rows[-1]}
    (out / "bench-pretrain.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def features(run, seed: int, fresh: bool = False, pool: str | None = None):
    import torch

    import mae_core
    from mae_core.eval import extract_features

    torch.manual_seed(seed)
    r = mae_core.load_run(run, weights=not fresh)
    train, test = r.dataset("train"), r.dataset("test")
    xtr, ytr = extract_features(r.model, train, batch_size=128, pool=pool)
    xte, yte = extract_features(r.model, test, batch_size=128, pool=pool)
    return xtr, ytr, xte, yte


def stage_eval(a) -> None:
    import torch

    import mae_3d  # noqa: F401  (registers the domain)
    from mae_core.eval.svm import few_shot, linear_svm

    torch.set_num_threads(1)
    root = Path(a.root)
    arms = [("scratch", run_dir(root, "point-mae", a.seed), True, None)]
    arms += [(arm, run_dir(root, arm, a.seed), False, None)
             for arm in ("point-mae", "point-dvae", "mpm", "mpm-mix", "mpm-random")]
    # the reference's SVM features: the cls projection (cls_head of the cls token)
    arms += [(f"{arm}/cls-proj", run_dir(root, arm, a.seed), False, "cls-proj") for arm in ("mpm", "mpm-mix")]
    out = root / f"bench-eval-s{a.seed}.json"
    res = json.loads(out.read_text()) if out.exists() and a.only_new else {}
    for tag, run, fresh, pool in arms:
        if not (run / "summary.json").exists() or tag in res:
            continue
        xtr, ytr, xte, yte = features(run, a.seed, fresh, pool)
        res[tag] = {"svm": linear_svm(xtr, ytr, xte, yte),
                    "fewshot_5w10s": few_shot(xtr, ytr, way=5, shot=10, query=20, folds=10, seed=a.seed,
                                              test_features=xte, test_labels=yte),
                    "feature_dim": xtr.shape[1]}
        print(tag, json.dumps(res[tag]), flush=True)
        out.write_text(json.dumps(res, indent=1))


def stage_table(a) -> None:
    root = Path(a.root)
    evals = {int(p.stem.split("-s")[-1]): json.loads(p.read_text()) for p in sorted(root.glob("bench-eval-s*.json"))}
    seeds = sorted(evals)

    def t(arm, s):
        f = run_dir(root, arm, s) / "bench-pretrain.json"
        return json.loads(f.read_text())["train_time_s"] if f.exists() else 0.0

    rows = [("scratch (random-init Point-MAE encoder)", "scratch", lambda s: 0.0),
            ("Point-MAE", "point-mae", lambda s: t("point-mae", s)),
            ("dVAE alone (its group embeddings)", "point-dvae", lambda s: t("point-dvae", s)),
            ("Point-BERT, MPM only", "mpm", lambda s: t("point-dvae", s) + t("mpm", s)),
            ("Point-BERT, MPM + point mixing", "mpm-mix", lambda s: t("point-dvae", s) + t("mpm-mix", s)),
            ("Point-BERT, MPM only, cls projection", "mpm/cls-proj", lambda s: t("point-dvae", s) + t("mpm", s)),
            ("Point-BERT, MPM + point mixing, cls projection", "mpm-mix/cls-proj",
             lambda s: t("point-dvae", s) + t("mpm-mix", s)),
            ("control: MPM on a random-weight dVAE's ids", "mpm-random", lambda s: t("mpm-random", s))]
    print("| arm | seeds | training time, s (dVAE included) | linear SVM | few-shot 5w10s |")
    print("|---|---|---|---|---|")
    for name, key, time_of in rows:
        have = [s for s in seeds if key in evals[s]]
        if not have:
            continue
        svm = [100 * evals[s][key]["svm"]["acc"] for s in have]
        fs = [evals[s][key]["fewshot_5w10s"]["acc"] for s in have]
        times = " / ".join(f"{time_of(s):.0f}" for s in have)
        print(f"| {name} | {' / '.join(map(str, have))} | {times} | {' / '.join(f'{v:.1f}' for v in svm)} % (mean {sum(svm) / len(svm):.1f}) | "
              f"{' / '.join(f'{v:.1f}' for v in fs)} % (mean {sum(fs) / len(fs):.1f}) |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["pretrain", "eval", "table"])
    ap.add_argument("arm", nargs="?", choices=sorted(ARMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--npz", help="ModelNet10 npz (pretrain)")
    ap.add_argument("--root", required=True, help="folder of the runs")
    ap.add_argument("--epochs", type=int, default=None, help="override the arm's epochs")
    ap.add_argument("--only-new", action="store_true", help="eval: keep the arms already in the JSON")
    a = ap.parse_args()
    {"pretrain": stage_pretrain, "eval": stage_eval, "table": stage_table}[a.stage](a)


if __name__ == "__main__":
    main()
