"""R-MAE downstream: per-voxel segmentation mIoU with a few labelled scans, pretrained encoder vs scratch.

    OMP_NUM_THREADS=1 nice -n 5 uv run python benchmarks/3d_rmae_segmentation.py --out runs/bench3d-rmae

Pretrains R-MAE on the embedded ray-cast driving scenes, then runs ``mae-3d segment`` on the pretrained run and with
``--scratch`` (same architecture, same labelled scans, same schedule), printing each command and its result.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run(cmd):
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        print(p.stdout[-3000:], p.stderr[-3000:])
        sys.exit(p.returncode)
    print(f"  ({time.time() - t0:.0f} s)", flush=True)
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--num-labelled", type=int, default=8)
    ap.add_argument("--seg-epochs", type=int, default=60)
    ap.add_argument("--extra", default="", help="extra pretrain flags (e.g. --range-aware)")
    a = ap.parse_args()
    exe = [sys.executable, "-m", "mae_3d.cli"]
    out = Path(a.out)
    run(exe + ["pretrain", "--method", "r-mae", "--epochs", str(a.epochs), "--out", str(out), "--overwrite",
               "--no-progress", *shlex.split(a.extra)])
    res = {"pretrain": json.loads((out / "summary.json").read_text())}
    for tag, extra in (("pretrained", []), ("scratch", ["--scratch"])):
        o = run(exe + ["segment", "--run", str(out), "--num-labelled", str(a.num_labelled), "--seg-epochs",
                       str(a.seg_epochs), "--no-progress", *extra])
        res[f"segment_{tag}"] = json.loads(o.strip().splitlines()[-1])
    print(json.dumps(res, indent=1))
    (out / "benchmark.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
