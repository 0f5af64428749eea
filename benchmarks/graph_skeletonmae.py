"""SkeletonMAE: pretrain + fine-tune against the same model trained from scratch (run by hand; results go to
docs/benchmarks/graph.md).

    uv run python benchmarks/graph_skeletonmae.py synthetic --label-fraction 0.1
    uv run python benchmarks/graph_skeletonmae.py msr --data ../shared/data/msr_action3d/MSRAction3DSkeletonReal3D.tar.gz

`synthetic`: the procedural actions (6 classes); pretraining on all training sequences without labels, fine-tuning
on `--label-fraction` of the labels. `msr`: MSR Action3D cross-subject (subjects 1,3,5,7,9 train, 2,4,6,8,10 test,
the two faulty a13_s09 sequences left out); pretraining on the training subjects only.
Every number is the mae-graph CLI: `pretrain --method skeletonmae`, `finetune --run` and `finetune --scratch`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mae_graph.cli import main


def run(which: str, data: str | None, out: Path, pre_epochs: int, ft_epochs: int, fraction: float, seeds: int,
        extra: list[str], first_seed: int = 0) -> dict:
    src = ["--dataset", "skeleton-actions"] if which == "synthetic" else ["--dataset", "skeleton-files", "--data", data]
    res = {"pretrain+finetune": [], "scratch": []}
    times = {}
    for seed in range(first_seed, first_seed + seeds):
        pre = out / f"{which}-pre-seed{seed}"
        t0 = time.time()
        assert main(["pretrain", "--method", "skeletonmae", *src, "--epochs", str(pre_epochs), "--out", str(pre),
                     "--overwrite", "--seed", str(seed), "--no-progress", *extra]) == 0
        times["pretrain_s"] = time.time() - t0
        ft = ["--epochs", str(ft_epochs), "--label-fraction", str(fraction), "--seed", str(seed), "--overwrite",
              "--no-progress", "--layer-decay", "0.9", "--label-smoothing", "0.1", "--batch-size", "16"]
        for name, args in (("pretrain+finetune", ["--run", str(pre)]),
                           ("scratch", ["--scratch", "--method", "skeletonmae", *src, *extra])):
            o = out / f"{which}-{name.replace('+', '_')}-seed{seed}"
            t0 = time.time()
            assert main(["finetune", *args, *ft, "--out", str(o)]) == 0
            times[f"{name}_s"] = time.time() - t0
            res[name].append(100 * json.loads((o / "summary.json").read_text())["test_acc"])
    summary = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": v} for k, v in res.items()}
    summary["times_last_seed"] = times
    return summary


def main_(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["synthetic", "msr"])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" /
                                         "msr_action3d" / "MSRAction3DSkeletonReal3D.tar.gz"))
    p.add_argument("--pretrain-epochs", type=int, default=40)
    p.add_argument("--finetune-epochs", type=int, default=40)
    p.add_argument("--label-fraction", type=float, default=1.0)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first_seed .. first_seed + seeds - 1")
    p.add_argument("--out", default="runs/skeletonmae-bench")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for pretrain / scratch")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    s = run(a.which, a.data, out, a.pretrain_epochs, a.finetune_epochs, a.label_fraction, a.seeds, a.extra,
            a.first_seed)
    s["seeds"] = list(range(a.first_seed, a.first_seed + a.seeds))
    (out / f"{a.which}-results{'' if a.first_seed == 0 else f'-from{a.first_seed}'}.json").write_text(
        json.dumps(s, indent=1))
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    main_()
