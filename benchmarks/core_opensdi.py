"""OpenSDI / MaskCLIP in miniature on the embedded sdi-shapes: train a detector / localiser of generated regions on
one generator (default: the library's inpainting image MAE) and test it on that generator (seen) and on the others
(unseen: blur, cell shuffle), the paper's open-world setting. Two arms per seed: the fused model (``maskclip-sdi``:
frozen contrastive ViT fused into the MAE-initialised ViT) and the MAE-only localiser (``--teacher none``: the same
ViT, decoder and heads without the frozen branch).

Metrics on the 1024 test images of each generator (half fakes): image AUC and accuracy of the real / fake head
(P(fake) = softmax of its two logits), pixel F1 and IoU at threshold 0.5 per fake image, averaged (IMDLBenCo's
per-image pixel F1), and the image AUC of the mask's max as a second image score. One JSON line per arm and test
generator is appended to ``--out``/results.jsonl, with the CPU seconds of training.

    uv run python benchmarks/core_opensdi.py --out runs/opensdi --teachers          # the cached teachers / generator
    uv run python benchmarks/core_opensdi.py --out runs/opensdi --seed 0 [--epochs 4] [--train-generator mae]
    uv run python benchmarks/core_opensdi.py --out runs/opensdi --table
    uv run python benchmarks/core_opensdi.py --out runs/opensdi --picture docs/benchmarks/opensdi-masks.png
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

GENERATORS = ["mae", "blur", "shuffle"]
ARMS = {"fused": {}, "mae-only": {"teacher": "none"}}


def pixel_scores(prob: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image F1 and IoU of ``prob > 0.5`` against the 0/1 ``truth`` (N, 1, H, W); an empty union counts 1."""
    pred, truth = (prob > 0.5).flatten(1).float(), truth.flatten(1).float()
    tp = (pred * truth).sum(1)
    fp, fn = (pred * (1 - truth)).sum(1), ((1 - pred) * truth).sum(1)
    f1 = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1e-9), torch.ones_like(tp))
    iou = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp_min(1e-9), torch.ones_like(tp))
    return f1, iou


@torch.no_grad()
def evaluate(model, ds, batch: int = 256) -> dict:
    from mae_core.eval.linear import mean_auc

    model.eval()
    probs, fake_p = [], []
    for i in range(0, len(ds), batch):
        mask, logits, _ = model.predict(ds.images[i:i + batch])
        probs.append(mask.sigmoid())
        fake_p.append(logits.softmax(1)[:, 1])
    prob, p = torch.cat(probs), torch.cat(fake_p)
    labels = ds.labels
    fakes = labels == 1
    f1, iou = pixel_scores(prob[fakes], ds.regions[fakes])
    return {"image_auc": mean_auc(p[:, None], labels[:, None]), "image_acc": float(((p > 0.5).long() == labels)
            .float().mean()), "pixel_f1": float(f1.mean()), "pixel_iou": float(iou.mean()),
            "mask_max_auc": mean_auc(prob.flatten(1).amax(1)[:, None], labels[:, None])}


def test_sets(train_gen: str) -> dict:
    import mae_core

    return {g: mae_core.create_dataset("sdi-shapes", "test", generator=g) for g in GENERATORS}


def run_seed(args) -> None:
    import mae_core

    out = Path(args.out)
    sets = test_sets(args.train_generator)
    for arm, opts in ARMS.items():
        dest = out / f"{arm}-{args.train_generator}-s{args.seed}"
        t0 = time.process_time()
        mae_core.pretrain("maskclip-sdi", out=str(dest), overwrite=True, seed=args.seed, epochs=args.epochs,
                          generator=args.train_generator, progress=False, **opts)
        cpu = time.process_time() - t0
        model = mae_core.from_pretrained(dest)
        for gen, ds in sets.items():
            row = {"arm": arm, "seed": args.seed, "train_generator": args.train_generator, "test_generator": gen,
                   "seen": gen == args.train_generator, "epochs": args.epochs, "train_cpu_s": round(cpu, 1),
                   **{k: round(v, 4) for k, v in evaluate(model, ds).items()}}
            print(json.dumps(row), flush=True)
            with open(out / "results.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")


def teachers(args) -> None:
    """Train (or find) the cached generator MAE, frozen contrastive ViT and init MAE, with their CPU seconds."""
    import mae_core

    t0 = time.process_time()
    ds = mae_core.create_dataset("sdi-shapes", "train")  # trains the default inpainting MAE if needed
    t1 = time.process_time()
    mae_core.create_model("maskclip-sdi", dataset=ds)  # trains the default T-CL and init MAE if needed
    t2 = time.process_time()
    print(json.dumps({"generator_cpu_s": round(t1 - t0, 1), "teacher_and_init_cpu_s": round(t2 - t1, 1)}))


def table(args) -> None:
    rows = [json.loads(line) for line in open(Path(args.out) / "results.jsonl")]
    keys = sorted({(r["train_generator"], r["test_generator"], r["arm"]) for r in rows},
                  key=lambda k: (k[0], k[1] != k[0], k[1], k[2]))
    print("| train on | test on | arm | seeds | image AUC | image acc | pixel F1 | pixel IoU | mask-max AUC | "
          "train CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tr, te, arm in keys:
        sel = [r for r in rows if (r["train_generator"], r["test_generator"], r["arm"]) == (tr, te, arm)]
        cell = lambda k: " / ".join(f"{100 * r[k]:.1f}" for r in sel)  # noqa: E731
        mean = lambda k: f" ({100 * statistics.mean(r[k] for r in sel):.1f})" if len(sel) > 1 else ""  # noqa: E731
        print(f"| {tr} | {te}{' (seen)' if tr == te else ''} | {arm} | {','.join(str(r['seed']) for r in sel)} | "
              + " | ".join(cell(k) + mean(k) for k in ("image_auc", "image_acc", "pixel_f1", "pixel_iou",
                                                       "mask_max_auc"))
              + f" | {statistics.mean(r['train_cpu_s'] for r in sel):.0f} |")


def picture(args) -> None:
    import mae_core
    from mae_core.models.maskclip_sdi import visualize_maskclip_sdi

    run = Path(args.out) / f"fused-{args.train_generator}-s0"
    model = mae_core.from_pretrained(run)
    for gen in GENERATORS:
        ds = mae_core.create_dataset("sdi-shapes", "test", generator=gen)
        dest = Path(args.picture)
        visualize_maskclip_sdi(model, ds, dest.with_name(f"{dest.stem}-{gen}{dest.suffix}"), num=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-generator", default="mae", choices=GENERATORS)
    ap.add_argument("--teachers", action="store_true")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--picture", default="")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if args.teachers:
        teachers(args)
    elif args.table:
        table(args)
    elif args.picture:
        picture(args)
    else:
        run_seed(args)


if __name__ == "__main__":
    main()
