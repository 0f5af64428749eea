"""Trajectory MAE in miniature: fine-tuned minADE6 / minFDE6 / miss rate (2 m) on the embedded driving scenes for
scratch and for pretraining by map reconstruction only, trajectory reconstruction only and both (drawn per scene,
70 % map), each with pretraining scenes on the original maps and on augmented maps (half the scenes bent). Run by hand;
results go to docs/benchmarks/graph.md.

    uv run python benchmarks/graph_trajmae.py --seeds 2 --out runs/trajmae-bench

Pretraining: `mae_core.pretrain("traj-mae", ...)` on `--pretrain-scenes` scenes (data seed 0); fine-tuning and
test: `mae_graph.predict.finetune_prediction` (what `mae-graph traj-predict` runs) on `--finetune-scenes` other
scenes (data seed 100, original maps) and 500 test scenes. The same model size everywhere.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import mae_core
from mae_graph.data.driving import DrivingScenesConfig, make_driving_scenes
from mae_graph.predict import draw_predictions, finetune_prediction


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--pretrain-scenes", type=int, default=2000)
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--finetune-scenes", type=int, default=500)
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--test-scenes", type=int, default=500)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--arms", default="scratch,map,traj,both", help="comma list of scratch, map, traj, both")
    p.add_argument("--augment", default="0,0.5", help="comma list of pretraining augment_prob values")
    p.add_argument("--out", default="runs/trajmae-bench")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    ft_cfg = DrivingScenesConfig(num_train=args.finetune_scenes, num_test=args.test_scenes, seed=100)
    t0 = time.time()
    ft_train, ft_test = make_driving_scenes(ft_cfg, "train"), make_driving_scenes(ft_cfg, "test")
    print(f"fine-tuning data: {time.time() - t0:.1f} s", flush=True)
    arms = args.arms.split(",")
    augs = [float(a) for a in args.augment.split(",")]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        jobs = [("scratch", None)] if "scratch" in arms else []
        jobs += [(a, g) for g in augs for a in arms if a != "scratch"]
        for task, aug in jobs:
            rec = {"arm": task, "augment_prob": aug, "seed": seed}
            if task == "scratch":
                torch.manual_seed(seed)
                model = mae_core.create_model("traj-mae", domain="graph", dataset=ft_train, hidden=args.hidden)
                rec["pretrain_s"] = 0.0
            else:
                t0 = time.time()
                run = mae_core.pretrain("traj-mae", domain="graph", out=str(out / f"pre-{task}-aug{aug}-s{seed}"),
                                        overwrite=True, task=task, augment_prob=aug, num_train=args.pretrain_scenes,
                                        num_test=8, epochs=args.pretrain_epochs, seed=seed, hidden=args.hidden,
                                        progress=False)
                rec["pretrain_s"] = time.time() - t0
                rec["pretrain_final_loss"] = run.summary.get("final_loss")
                model = run.model
            res = finetune_prediction(model, ft_train, ft_test, epochs=args.finetune_epochs, seed=seed)
            rec.update(res)
            print(json.dumps(rec), flush=True)
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if seed == args.first_seed:
                draw_predictions(model, ft_test, out / f"predictions-{task}-aug{aug}.png")
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    print("\narm        augment  seeds  minADE6  minFDE6  MR")
    for key in sorted({(r["arm"], r["augment_prob"]) for r in rows}, key=str):
        rs = [r for r in rows if (r["arm"], r["augment_prob"]) == key]
        m = {k: np.mean([r[k] for r in rs]) for k in ("minADE", "minFDE", "MR")}
        print(f"{key[0]:10s} {str(key[1]):8s} {len(rs):5d}  {m['minADE']:.3f}    {m['minFDE']:.3f}    "
              f"{100 * m['MR']:.1f}")


if __name__ == "__main__":
    main()
