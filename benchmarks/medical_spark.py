"""SparK on a small labelled set, the label-fraction curve in miniature: pretrain ``spark`` (its two ablations, and
the contrastive baseline ``simclr-cnn`` on the same CNN) on the BreastMNIST training images (no labels), fine-tune
the CNN with 100 / 25 / 10 / 5 % of the training labels, test AUC (MONAI ``ROCAUCMetric``) on the 156 test images;
``scratch`` is the same CNN from random initialisation.

Arms: ``scratch``; ``simclr`` (SimCLR views made by the model from the unaugmented images); ``spark``;
``spark-dense`` (mask not re-applied, dense BatchNorm); ``spark-single`` (only the smallest feature map reaches the
decoder). Fine-tuning: the same number of optimizer steps at every fraction (AdamW, cosine, no layer decay, no drop
path, no label smoothing), the subset drawn per seed.

    OMP_NUM_THREADS=1 uv run python benchmarks/medical_spark.py --seeds 0 --out runs/bench-spark
    uv run python benchmarks/medical_spark.py --report runs/bench-spark*   # mean +- std over seeds, from results.json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "breastmnist" / "breastmnist.npz"
# arm -> (method, model overrides, pretraining augmentation of the dataset; None: no pretraining)
ARMS = {"scratch": ("spark", {}, None), "simclr": ("simclr-cnn", {}, "none"), "spark": ("spark", {}, "pretrain"),
        "spark-dense": ("spark", {"sparse": False}, "pretrain"),
        "spark-single": ("spark", {"decoder_scales": 1}, "pretrain")}


def report(dirs: list[str]) -> None:
    """Markdown table: test AUC mean +- sample std over the seeds in ``DIR/results.json`` (or the named JSON files)."""
    import statistics

    files = [Path(d) / "results.json" if Path(d).is_dir() else Path(d) for d in dirs]
    rows = [r for f in files for r in json.loads(f.read_text())["rows"]]
    fracs = sorted({r["fraction"] for r in rows}, reverse=True)
    print("| arm | seeds | " + " | ".join(f"{f:.0%}" for f in fracs) + " |")
    print("|---|---|" + "---|" * len(fracs))
    for arm in [a for a in ARMS if any(r["arm"] == a for r in rows)]:
        cells, seeds = [], set()
        for f in fracs:
            v = {r["seed"]: r["test_auc"] for r in rows if r["arm"] == arm and r["fraction"] == f}
            seeds |= set(v)
            sd = f" +- {statistics.stdev(v.values()):.3f}" if len(v) > 1 else ""
            cells.append(f"{statistics.mean(v.values()):.3f}{sd}" if v else "")
        print(f"| `{arm}` | {' '.join(map(str, sorted(seeds)))} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", default=str(DATA))
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--ft-steps", type=int, default=200)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25, 0.1, 0.05])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/bench-spark")
    ap.add_argument("--report", nargs="+", metavar="DIR", help="only print the table of these runs' results.json (folders or files)")
    args = ap.parse_args()
    if args.report:
        return report(args.report)

    import mae_core
    from mae_core.eval import finetune
    from mae_core.train.trainer import TrainConfig, Trainer
    from mae_medical.data.xray import MedicalImages, MedicalImagesConfig
    from mae_medical.methods.xray_mae import monai_mean_auc

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(path=args.npz, image_size=args.image_size)
    pre_sets = {aug: MedicalImages(MedicalImagesConfig(**cfg, augment=aug), "train") for aug in ("pretrain", "none")}
    ft_set = MedicalImages(MedicalImagesConfig(**cfg, augment="finetune"), "train")
    test_set = MedicalImages(MedicalImagesConfig(**cfg, augment="none"), "test")
    labels = torch.tensor([int(ft_set[i]["label"]) for i in range(len(ft_set))])
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            torch.manual_seed(seed)
            method, over, aug = ARMS[arm]
            pre_set = pre_sets[aug or "pretrain"]
            model = mae_core.create_model(method, domain="medical", dataset=pre_set, data_config=pre_set.config,
                                          **over)
            t = time.time()
            loss = None
            if aug is not None:
                tc = TrainConfig(epochs=args.pretrain_epochs, batch_size=32, lr=args.pretrain_lr,
                                 warmup_epochs=max(1, args.pretrain_epochs // 10), weight_decay=0.04,
                                 betas=(0.9, 0.95), clip_grad=5.0, seed=seed, device="cpu", progress=False,
                                 log_every=10 ** 6)
                loss = Trainer(model, pre_set, tc).fit()["final_loss"]
            pre_s = round(time.time() - t, 1)
            for frac in args.fractions:
                g = torch.Generator().manual_seed(1000 + seed)
                # a stratified subset: the same fraction of each class
                idx = torch.cat([c[torch.randperm(len(c), generator=g)[:max(1, round(frac * len(c)))]]
                                 for c in (torch.nonzero(labels == k).flatten() for k in labels.unique())])
                subset = torch.utils.data.Subset(ft_set, idx.tolist())
                batch = min(args.ft_batch, len(subset))
                epochs = max(1, round(args.ft_steps / math.ceil(len(subset) / batch)))
                tc = TrainConfig(epochs=epochs, batch_size=batch, lr=args.ft_lr, warmup_epochs=epochs / 10,
                                 weight_decay=0.05, betas=(0.9, 0.999), drop_last=False, seed=seed, device="cpu",
                                 progress=False, log_every=10 ** 6)
                t = time.time()
                clf, summary = finetune(copy.deepcopy(model), subset, test_set, 2, tc, layer_decay=None,
                                        drop_path=0.0, pool=None, label_smoothing=0.0)
                clf.eval()
                with torch.no_grad():
                    s = torch.cat([torch.softmax(clf.logits({"image": torch.stack([test_set[i]["image"]
                                                                                   for i in chunk])}), -1)
                                   for chunk in torch.arange(len(test_set)).split(64)])
                y = torch.tensor([int(test_set[i]["label"]) for i in range(len(test_set))])
                row = {"arm": arm, "seed": seed, "fraction": frac, "labels": len(subset),
                       "test_auc": round(monai_mean_auc(s, y), 4), "test_acc": round(summary["test_acc"], 4),
                       "pretrain_loss": loss, "pretrain_s": pre_s, "finetune_s": round(time.time() - t, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
