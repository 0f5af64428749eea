"""R-MAE downstream: per-voxel segmentation mIoU with a few labelled scans, pretrained encoder vs scratch.

    OMP_NUM_THREADS=1 nice -n 5 uv run python benchmarks/3d_rmae_segmentation.py --out runs/bench3d-rmae

Pretrains R-MAE on the embedded ray-cast driving scenes, then runs ``mae-3d segment`` on the pretrained run and with
``--scratch`` (same architecture, same labelled scans, same schedule), printing each command and its result.

``--mask-stats`` only measures the masks on the training scans (no training): the fraction of occupied voxels kept
in each distance band (<= 30, 30-50, > 50 cells from the sensor) by plain radial masking, by the range-aware rule
of the reference (``radial_mae_ra.py``: int(f n) per band of each kept sector, f = 1 - m, + 0.2, + 0.4) and by the
linear keep probability this package used before (0.4 at the sensor rising to 1 at the farthest voxel).
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
    ap.add_argument("--mask-stats", action="store_true", help="only the kept-voxel fractions per band (no training)")
    ap.add_argument("--seeds", type=int, default=5, help="--mask-stats: mask draws per scan")
    a = ap.parse_args()
    if a.mask_stats:
        return mask_stats(a)
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


def mask_stats(a):
    import torch

    import mae_3d  # noqa: F401
    from mae_3d.data.lidar import DrivingScenes, DrivingScenesConfig
    from mae_3d.methods.r_mae import RMAE, RMAEConfig, radial_mask

    data = DrivingScenes(DrivingScenesConfig(), "train")
    occ = torch.stack([data[i]["occupancy"] for i in range(len(data))]).float()
    dc = DrivingScenesConfig()
    model = RMAE(RMAEConfig(grid=dc.grid, voxel_size=dc.voxel_size, grid_min=dc.grid_min))
    rng, sec, n = model.ranges, model.sectors, model.num_sectors
    bands = torch.bucketize(rng, torch.tensor([30.0, 50.0]))
    occupied = occ > 0

    def linear_keep(keep, g):  # the earlier rule: keep probability 0.4 + 0.6 r / r_max inside kept sectors
        p = 0.4 + 0.6 * rng / rng.max()
        return keep & (torch.rand(keep.shape, generator=g) < p)

    res = {"scans": len(data), "occupied_per_band": [int(occupied[:, bands == k].sum()) for k in range(3)]}
    for name in ("plain", "reference_bands", "linear_before"):
        kept = torch.zeros(3)
        for seed in range(a.seeds):
            g = torch.Generator().manual_seed(seed)
            keep, _ = radial_mask(occ, sec, n, 0.8, g, rng if name == "reference_bands" else None)
            if name == "linear_before":
                keep = linear_keep(keep, g)
            kept += torch.tensor([float(keep[:, bands == k].sum()) for k in range(3)])
        tot = torch.tensor(res["occupied_per_band"], dtype=torch.float) * a.seeds
        res[name] = {"kept_fraction_per_band": [round(float(x), 4) for x in kept / tot.clamp_min(1)],
                     "kept_fraction_all": round(float(kept.sum() / tot.sum()), 4)}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
