"""I2P-MAE in miniature on ModelNet10: random masking, + 2-D-guided masking, + 2-D targets, both (the method), and
the method with a random-weight 2-D teacher (control), under the frozen linear SVM and 5-way 10-shot. The 2-D
teacher (an image MAE on depth maps of the embedded shapes3d clouds, never of ModelNet10) is trained once and
cached; its training time is reported apart.

    NPZ=ModelNet10/modelnet10_pcd1024.npz
    python benchmarks/3d_i2p_mae.py pretrain full --seed 0 --npz $NPZ --root runs/i2p   # trains the 2-D teacher first
    python benchmarks/3d_i2p_mae.py pretrain random --seed 0 --npz $NPZ --root runs/i2p
    ...  (arms: random, guided, target-2d, full, random-teacher)
    python benchmarks/3d_i2p_mae.py eval --seed 0 --root runs/i2p
    python benchmarks/3d_i2p_mae.py table --root runs/i2p

``pretrain`` runs the real ``mae-3d pretrain`` command; ``eval`` reads the frozen encoders' max + mean token features
(the default pool) on the run's own data, as benchmarks/3d_point_bert.py.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

SMALL = ["--num-points", "512", "--pointnet-dims", "32", "64", "128", "--embed-dim", "96", "--depth", "2",
         "--num-heads", "3", "--decoder-embed-dim", "96", "--decoder-depth", "2", "--decoder-num-heads", "3"]
ARMS = {  # arm -> (flags, description)
    "random": (["--no-guided", "--no-target-2d"], "random masking (80 %), Chamfer only"),
    "guided": (["--no-target-2d"], "+ 2-D-guided masking"),
    "target-2d": (["--no-guided"], "+ 2-D targets (random masking)"),
    "full": ([], "I2P-MAE: 2-D-guided masking + 2-D targets"),
    "random-teacher": (["--teacher", "random"], "control: I2P-MAE with a random-weight 2-D teacher"),
}


def run_dir(root: Path, arm: str, seed: int) -> Path:
    return root / f"{arm}-s{seed}"


def stage_pretrain(a) -> None:
    out = run_dir(Path(a.root), a.arm, a.seed)
    cmd = [sys.executable, "-m", "mae_3d.cli", "pretrain", "--method", "i2p-mae", "--data", a.npz, *SMALL,
           *ARMS[a.arm][0], "--epochs", str(a.epochs), "--warmup-epochs", "0.25", "--seed", str(a.seed),
           "--out", str(out), "--overwrite", "--no-progress", "--log-every", "20"]
    print("$ " + " ".join(shlex.quote(c) for c in cmd[2:]), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        print(p.stdout[-3000:], p.stderr[-3000:])
        sys.exit(p.returncode)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    teacher = [ln for ln in p.stdout.splitlines() if ln.startswith("teacher:")]
    res = {"command": "mae-3d " + " ".join(cmd[3:]), "wall_s": round(time.time() - t0, 1),
           "steps": summary["steps"], "train_time_s": round(summary["train_time_s"], 1), "first": rows[0],
           "last": rows[-1], "teacher": teacher}
    (out / "bench-pretrain.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def stage_eval(a) -> None:
    import torch

    import mae_3d  # noqa: F401  (registers the domain)
    import mae_core
    from mae_core.eval import extract_features
    from mae_core.eval.svm import few_shot, linear_svm

    torch.set_num_threads(1)
    root = Path(a.root)
    out = root / f"bench-eval-s{a.seed}.json"
    res = json.loads(out.read_text()) if out.exists() else {}
    for arm in ARMS:
        run = run_dir(root, arm, a.seed)
        if not (run / "summary.json").exists() or arm in res:
            continue
        torch.manual_seed(a.seed)
        r = mae_core.load_run(run)
        xtr, ytr = extract_features(r.model, r.dataset("train"), batch_size=128)
        xte, yte = extract_features(r.model, r.dataset("test"), batch_size=128)
        res[arm] = {"svm": linear_svm(xtr, ytr, xte, yte),
                    "fewshot_5w10s": few_shot(xtr, ytr, way=5, shot=10, query=20, folds=10, seed=a.seed,
                                              test_features=xte, test_labels=yte),
                    "feature_dim": xtr.shape[1]}
        print(arm, json.dumps(res[arm]), flush=True)
        out.write_text(json.dumps(res, indent=1))


def stage_table(a) -> None:
    root = Path(a.root)
    evals = {int(p.stem.split("-s")[-1]): json.loads(p.read_text()) for p in sorted(root.glob("bench-eval-s*.json"))}
    print("| arm | seeds | training time, s | last loss 3-D / 2-D | linear SVM | few-shot 5w10s |")
    print("|---|---|---|---|---|---|")
    for arm, (_, name) in ARMS.items():
        have = [s for s in sorted(evals) if arm in evals[s]]
        if not have:
            continue
        pre = [json.loads((run_dir(root, arm, s) / "bench-pretrain.json").read_text()) for s in have]
        svm = [100 * evals[s][arm]["svm"]["acc"] for s in have]
        fs = [evals[s][arm]["fewshot_5w10s"]["acc"] for s in have]
        times = " / ".join(f"{p['train_time_s']:.0f}" for p in pre)
        losses = " / ".join(f"{p['last'].get('loss_3d', float('nan')):.4f} / {p['last'].get('loss_2d', float('nan')):.3f}"
                            for p in pre)
        print(f"| {name} | {' / '.join(map(str, have))} | {times} | "
              f"{losses} | {' / '.join(f'{v:.1f}' for v in svm)} % (mean {sum(svm) / len(svm):.1f}) | "
              f"{' / '.join(f'{v:.1f}' for v in fs)} % (mean {sum(fs) / len(fs):.1f}) |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["pretrain", "eval", "table"])
    ap.add_argument("arm", nargs="?", choices=sorted(ARMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--npz", help="ModelNet10 npz (pretrain)")
    ap.add_argument("--root", required=True, help="folder of the runs")
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    {"pretrain": stage_pretrain, "eval": stage_eval, "table": stage_table}[a.stage](a)


if __name__ == "__main__":
    main()
