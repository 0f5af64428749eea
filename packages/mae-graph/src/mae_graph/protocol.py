"""``mae-graph seeds``: the GraphMAE paper's protocol, pretraining + probe once per seed, mean +- std over the seeds.

``mae-graph probe --probe logreg`` reports the spread of ``probe_seeds`` logistic-regression seeds on one pretrained
encoder (``std_over: probe seeds``); the paper's ``+-`` is over seeds that each pretrain a new encoder and probe it
once (``main_transductive.py`` / ``main_graph.py``: ``for seed in seeds: set_random_seed(seed); build_model;
pretrain; evaluate``). This command runs that: for each seed ``s`` it pretrains with ``--seed s`` into
``OUT/seed<s>`` and probes it once (node level: ``logreg`` with ``--probe-seeds 1`` and probe seed ``s``; graph
level: ``svm-cv`` with the authors' fixed fold split, probe seed 0), then prints and writes ``OUT/seeds.json``. Seeds already probed in ``OUT`` are kept (a rerun resumes).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mae_core.errors import ConfigError
from mae_core.registry import CommandSpec, register_command


def seeds_arguments(p) -> None:
    p.add_argument("--preset", help="a GraphMAE preset (mae-graph info lists them)")
    p.add_argument("--data", help="folder of the preset's data (planetoid / TU raw files)")
    p.add_argument("--seeds", type=int, default=5, help="pretraining seeds (the paper: 20 node-level, 5 graph-level)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds first_seed .. first_seed + seeds - 1")
    p.add_argument("--probe", default=None, help="logreg (node level) or svm-cv (graph level); default: by data")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the per-seed runs and seeds.json")
    p.add_argument("--pretrain-args", default="", metavar="'FLAGS'",
                   help="more pretrain flags in one quoted string, e.g. '--epochs 5 --name NCI1'")


def summarize_seeds(accs: list[float]) -> dict:
    """Mean and population std (numpy's, as the authors' ``np.std``) over the pretraining seeds."""
    a = np.asarray(accs, dtype=float)
    return {"acc": float(a.mean()), "std": float(a.std()), "seeds": len(a),
            "std_over": "pretraining seeds (pretrain + probe per seed, the paper's protocol)"}


def run_seeds(args) -> int:
    import shlex

    from .cli import main

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_file = out / "seeds.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {"runs": {}}
    extra = shlex.split(args.pretrain_args)
    base = (["--preset", args.preset] if args.preset else []) + (["--data", args.data] if args.data else [])
    if args.seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {args.seeds}")
    for s in range(args.first_seed, args.first_seed + args.seeds):
        if str(s) in record["runs"]:
            continue
        run = out / f"seed{s}"
        rc = main(["pretrain", *base, "--out", str(run), "--overwrite", "--seed", str(s), "--probe-seeds", "1",
                   "--no-progress", *extra])
        if rc:
            return rc
        cfg = json.loads((run / "summary.json").read_text())
        probe = args.probe or ("logreg" if cfg.get("dataset") in ("planetoid", "sbm") else "svm-cv")
        # logreg: the authors' classifier is initialised after set_random_seed(seed), so its seed follows s;
        # svm-cv: their StratifiedKFold always has random_state=0
        probe_seed = s if probe == "logreg" else 0
        rc = main(["probe", "--run", str(run), "--probe", probe, "--probe-seed", str(probe_seed), "--no-progress"])
        if rc:
            return rc
        res = json.loads((run / "summary.json").read_text())["probe"][probe]
        record["runs"][str(s)] = {"probe": probe, "acc": res["acc"]}
        record_file.write_text(json.dumps(record, indent=1))
    accs = [r["acc"] for _, r in sorted(record["runs"].items(), key=lambda kv: int(kv[0]))]
    record["summary"] = summarize_seeds(accs)
    record_file.write_text(json.dumps(record, indent=1))
    m = record["summary"]
    print(f"{100 * m['acc']:.2f} +- {100 * m['std']:.2f} % over {m['seeds']} pretraining seeds "
          "(pretrain + probe per seed, the paper's protocol)")
    print(json.dumps(record["summary"]))
    return 0


register_command(CommandSpec(name="seeds", domain="graph",
                             help="the GraphMAE paper's protocol: pretrain + probe per seed, mean +- std over seeds",
                             add_arguments=seeds_arguments, run=run_seeds))
