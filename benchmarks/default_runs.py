"""What every domain's no-argument run shows: runs ``mae-<domain> pretrain`` with no model or data argument (the
embedded default), then the domain's default probes on the run and on a random-init encoder of the same architecture
(``probe --random-init``), and prints one Markdown row per domain.

    uv run python benchmarks/default_runs.py --out runs/defaults                       # every domain
    uv run python benchmarks/default_runs.py --out runs/defaults --domains medical video --seed 1
    uv run python benchmarks/default_runs.py --out runs/defaults --table               # rows from results.json files

Each domain writes ``OUT/<domain>-s<seed>/`` (the run) and ``OUT/<domain>-s<seed>.json`` (wall time, probe scores).
Wall time is the pretrain command's, start-up included; it depends on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DOMAINS = ["core", "medical", "3d", "video", "graph", "audio", "text"]


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def scores(probe: dict) -> dict:
    """``{probe name: accuracy-like score}`` from a probe command's JSON summary."""
    out = {}
    for k, v in probe.items():
        if isinstance(v, dict):
            for key in ("acc", "accuracy", "mean", "ndcg@10", "auc"):
                if key in v and isinstance(v[key], (int, float)):
                    out[k] = float(v[key])
                    break
    return out


def run(cmd: list[str]) -> tuple[str, float]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    return p.stdout, time.perf_counter() - t


def one(domain: str, out: Path, seed: int, extra: list[str]) -> dict:
    cli = f"mae-{domain}"
    run_dir = out / f"{domain}-s{seed}"
    _, wall = run([cli, "pretrain", "--out", str(run_dir), "--overwrite", "--no-progress", "--seed", str(seed), *extra])
    pre, _ = run([cli, "probe", "--run", str(run_dir), "--no-progress"])
    rnd, _ = run([cli, "probe", "--run", str(run_dir), "--no-progress", "--random-init"])
    summary = json.loads((run_dir / "summary.json").read_text())
    res = {"domain": domain, "seed": seed, "method": summary.get("method"), "pretrain_wall_s": round(wall, 1),
           "steps": summary.get("steps"), "pretrained": scores(last_json(pre)), "random_init": scores(last_json(rnd)),
           "extra": extra}
    (out / f"{domain}-s{seed}.json").write_text(json.dumps(res, indent=1))
    return res


def table(out: Path) -> str:
    rows = ["| domain | method | seed | steps | pretrain wall | probe | pretrained | random init | gain |",
            "|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(out.glob("*-s*.json")):
        r = json.loads(f.read_text())
        for k, v in r["pretrained"].items():
            base = r["random_init"].get(k)
            gain = f"{100 * (v - base):+.1f}" if base is not None else "-"
            b = f"{100 * base:.1f}" if base is not None else "-"
            rows.append(f"| {r['domain']} | {r['method']} | {r['seed']} | {r['steps']} | {r['pretrain_wall_s']} s | "
                        f"{k} | {100 * v:.1f} | {b} | {gain} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the runs and the result files")
    ap.add_argument("--domains", nargs="+", default=DOMAINS, choices=DOMAINS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", action="append", default=[], help="one more pretrain flag (repeatable), e.g. "
                                                                 "--extra=--epochs=20")
    ap.add_argument("--table", action="store_true", help="only print the table of the results in --out")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.table:
        for d in a.domains:
            r = one(d, a.out, a.seed, a.extra)
            print(json.dumps(r), flush=True)
    print(table(a.out))


if __name__ == "__main__":
    main()
