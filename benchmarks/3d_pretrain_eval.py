"""Pretraining helps? Point-MAE on the embedded shapes (or ModelNet10): pretrain, then linear SVM on frozen features of
the pretrained vs a randomly initialised encoder, few-shot 5-way 10-shot for both, and (optionally) fine-tuning.

Runs the real ``mae-3d`` commands in subprocesses and prints each command and its JSON result; run by hand:

    OMP_NUM_THREADS=1 nice -n 5 uv run python benchmarks/3d_pretrain_eval.py shapes --out runs/bench3d-shapes
    OMP_NUM_THREADS=1 nice -n 5 uv run python benchmarks/3d_pretrain_eval.py modelnet10 \
        --npz ../shared/data/modelnet10/modelnet10_pcd1024.npz --out runs/bench3d-mn10 --max-steps 120 --no-fewshot \
        --preset point-mae-small --extra "--num-points 512 --warmup-epochs 0.2"
    (then, time allowing: ... --skip-pretrain --no-svm --finetune --finetune-steps 60)
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


def last_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", choices=["shapes", "modelnet10"])
    ap.add_argument("--npz", help="ModelNet10 npz (modelnet10 only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-steps", type=int, default=None, help="time-box the pretraining")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--finetune", action="store_true")
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--extra", default="", help="extra pretrain flags")
    ap.add_argument("--preset", default="point-mae-1k", help="preset for modelnet10")
    ap.add_argument("--skip-pretrain", action="store_true", help="evaluate the existing run in --out")
    ap.add_argument("--no-fewshot", action="store_true", help="skip the few-shot evaluation")
    ap.add_argument("--no-svm", action="store_true", help="skip the SVM / few-shot evaluation")
    a = ap.parse_args()
    exe = [sys.executable, "-m", "mae_3d.cli"]
    data = [] if a.data == "shapes" else ["--data", a.npz, "--preset", a.preset]
    out = Path(a.out)
    pre = ["pretrain", *data, "--out", str(out), "--overwrite", "--no-progress"]
    if a.max_steps:
        pre += ["--max-steps", str(a.max_steps)]
    if a.epochs:
        pre += ["--epochs", str(a.epochs)]
    pre += shlex.split(a.extra)
    results = {"data": a.data}
    if not a.skip_pretrain:
        run(exe + pre)
    results["pretrain"] = json.loads((out / "summary.json").read_text())
    for tag, extra in () if a.no_svm else (("pretrained", []), ("random_init", ["--random-init"])):
        res = last_json(run(exe + ["probe", "--run", str(out), "--probe", "svm", *data[2:], *extra]))
        results[f"svm_{tag}"] = res["svm"]
        if a.no_fewshot:
            continue
        res = last_json(run(exe + ["fewshot", "--run", str(out), "--way", "5", "--shot", "10", "--folds", "10",
                                   *data[2:], *extra]))
        results[f"fewshot_5w10s_{tag}"] = res
    if a.finetune:
        for tag, extra in (("pretrained", []), ("scratch", ["--scratch"])):
            ft = out / f"finetune-{tag}"
            run(exe + ["finetune", "--run", str(out), *extra, "--max-steps", str(a.finetune_steps), "--epochs", "100",
                       "--batch-size", "32", "--lr", "5e-4", "--warmup-epochs", "0.2", "--no-progress", "--overwrite",
                       "--out", str(ft), *data[2:]])
            results[f"finetune_{tag}"] = json.loads((ft / "summary.json").read_text())
    print(json.dumps(results, indent=1))
    name = "benchmark.json" if not (a.no_svm or a.skip_pretrain) else f"benchmark-{int(time.time())}.json"
    (out / name).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
