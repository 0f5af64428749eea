"""TokenUnify in miniature on the embedded membranes: boundary Dice of a frozen-feature grid probe after no
pretraining (scratch), the image MAE, TokenUnify stage 1 only, stage 2 only, and both stages (stage 1 for half the
steps, then stage 2 from it for the other half), every pretraining run at ``--steps`` optimizer steps in all.

The probe is mae-core's ``segmentation`` probe (``mae_core.eval.grid``): frozen patch tokens, one linear layer to
the boundary / interior logits of each token's pixels, trained on a class-stratified ``--label-fraction`` of the
training split (default 128 of 2048 images), Dice of the boundary class on the test split. Training compute is counted in FLOPs (one forward + backward of
a batch, ``torch.utils.flop_counter``). One JSON line per run is appended to ``--out``/results.jsonl.

    uv run python benchmarks/core_tokenunify.py --out runs/tu --seed 0 --steps 300 \\
        --runs scratch mae stage1 stage2 both
    uv run python benchmarks/core_tokenunify.py --out runs/tu --table      # the table from results.jsonl
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench_common import append_result, arm_parser, mean_sd, read_results
from bench_common import step_flops as batch_step_flops

RUNS = ["scratch", "mae", "stage1", "stage2", "both"]


def step_flops(model, ds, batch_size: int) -> float:
    """FLOPs of one training step (forward + backward) of ``model`` on ``batch_size`` training images."""
    from mae_core.data.utils import collate_dicts

    return batch_step_flops(model, collate_dicts([ds[i] for i in range(batch_size)]))


def table(out: Path) -> str:
    rows = read_results(out)
    cell = mean_sd

    text = ["| run | pretraining steps | seeds | boundary Dice % | per seed | pixel acc % | training TFLOP |",
            "|---|---|---|---|---|---|---|"]
    for name in [n for n in RUNS if n in rows]:
        rs = sorted(rows[name], key=lambda r: r["seed"])
        per = " / ".join(f"{100 * r['dice']:.1f}" for r in rs)
        text.append(f"| {name} | {rs[0]['steps']} | {','.join(str(r['seed']) for r in rs)} | "
                    f"{cell(rs, 'dice', 100)} | {per} | {cell(rs, 'pixel_acc', 100)} | "
                    f"{rs[0]['tflop']:.2f} |")
    return "\n".join(text)


def main() -> None:
    ap = arm_parser(__doc__, RUNS, steps_help="optimizer steps of every pretraining run (both: in all)")
    ap.add_argument("--label-fraction", type=float, default=0.0625,
                    help="labelled share of the training split (0.0625: 128 of 2048 images)")
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
    probe_opts = {"kind": "segmentation", "label_fraction": args.label_fraction, "probe_seed": args.seed}

    def train(name, method, steps, **opts):
        run_dir = out / f"{name}-s{args.seed}"
        run = mae_core.pretrain(method, dataset="membranes", out=str(run_dir), overwrite=True, progress=False,
                                seed=args.seed, epochs=math.ceil(steps / per_epoch), max_steps=steps,
                                batch_size=args.batch_size, warmup_epochs=0.1 * steps / per_epoch, base_lr=1.5e-3,
                                **extra, **opts)
        return run, step_flops(run.model, run.dataset("train"), args.batch_size) * steps / 1e12

    for name in args.runs:
        tflop, steps = 0.0, args.steps
        if name == "scratch":
            res = mae_core.probe(method="tokenunify", dataset="membranes", random_init=True, stage=1, **extra,
                                 **probe_opts)
            steps = 0
        else:
            if name == "mae":
                run, tflop = train(name, "image-mae", steps)
            elif name == "stage1":
                run, tflop = train(name, "tokenunify", steps, stage=1)
            elif name == "stage2":
                run, tflop = train(name, "tokenunify", steps, stage=2, init="none")
            else:
                first, t1 = train("both-stage1", "tokenunify", steps // 2, stage=1)
                run, t2 = train(name, "tokenunify", steps - steps // 2, stage=2, init=str(first.path))
                tflop = t1 + t2
            res = mae_core.probe(run, **probe_opts)
        seg = res["segmentation"]
        rec = {"run": name, "seed": args.seed, "steps": steps, "batch_size": args.batch_size, "options": extra,
               "label_fraction": args.label_fraction, "dice": seg["dice"], "pixel_acc": seg["pixel_acc"],
               "tflop": tflop}
        append_result(out, rec)


if __name__ == "__main__":
    main()
