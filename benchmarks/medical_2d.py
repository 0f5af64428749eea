"""2-D medical benchmarks of mae-medical (run by hand; numbers go to docs/benchmarks/medical.md):

1. chest X-ray MAE recipe on BreastMNIST (MedMNIST v2, 28 px, real data): pretrain the 1-channel ViT MAE with
   mask 0.9 on the training images, fine-tune with layer decay 0.55, drop path 0.2, RandAugment m6, GAP;
   report test AUC (MONAI ROCAUCMetric) and accuracy next to MedMNIST v2's ResNet-18 (28): 0.901 / 0.863.
2. MemMC-MAE anomaly detection on the embedded synthetic chests: train on normal images only, image-level AUROC
   of the masked-reconstruction score (K masks), pixel AUROC of the maps, and a picture.

    OMP_NUM_THREADS=1 uv run python benchmarks/medical_2d.py --which xray anomaly
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "breastmnist" / "breastmnist.npz"


def xray(args):
    from mae_core.checkpoint import from_pretrained
    from mae_core.train import TrainConfig
    from mae_medical.cli import main as cli
    from mae_medical.data.xray import MedicalImages, MedicalImagesConfig
    from mae_medical.methods.xray_mae import finetune_xray

    from mae_core.checkpoint import load_checkpoint
    from mae_core.config import from_dict
    from mae_core.registry import build_model
    from mae_medical.methods.xray_mae import XRayMAEConfig

    out = Path(args.out) / "xray"
    t0 = time.time()
    if args.xray_checkpoint:  # a training checkpoint of an (interrupted) xray-mae pretraining run
        import yaml
        run_cfg = yaml.safe_load((Path(args.xray_checkpoint).parents[1] / "config.yaml").read_text())
        model_cfg = from_dict(XRayMAEConfig, run_cfg["model"])
        state, _ = load_checkpoint(args.xray_checkpoint, build_model("xray-mae", model_cfg))
        pre_steps = state["step"]
    else:
        assert cli(["pretrain", "--method", "xray-mae", "--dataset", "medical-images", "--data", str(args.npz),
                    "--epochs", str(args.xray_pretrain_epochs), "--batch-size", "64", "--lr", "1e-3",
                    "--no-progress", "--out", str(out), "--overwrite"]) == 0
        pre_steps = None
    pre_s = time.time() - t0
    res = {"pretrain_steps": pre_steps}
    for init in args.xray_inits:
        if args.xray_checkpoint:
            model = build_model("xray-mae", model_cfg)
            if init == "pretrained":
                load_checkpoint(args.xray_checkpoint, model)
        else:
            model = from_pretrained(out)
        if init == "scratch" and not args.xray_checkpoint:
            model = build_model("xray-mae", model.config)
        cfg = MedicalImagesConfig(path=str(args.npz), augment="finetune")
        train, test = MedicalImages(cfg, "train"), MedicalImages(cfg, "test")
        t0 = time.time()
        _, summary = finetune_xray(model, train, test, 2, TrainConfig(
            epochs=args.xray_ft_epochs, batch_size=64, lr=5e-4, warmup_epochs=2, progress=False, device="cpu",
            weight_decay=0.05))
        res[init] = {"test_auc": summary["test_auc_monai"], "test_acc": summary["test_acc"],
                     "finetune_s": round(time.time() - t0, 1)}
    return {"pretrain_s": round(pre_s, 1), "pretrain_epochs": args.xray_pretrain_epochs,
            "finetune_epochs": args.xray_ft_epochs, **res,
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
    ap.add_argument("--xray-pretrain-epochs", type=int, default=100)
    ap.add_argument("--xray-ft-epochs", type=int, default=40)
    ap.add_argument("--anomaly-epochs", type=int, default=10)
    ap.add_argument("--xray-checkpoint", help="fine-tune from this training checkpoint instead of pretraining")
    ap.add_argument("--xray-inits", nargs="+", default=["pretrained", "scratch"])
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
