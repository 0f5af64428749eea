"""Interleaved A/B of the image MAE training step between an earlier commit and the working tree.

Runs ``benchmarks/core_mae_step.py --no-peak`` of the base commit (its mae-core source, extracted with ``git
archive`` into a temporary folder and put first on ``PYTHONPATH``) and of the working tree in alternating processes
(base, head, head, base, ...), so that slow drifts of the machine's load hit both alike. Each process also times
Hugging Face's ViTMAE step interleaved with ours; the ratio ours / HF within a process cancels most of the load
that process saw. Reports per round and the median over rounds of head / base for the raw step time and for the
HF-normalised one.

    uv run python benchmarks/core_step_ab.py --base 4be00cc [--rounds 3] [--steps 4]

transformers is a benchmark-only (dev) dependency.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\s*(ours@0\.75|hf@0\.75|ours@0\.0): ([0-9.]+) s/step", re.M)


def extract(rev: str, dest: Path) -> Path:
    """The base commit's mae-core source and step benchmark, unpacked under ``dest``."""
    archive = dest / "base.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "packages/mae-core/src", "benchmarks/core_mae_step.py"],
                       stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_once(script: Path, pythonpath: Path | None, steps: int) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run([sys.executable, str(script), "--no-peak", "--steps", str(steps)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return {k: float(v) for k, v in LINE.findall(out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--rounds", type=int, default=3, help="base / head pairs, the order alternating")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per model and process")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mae-ab-") as tmp:
        base = extract(args.base, Path(tmp))
        arms = {"base": (base / "benchmarks/core_mae_step.py", base / "packages/mae-core/src"),
                "head": (ROOT / "benchmarks/core_mae_step.py", None)}
        raw, norm = [], []
        for r in range(args.rounds):
            order = ["base", "head"] if r % 2 == 0 else ["head", "base"]
            res = {arm: run_once(*arms[arm], args.steps) for arm in order}
            b, h = res["base"], res["head"]
            raw.append(h["ours@0.75"] / b["ours@0.75"])
            norm.append((h["ours@0.75"] / h["hf@0.75"]) / (b["ours@0.75"] / b["hf@0.75"]))
            print(f"round {r + 1} ({' then '.join(order)}): ours@0.75 base {b['ours@0.75']:.3f} s, head "
                  f"{h['ours@0.75']:.3f} s; ours / HF base {b['ours@0.75'] / b['hf@0.75']:.3f}, head "
                  f"{h['ours@0.75'] / h['hf@0.75']:.3f}", flush=True)
        print(f"head / base step time: median {statistics.median(raw):.3f} (rounds: "
              f"{', '.join(f'{x:.3f}' for x in raw)})")
        print(f"head / base, normalised by HF in the same process: median {statistics.median(norm):.3f} (rounds: "
              f"{', '.join(f'{x:.3f}' for x in norm)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
