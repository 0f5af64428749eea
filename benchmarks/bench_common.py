"""Pieces the arm-comparison benchmark scripts share: the command line of a seeded arm run, the ``results.jsonl``
file each run appends one line to, the mean ± standard deviation cells of their tables, and the FLOPs of one
training step. The scripts import it as ``from bench_common import ...`` (``benchmarks/`` is on the path when a
script in it runs).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def arm_parser(doc: str, runs, steps: int = 300, steps_help: str = "optimizer steps of every pretraining run",
               batch_size: int = 64) -> argparse.ArgumentParser:
    """``--out --runs --seed --steps --batch-size --set --table``; a script adds its own options to the result."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder of the runs and of results.jsonl")
    ap.add_argument("--runs", nargs="*", default=[], choices=list(runs), help="arms to run (one JSON line each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=steps, help=steps_help)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--set", default="{}", help="JSON of extra options for every run (e.g. a smaller data set)")
    ap.add_argument("--table", action="store_true", help="print the table of results.jsonl")
    return ap


def append_result(out: Path, rec: dict) -> None:
    """One run's record: a line of ``out/results.jsonl``, echoed to the console."""
    with open(Path(out) / "results.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def read_results(out: Path, key: str = "run") -> dict[str, list[dict]]:
    """The records of ``out/results.jsonl`` grouped by ``key`` (in file order)."""
    rows: dict[str, list[dict]] = {}
    for line in (Path(out) / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r[key], []).append(r)
    return rows


def mean_sd(rs: list[dict], key: str, scale: float = 1.0, digits: int = 1, per_seed: bool = False) -> str:
    """``mean ± sd`` of ``scale * r[key]`` over the records that have it (``mean (a / b)`` with ``per_seed``);
    the mean alone for one record, ``n/a`` for none."""
    v = [scale * r[key] for r in rs if r.get(key) is not None]
    if not v:
        return "n/a"
    if per_seed:
        return f"{statistics.mean(v):.{digits}f}" + (f" ({' / '.join(f'{x:.{digits}f}' for x in v)})"
                                                      if len(v) > 1 else "")
    return f"{statistics.mean(v):.{digits}f}" + (f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else "")


def step_flops(model, batch) -> float:
    """FLOPs of one training step (forward + backward) of ``model`` on ``batch``, counted by
    ``torch.utils.flop_counter`` (a count, not a timing); the gradients are cleared afterwards."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = model.cpu().train()
    with FlopCounterMode(display=False) as fc:
        model(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def keyed_results(out) -> tuple[Path, dict]:
    """``(out/results.json, its dict)`` for the scripts that keep one record per ``arm/seed/steps`` key and skip a
    key recorded before (the folder is created; an absent file is an empty dict)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    return path, (json.loads(path.read_text()) if path.exists() else {})


def median_seconds(fn, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call (run inside the timing lock)."""
    import time

    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
