"""R-MAE downstream: per-voxel segmentation mIoU with a few labelled scans, pretrained encoder vs scratch.

    OMP_NUM_THREADS=1 nice -n 5 uv run python benchmarks/3d_rmae_segmentation.py --out runs/bench3d-rmae
    # the range-aware rules at a given seed: --extra "--range-aware --range-rule bands|linear" --seed 1 --no-scratch

Pretrains R-MAE on the embedded ray-cast driving scenes, then runs ``mae-3d segment`` on the pretrained run and with
``--scratch`` (same architecture, same labelled scans, same schedule), printing each command and its result.
``--seed`` goes to pretraining and to both segmentation runs; ``--no-scratch`` skips the scratch run (it does not
depend on the pretraining, so comparing pretraining rules needs it once per seed).

``--mask-stats`` only measures the masks on the training scans (no training): the fraction of occupied voxels kept
in each distance band (<= 30, 30-50, > 50 cells from the sensor) by plain radial masking, by the range-aware rule
of the reference (``radial_mae_ra.py``: int(f n) per band of each kept sector, f = 1 - m, + 0.2, + 0.4) and by the
linear keep probability this package used before (0.4 at the sensor rising to 1 at the farthest voxel).

``--conv-cost`` (no training) prices the issue's comparison against a dense 3-D convolutional encoder: the reference's
encoder layout (``radial_mae_ra.py``: 16 -> 32 -> 64 -> 64 channels, 3x3x3 convolutions, three stride-2 stages, a
128-channel output convolution) as dense ``Conv3d`` over the whole voxel grid, its widths scaled to the parameter count
of our ViT encoder, against one R-MAE pretraining step and one segmentation step (forward + backward, one thread).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench_common import median_seconds


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
    ap.add_argument("--seed", type=int, default=0, help="seed of pretraining and segmentation")
    ap.add_argument("--no-scratch", action="store_true", help="skip the scratch segmentation run")
    ap.add_argument("--mask-stats", action="store_true", help="only the kept-voxel fractions per band (no training)")
    ap.add_argument("--seeds", type=int, default=5, help="--mask-stats: mask draws per scan")
    ap.add_argument("--conv-cost", action="store_true", help="only time a dense 3-D conv encoder of equal parameters")
    a = ap.parse_args()
    if a.mask_stats:
        return mask_stats(a)
    if a.conv_cost:
        return conv_cost()
    exe = [sys.executable, "-m", "mae_3d.cli"]
    out = Path(a.out)
    run(exe + ["pretrain", "--method", "r-mae", "--epochs", str(a.epochs), "--out", str(out), "--overwrite",
               "--no-progress", "--seed", str(a.seed), *shlex.split(a.extra)])
    res = {"pretrain": json.loads((out / "summary.json").read_text())}
    for tag, extra in (("pretrained", []), ("scratch", ["--scratch"]))[:1 if a.no_scratch else 2]:
        o = run(exe + ["segment", "--run", str(out), "--num-labelled", str(a.num_labelled), "--seg-epochs",
                       str(a.seg_epochs), "--seed", str(a.seed), "--no-progress", *extra])
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

    res = {"scans": len(data), "occupied_per_band": [int(occupied[:, bands == k].sum()) for k in range(3)]}
    for name in ("plain", "reference_bands", "linear_before"):
        kept = torch.zeros(3)
        for seed in range(a.seeds):
            g = torch.Generator().manual_seed(seed)
            keep, _ = radial_mask(occ, sec, n, 0.8, g, None if name == "plain" else rng,
                                  rule="linear" if name == "linear_before" else "bands")
            kept += torch.tensor([float(keep[:, bands == k].sum()) for k in range(3)])
        tot = torch.tensor(res["occupied_per_band"], dtype=torch.float) * a.seeds
        res[name] = {"kept_fraction_per_band": [round(float(x), 4) for x in kept / tot.clamp_min(1)],
                     "kept_fraction_all": round(float(kept.sum() / tot.sum()), 4)}
    print(json.dumps(res, indent=1))


def dense_conv_encoder(w: float):
    """The reference's sparse encoder layout as dense 3-D convolutions, channel widths times ``w``."""
    import torch.nn as nn

    c16, c32, c64, c128 = (max(1, round(w * c)) for c in (16, 32, 64, 128))

    def block(i, o, stride=1):
        return [nn.Conv3d(i, o, 3, stride, 1, bias=False), nn.BatchNorm3d(o), nn.ReLU()]

    layers = block(1, c16) + block(c16, c16)
    for i, o in ((c16, c32), (c32, c64), (c64, c64)):
        layers += block(i, o, 2) + block(o, o) + block(o, o)
    layers += [nn.Conv3d(c64, c128, (1, 1, 3), 1, (0, 0, 1), bias=False), nn.BatchNorm3d(c128), nn.ReLU()]
    return nn.Sequential(*layers)


def conv_cost():
    import torch

    import mae_3d  # noqa: F401
    from mae_3d.data.lidar import DrivingScenes, DrivingScenesConfig
    from mae_3d.methods.r_mae import RMAE, RMAEConfig

    torch.manual_seed(0)
    dc = DrivingScenesConfig()
    data = DrivingScenes(dc, "train")
    occ = torch.stack([data[i]["occupancy"] for i in range(8)]).float()
    model = RMAE(RMAEConfig(grid=dc.grid, voxel_size=dc.voxel_size, grid_min=dc.grid_min))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    vit_params = count(model.encoder) + count(model.patch_embed)
    w = min((x / 100 for x in range(50, 300)), key=lambda x: abs(count(dense_conv_encoder(x)) - vit_params))
    conv = dense_conv_encoder(w)

    def timed(fn, reps=3):
        return round(median_seconds(fn, reps), 3)

    def pretrain_step():
        model(dict(occupancy=occ), generator=torch.Generator().manual_seed(0)).loss.backward()

    def vit_full(b):
        return lambda: model.forward_features(dict(occupancy=occ[:b])).sum().backward()

    def conv_full(b):
        return lambda: conv(occ[:b, None]).sum().backward()

    res = {"grid": list(dc.grid), "vit_encoder_params": vit_params, "conv_width_mult": w,
           "conv_encoder_params": count(conv), "conv_output_shape": list(conv(occ[:1, None]).shape),
           "s_per_step (forward + backward, one thread)": {
               "r-mae pretrain step, batch 8 (encoder on kept patches + decoder)": timed(pretrain_step),
               "vit encoder, all 256 patches, batch 8": timed(vit_full(8)),
               "vit encoder, all 256 patches, batch 4 (segmentation step)": timed(vit_full(4)),
               "dense conv encoder alone, batch 8": timed(conv_full(8)),
               "dense conv encoder alone, batch 4": timed(conv_full(4))}}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
