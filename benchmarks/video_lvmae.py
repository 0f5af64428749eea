"""LV-MAE on the embedded long-video stories: story classification by a linear probe on four features.

Arms (one seed per call; the stories, the clips and the frozen VideoMAE segment encoder are the same for every
seed, only the transformer's initialisation, its masks / windows and the probe's seed change):

- ``mean``: the mean of a story's L2-normalised segment embeddings (no transformer);
- ``random-init``: an LV-MAE transformer with random weights, its mean-pooled encoder outputs;
- ``lv-mae-random``: LV-MAE pretrained with random masking (50 %), same features;
- ``lv-mae-importance``: LV-MAE pretrained with importance masking;
- ``segment-motion`` (diagnostic): a linear probe of the segment's motion (8 classes) from one segment embedding
  (4096 training segments, every test segment).

The probe is mae-core's linear probe (BatchNorm + linear, AdamW, 100 epochs) on the 512 training stories, accuracy
on the 256 test stories (8 labels, chance 0.125; a feature blind to order is capped near 0.5, since labels 2s and
2s + 1 share their motions).

    uv run python benchmarks/video_lvmae.py --seed 0 --epochs 60 --out bench_out/lvmae-0.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import mae_core
from mae_core.eval import extract_features, linear_probe
from mae_video.methods.lvmae import mean_segments


def probe(train_x, train_y, test_x, test_y, seed):
    return linear_probe(train_x, train_y, test_x, test_y, num_classes=8, seed=seed)["acc"]


def order_blind_ceiling(train_y, test_y) -> float:
    """Accuracy of an oracle that knows each test story's motion set but not its order (best guess: the more
    frequent of the set's two labels in training)."""
    counts = torch.bincount(train_y, minlength=8)
    guess = torch.where(counts[0::2] >= counts[1::2], torch.arange(0, 8, 2), torch.arange(1, 8, 2))
    return float((guess[test_y // 2] == test_y).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--arms", nargs="+", default=["segment-motion", "mean", "random-init", "lv-mae-random", "lv-mae-importance"])
    ap.add_argument("--runs", default="runs/bench-lvmae", help="where the LV-MAE runs go")
    ap.add_argument("--teacher", default="", help="segment encoder run (default: the default VideoMAE)")
    ap.add_argument("--segment-pool", default="grid", help="the segment encoder's pool (grid / time / mean)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = {"teacher": args.teacher, "segment_pool": args.segment_pool}
    train = mae_core.create_dataset("long-video-stories", "train", domain="video", **data)
    test = mae_core.create_dataset("long-video-stories", "test", domain="video", **data)
    collate = train.collate_fn
    ytr, yte = train.labels, test.labels
    res = {"seed": args.seed, "epochs": args.epochs, "teacher": args.teacher or "default videomae", "segment_dim": train.dim,
           "order_blind_ceiling": order_blind_ceiling(ytr, yte), "arms": {}}
    for arm in args.arms:
        t0 = time.process_time()
        row = {}
        if arm == "segment-motion":  # diagnostic: is the motion linearly readable from one segment embedding?
            g = torch.Generator().manual_seed(args.seed)
            pick = torch.randperm(len(train.embeddings), generator=g)[:4096]
            mtr = torch.from_numpy(np.concatenate(train.motions))[pick]
            mte = torch.from_numpy(np.concatenate(test.motions))
            row.update(acc=linear_probe(train.embeddings[pick], mtr, test.embeddings, mte, num_classes=8,
                                        seed=args.seed)["acc"], cpu_s=round(time.process_time() - t0, 1))
            res["arms"][arm] = row
            print(arm, row, flush=True)
            continue
        if arm == "mean":
            xtr = mean_segments(collate([train[i] for i in range(len(train))]))
            xte = mean_segments(collate([test[i] for i in range(len(test))]))
        else:
            if arm == "random-init":
                torch.manual_seed(args.seed)
                model = mae_core.create_model("lv-mae", domain="video", dataset=train)
            else:
                masking = arm.rsplit("-", 1)[1]
                tag = f"-{Path(args.teacher).name}" if args.teacher else ""
                out = Path(args.runs) / f"{arm}{tag}-s{args.seed}"
                run = mae_core.pretrain("lv-mae", domain="video", out=str(out), overwrite=True, seed=args.seed,
                                        epochs=args.epochs, masking=masking, progress=False, data_config=data)
                model = run.model
                summary = json.loads((out / "summary.json").read_text())
                row.update(final_loss=summary["final_loss"], steps=summary["steps"])
            xtr, _ = extract_features(model, train, collate_fn=collate)
            xte, _ = extract_features(model, test, collate_fn=collate)
        row.update(acc=probe(xtr, ytr, xte, yte, args.seed), cpu_s=round(time.process_time() - t0, 1))
        res["arms"][arm] = row
        print(arm, row, flush=True)
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
