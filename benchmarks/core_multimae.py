"""MultiMAE in miniature on the embedded multimodal shapes (RGB + depth + class mask, 32 px): the RGB-only image MAE
against MultiMAE at the same visible-token budget (32 encoder tokens: the image MAE masks 50 % of 64 RGB patches,
MultiMAE keeps 32 of 3 x 64 RGB / depth / segmentation tokens, split by Dirichlet(1)), the same encoder (128 wide,
4 blocks), optimizer steps, batch and learning rate; plus randomly initialised encoders of both (``scratch``).

Probes on frozen features: the ``linear`` probe of the shape class from RGB alone, and the ``segmentation`` grid
probe (one linear layer from each token to its pixels' 9 class logits, mIoU over background + 8 shape classes on
the test split, trained on ``--label-fraction`` of the training split) with RGB input and, for MultiMAE, with RGB +
depth input (``probe_inputs="rgb-depth"``: the two modalities' tokens of a position concatenated). One JSON line per
run is appended to ``--out``/results.jsonl.

    uv run python benchmarks/core_multimae.py --out runs/mm --seed 0 --steps 300 --runs scratch mae multimae
    uv run python benchmarks/core_multimae.py --out runs/mm --table      # the table from results.jsonl
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from bench_common import append_result, arm_parser, mean_sd, read_results

RUNS = ["scratch", "mae", "multimae"]
COLUMNS = [("linear_rgb", "linear probe, RGB (acc %)"), ("miou_rgb", "seg. probe, RGB (mIoU %)"),
           ("miou_rgbd", "seg. probe, RGB + depth (mIoU %)")]


def table(out: Path) -> str:
    rows = read_results(out)

    def cell(rs, key):
        return mean_sd(rs, key, 100, per_seed=True)

    text = ["| arm | steps | seeds | " + " | ".join(c for _, c in COLUMNS) + " | pretraining CPU s |",
            "|---|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for name in sorted(rows, key=lambda n: [r.split(":")[0] for r in RUNS].index(n.split(":")[0])):
        rs = sorted(rows[name], key=lambda r: r["seed"])
        secs = " / ".join(f"{r['train_s']:.0f}" for r in rs)
        text.append(f"| {name} | {rs[0]['steps']} | {','.join(str(r['seed']) for r in rs)} | "
                    + " | ".join(cell(rs, k) for k, _ in COLUMNS) + f" | {secs} |")
    return "\n".join(text)


def main() -> None:
    ap = arm_parser(__doc__, RUNS)
    ap.add_argument("--label-fraction", type=float, default=0.125,
                    help="labelled share of the training split for the segmentation probe (0.125: 256 of 2048)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(out))
        return
    import mae_core

    out.mkdir(parents=True, exist_ok=True)
    extra = json.loads(args.set)
    n_train = extra.get("num_train", 2048)
    per_epoch = n_train // args.batch_size
    shape = dict(embed_dim=128, depth=4, num_heads=4, decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4)
    arms = {"mae": ("image-mae", dict(mask_ratio=0.5)), "multimae": ("multimae", dict(num_visible=32))}
    seg = {"kind": "segmentation", "label_fraction": args.label_fraction, "probe_seed": args.seed}
    lin = {"kind": "linear", "probe_seed": args.seed}

    def record(name, steps, train_s, run=None, method=None, opts=None):
        if run is None:  # random initialisation of the arm's model
            src = dict(method=method, dataset="multishapes", random_init=True, seed=args.seed, **shape, **opts,
                       **extra)
        else:
            src = dict(run=run)
        rec = {"run": name, "seed": args.seed, "steps": steps, "batch_size": args.batch_size, "options": extra,
               "label_fraction": args.label_fraction, "train_s": train_s}
        t0 = time.process_time()
        rec["linear_rgb"] = mae_core.probe(**src, **lin)["linear"]["acc"]
        r = mae_core.probe(**src, **seg)["segmentation"]
        rec["miou_rgb"], rec["dice_rgb"] = r["miou"], r["dice"]
        if (method or run.config.method.name) == "multimae":
            r = mae_core.probe(**src, **seg, probe_inputs="rgb-depth")["segmentation"]
            rec["miou_rgbd"], rec["dice_rgbd"] = r["miou"], r["dice"]
        rec["probe_s"] = round(time.process_time() - t0, 1)
        append_result(out, rec)

    for name in args.runs:
        if name == "scratch":
            for arm, (method, opts) in arms.items():
                record(f"scratch:{arm}", 0, 0.0, method=method, opts=opts)
            continue
        method, opts = arms[name]
        t0 = time.process_time()
        run = mae_core.pretrain(method, dataset="multishapes", out=str(out / f"{name}-s{args.seed}"), overwrite=True,
                                progress=False, seed=args.seed, epochs=math.ceil(args.steps / per_epoch),
                                max_steps=args.steps, batch_size=args.batch_size,
                                warmup_epochs=0.1 * args.steps / per_epoch, base_lr=1.5e-3, **shape, **opts, **extra)
        record(name, args.steps, round(time.process_time() - t0, 1), run=run)


if __name__ == "__main__":
    main()
