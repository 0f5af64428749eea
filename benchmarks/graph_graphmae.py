"""Reproduce GraphMAE's table on the real datasets (run by hand; results go to docs/benchmarks/graph.md).

    uv run python benchmarks/graph_graphmae.py --only mutag cora imdb-multi proteins \
        --seeds 5 --cora-seeds 20 --budget-s 660 --out runs/graphmae-bench   # rerun to resume

Every finished pretraining seed is appended to ``OUT/results.json`` (per-seed accuracy, probe std, pretraining
time); a rerun skips the seeds already there, so a long reproduction runs in stages (``--budget-s``).

Node classification (Cora, Citeseer): `mae-graph pretrain --preset cora` then `mae-graph probe --probe logreg`
(20 logistic-regression seeds, best-validation test accuracy). Graph classification (MUTAG, PROTEINS, IMDB-MULTI):
`mae-graph pretrain --preset <name>` then `--probe svm-cv` (10-fold SVM, C grid), mean over pretraining seeds.
`--epochs` shortens every run (a shorter reproduction when the machine is busy); the default is the paper's.

`--only` takes preset names (any case: `IMDB-BINARY` = `imdb-binary`, `mae-graph info` lists them) and any other TU
dataset name (`--only DD --tu-folder DIR`): those run with the graph-level GIN recipe of the authors' argparse
defaults (`GENERIC_TU` below). `--tu-folder` / `--planetoid-folder` point at the raw files (default: under `--data`).

Each `±` printed per seed is the probe's own spread (logreg: 20 probe seeds on one encoder; svm-cv: 0); the mean
+- std over seeds printed after it is the paper's protocol (pretrain + probe per seed). `mae-graph seeds` runs the
same protocol from the command line.

`--summarize OUT [OUT ...]` runs nothing: it pools the seeds of one or more output folders (for example the two
halves of a reproduction split with `--first-seed`) and prints, per dataset, the mean, the spread over seeds, the
standard error of the mean and how many standard errors it lies from the paper's number.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mae_graph import PRESETS
from mae_graph.cli import main

# the paper's Tables 1 and 2 (accuracy; PPI micro-F1)
PAPER = {"cora": 84.2, "citeseer": 73.4, "pubmed": 81.1, "ogbn-arxiv": 71.75, "ppi": 74.50, "reddit": 96.01,
         "mutag": 88.19, "proteins": 75.30, "imdb-multi": 51.63, "imdb-binary": 75.52, "collab": 80.32,
         "reddit-binary": 88.01, "nci1": 80.40}
# the paper's spread over its seeds and how many seeds (20 node-level, 5 graph-level): its own standard error
PAPER_STD = {"cora": 0.4, "citeseer": 0.4, "pubmed": 0.4, "ogbn-arxiv": 0.17, "ppi": 0.29, "reddit": 0.08,
             "mutag": 1.26, "proteins": 0.39, "imdb-multi": 0.52, "imdb-binary": 0.66, "collab": 0.46,
             "reddit-binary": 0.19, "nci1": 0.30}
PAPER_SEEDS = {n: (20 if PRESETS[n][0] != "tudataset" else 5) for n in PAPER}
# a TU dataset without a preset: the graph-level recipe of the authors' argparse defaults (GIN, batchnorm, mean
# pooling, SCE alpha 2, mask 0.5, no replacement; lr 0.005 and weight decay 5e-4 as build_args)
GENERIC_TU = ["--encoder", "gin", "--decoder", "gin", "--norm", "batchnorm", "--num-hidden", "256", "--num-layers",
              "2", "--mask-rate", "0.5", "--replace-rate", "0", "--alpha-l", "2", "--pooling", "mean", "--lr", "0.005",
              "--no-drop-last",
              "--min-lr", "0.005", "--weight-decay", "5e-4", "--epochs", "200", "--batch-size", "32"]


def resolve(name: str, folders: dict) -> tuple[str, str, list[str]]:
    """``(key, kind, pretrain flags)`` of a preset name (any case) or any other TU dataset name."""
    key = name.lower()
    if key in PRESETS:
        kind = PRESETS[key][0] or "planetoid"
        return key, kind, ["--preset", key, "--data", str(folders[kind])]
    return name, "tudataset", ["--dataset", "tudataset", "--name", name, "--data", str(folders["tudataset"]),
                               "--method", "graphmae", *GENERIC_TU]


def run_one(name: str, folders: dict, out: Path, seed: int, epochs: int | None, extra: list[str]) -> dict:
    key, kind, flags = resolve(name, folders)
    run = out / f"{key}-seed{seed}"
    args = ["pretrain", *flags, "--out", str(run), "--overwrite", "--seed", str(seed), "--no-progress", *extra]
    if epochs:
        args += ["--epochs", str(epochs)]
    t0 = time.time()
    assert main(args) == 0
    wall = time.time() - t0
    summary = json.loads((run / "summary.json").read_text())
    probe = "logreg" if kind == "planetoid" else "svm-cv"
    assert main(["probe", "--run", str(run), "--probe", probe, "--probe-seed", "0", "--no-progress"]) == 0
    res = json.loads((run / "summary.json").read_text())["probe"][probe]
    return {"seed": seed, "acc": 100 * res["acc"], "std": 100 * res.get("std", 0.0), "pretrain_wall_s": wall,
            "final_acc": 100 * res.get("final_acc", float("nan")), "probe_seeds": res.get("seeds"),
            "threads": torch.get_num_threads(),
            "train_time_s": summary["train_time_s"], "epochs": summary["epochs"], "steps": summary["steps"],
            "final_loss": summary["final_loss"]}


def summarize(folders: list[str]) -> dict:
    """Pool the runs of several ``results.json`` (a seed seen twice counts once) and print their statistics."""
    pooled: dict[str, dict[int, float]] = {}
    for folder in folders:
        res_file = Path(folder) / "results.json"
        if not res_file.exists():
            raise SystemExit(f"{res_file}: no results.json (run the benchmark with --out {folder} first)")
        try:
            results = json.loads(res_file.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"{res_file}: not valid JSON ({e})") from None
        for name, entry in results.items():
            for r in entry["runs"]:
                pooled.setdefault(name, {}).setdefault(int(r["seed"]), float(r["acc"]))
    stats = {}
    for name, by_seed in pooled.items():
        accs = np.array([by_seed[s] for s in sorted(by_seed)])
        se = accs.std(ddof=1) / np.sqrt(len(accs)) if len(accs) > 1 else float("nan")
        paper = PAPER.get(name, float("nan"))
        paper_se = PAPER_STD.get(name, float("nan")) / np.sqrt(PAPER_SEEDS.get(name, 1))
        diff_se = float(np.hypot(se, paper_se))
        stats[name] = {"seeds": len(accs), "mean": float(accs.mean()), "std": float(accs.std()), "se": float(se),
                       "paper": paper, "diff": float(accs.mean() - paper), "diff_se": diff_se}
        print(f"{name}: {len(accs)} seeds ({min(by_seed)}-{max(by_seed)}), mean {accs.mean():.2f} +- {accs.std():.2f} "
              f"(standard error {se:.2f}); paper {paper:.2f} (standard error {paper_se:.2f}); difference "
              f"{accs.mean() - paper:+.2f} = {(accs.mean() - paper) / diff_se:+.1f} standard errors of the difference",
              flush=True)
    return stats


def main_(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    p.add_argument("--only", nargs="+", default=["mutag", "cora", "imdb-multi", "proteins"],
                   help="preset names (any case) or TU dataset names")
    p.add_argument("--tu-folder", default=None, help="TU raw files (default: DATA/tudataset)")
    p.add_argument("--planetoid-folder", default=None, help="Planetoid raw files (default: DATA/planetoid)")
    p.add_argument("--seeds", type=int, default=5, help="pretraining seeds of the graph-level datasets")
    p.add_argument("--cora-seeds", type=int, default=1, help="pretraining seeds of Cora / Citeseer (each probed "
                                                             "with 20 logreg seeds)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds first_seed .. first_seed + n - 1 (split a long "
                                                              "reproduction over processes with different --out)")
    p.add_argument("--epochs", type=int, default=None, help="override the paper's epochs (shorter run)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for pretrain")
    p.add_argument("--out", default="runs/graphmae-bench")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new seeds when the next one (as long as the last) would end past this many "
                        "seconds; rerun the same command to resume (finished seeds are kept in results.json)")
    p.add_argument("--summarize", nargs="+", metavar="OUT", default=None,
                   help="run nothing; pool the results.json of these output folders and print mean, spread, "
                        "standard error and the distance to the paper")
    a = p.parse_args(argv)
    if a.summarize:
        summarize(a.summarize)
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res_file = out / "results.json"
    results = json.loads(res_file.read_text()) if res_file.exists() else {}
    t_start = time.time()
    folders = {"tudataset": Path(a.tu_folder or Path(a.data) / "tudataset"),
               "planetoid": Path(a.planetoid_folder or Path(a.data) / "planetoid")}
    for raw in a.only:
        name, kind, _ = resolve(raw, folders)
        n = a.cora_seeds if kind == "planetoid" else a.seeds
        entry = results.setdefault(name, {"runs": [], "paper": PAPER.get(name)})
        done = {r["seed"] for r in entry["runs"]}
        last = 0.0
        for s in range(a.first_seed, a.first_seed + n):
            if s in done:
                continue
            if a.budget_s is not None and time.time() - t_start + last > a.budget_s:
                print(f"budget reached before {name} seed {s}", flush=True)
                break
            t0 = time.time()
            entry["runs"].append(run_one(raw, folders, out, s, a.epochs, a.extra))
            last = time.time() - t0
            accs = np.array([r["acc"] for r in entry["runs"]])
            entry.update({"mean": float(accs.mean()), "std_over_seeds": float(accs.std()), "seeds": len(accs)})
            res_file.write_text(json.dumps(results, indent=1))
            r = entry["runs"][-1]
            print(f"{name} seed {s}: {r['acc']:.2f} (probe std {r['std']:.2f}, final-epoch probe "
                  f"{r.get('final_acc', float('nan')):.2f}), pretrain {r['train_time_s']:.1f} s for {r['epochs']} "
                  f"epochs / {r['steps']} steps; mean over {len(accs)} seeds {accs.mean():.2f} +- {accs.std():.2f}",
                  flush=True)


if __name__ == "__main__":
    main_()
