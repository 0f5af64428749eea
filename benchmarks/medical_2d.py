"""2-D medical benchmarks of mae-medical (run by hand; numbers go to docs/benchmarks/medical.md):

1. chest X-ray MAE recipe on BreastMNIST (MedMNIST v2, 28 px, real data): pretrain the 1-channel ViT MAE with
   mask 0.9 on the training images for each length of ``--xray-pretrain-epochs`` (0 = random init), fine-tune
   with the reference recipe (layer decay 0.55, drop path 0.2, crop 0.08-1, h-flip, RandAugment m6 mstd 0.5, GAP,
   AdamW (0.9, 0.999), base lr 2.5e-4, min lr 1e-5); report test AUC (MONAI ROCAUCMetric) and accuracy per seed
   next to MedMNIST v2's ResNet-18 (28): 0.901 / 0.863.
2. MemMC-MAE anomaly detection on the embedded synthetic chests: train on normal images only, image-level AUROC
   of the masked-reconstruction score (K masks), pixel AUROC of the maps, and a picture.

    OMP_NUM_THREADS=1 uv run python benchmarks/medical_2d.py --which xray anomaly
    OMP_NUM_THREADS=1 uv run python benchmarks/medical_2d.py --which xray --xray-pretrain-epochs 0 50 150 --seeds 0
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "breastmnist" / "breastmnist.npz"


def xray(args):
    """One point of the curve: pretrain ``xray-mae`` for each length in ``--xray-pretrain-epochs`` (0 = no
    pretraining, the same architecture from random init), then fine-tune with the recipe; per seed."""
    from mae_core.checkpoint import from_pretrained
    from mae_core.registry import build_model
    from mae_core.train import TrainConfig
    from mae_medical.cli import main as cli
    from mae_medical.data.xray import MedicalImages, MedicalImagesConfig
    from mae_medical.methods.xray_mae import FINETUNE_TRAIN, XRayMAEConfig, finetune_xray

    rows = []
    for seed in args.seeds:
        for epochs in args.xray_pretrain_epochs:
            out = Path(args.out) / f"xray-pre{epochs}-seed{seed}"
            t0 = time.time()
            if epochs > 0:
                flags = ["pretrain", "--method", "xray-mae", "--dataset", "medical-images", "--data", str(args.npz),
                         "--epochs", str(epochs), "--batch-size", "64", "--lr", str(args.xray_pretrain_lr),
                         "--warmup-epochs", str(max(1, epochs // 20)), "--seed", str(seed), "--no-progress",
                         "--log-every", "1000", "--out", str(out), "--overwrite"]
                if args.norm_pix_loss:
                    flags.append("--norm-pix-loss")
                assert cli(flags) == 0
                model = from_pretrained(out)
            else:
                model = build_model("xray-mae", XRayMAEConfig(img_size=28))
            pre_s = time.time() - t0
            cfg = MedicalImagesConfig(path=str(args.npz), augment=args.xray_ft_augment)
            train, test = MedicalImages(cfg, "train"), MedicalImages(cfg, "test")
            tc = dict(FINETUNE_TRAIN, epochs=args.xray_ft_epochs, batch_size=64, lr=args.xray_ft_lr, progress=False,
                      device="cpu", seed=seed, log_every=1000)
            t0 = time.time()
            _, summary = finetune_xray(model, train, test, 2, TrainConfig(**tc))
            row = {"pretrain_epochs": epochs, "seed": seed, "test_auc": round(summary["test_auc_monai"], 4),
                   "test_acc": round(summary["test_acc"], 4), "pretrain_s": round(pre_s, 1),
                   "finetune_s": round(time.time() - t0, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"finetune_epochs": args.xray_ft_epochs, "finetune_lr": args.xray_ft_lr,
            "finetune_augment": args.xray_ft_augment, "rows": rows,
            "medmnist_v2_resnet18_28": {"test_auc": 0.901, "test_acc": 0.863}}


def anomaly(args):
    from mae_core.checkpoint import from_pretrained
    from mae_medical.cli import main as cli
    from mae_medical.commands import evaluate_anomaly, save_anomaly_figure
    from mae_medical.data.xray import ChestAnomaly, ChestAnomalyConfig

    out = Path(args.out) / "anomaly"
    t0 = time.time()
    assert cli(["pretrain", "--method", "anomaly-mae", "--epochs", str(args.anomaly_epochs), "--no-progress",
                "--out", str(out), "--overwrite"]) == 0
    train_s = time.time() - t0
    model = from_pretrained(out)
    ds = ChestAnomaly(ChestAnomalyConfig(), "test")
    res = {}
    for k in (1, 8):
        r = evaluate_anomaly(model, ds, num_masks=k)
        res[f"K={k}"] = {"image_auroc": r["image_auroc"], "pixel_auroc": r["pixel_auroc"]}
    fig = save_anomaly_figure(ds.images, r["maps"], r["labels"], ds.lesions, out / "pictures" / "anomaly.png")
    return {"train_s": round(train_s, 1), "epochs": args.anomaly_epochs, **res, "figure": str(fig)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--which", nargs="+", default=["xray", "anomaly"])
    ap.add_argument("--npz", default=str(DATA))
    ap.add_argument("--out", default="runs/bench-medical-2d")
    ap.add_argument("--xray-pretrain-epochs", type=int, nargs="+", default=[0, 100],
                    help="pretraining lengths of the curve (0 = random init)")
    ap.add_argument("--xray-pretrain-lr", type=float, default=1e-3, help="absolute pretraining lr at batch 64")
    ap.add_argument("--norm-pix-loss", action="store_true", help="pretrain with normalised pixel targets")
    ap.add_argument("--xray-ft-epochs", type=int, default=75, help="fine-tuning epochs (the reference: 75)")
    ap.add_argument("--xray-ft-lr", type=float, default=5e-4,
                    help="absolute fine-tuning lr at batch 64 (the reference: base 2.5e-4 x 1024 / 256 = 1e-3)")
    ap.add_argument("--xray-ft-augment", default="finetune", choices=["finetune", "pretrain", "none"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--anomaly-epochs", type=int, default=10)
    args = ap.parse_args()
    res = {}
    if "anomaly" in args.which:
        res["anomaly"] = anomaly(args)
        print(json.dumps(res["anomaly"], indent=1), flush=True)
    if "xray" in args.which:
        res["xray"] = xray(args)
        print(json.dumps(res["xray"], indent=1), flush=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
