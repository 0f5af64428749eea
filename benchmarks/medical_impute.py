"""Missing-modality imputation on real MRI: pretrain BM-MAE on one real case (or the synthetic volumes), impute
FLAIR of the other real case from T1, T1ce and T2, and compare PSNR / SSIM inside the brain mask with two
baselines: the mean intensity (the z-scored mean, 0, everywhere in the brain) and the mean intensity profile of
the training set (the training case's own FLAIR voxel by voxel; both cases are in SRI-24 space).

    OMP_NUM_THREADS=1 uv run python benchmarks/medical_impute.py --data ../shared/data/brain_mri --steps 400
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brain_mri"))
    ap.add_argument("--train-case", default="BraTS-GLI-00001-000")
    ap.add_argument("--test-case", default="TCGA-DU-7294")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--spacing", type=float, default=2.0)
    ap.add_argument("--out", default="runs/bench-medical-impute")
    ap.add_argument("--extra", nargs="*", default=[], help="extra pretrain flags")
    args = ap.parse_args()

    from mae_medical.cli import main as cli
    from mae_medical.commands import impute_case, load_bm_mae
    from mae_medical.metrics import psnr_in_mask, ssim_in_mask
    from mae_medical.viz import save_imputation_figure

    out = Path(args.out)
    t0 = time.time()
    rc = cli(["pretrain", "--data", args.data, "--cases", args.train_case, "--spacing", *[str(args.spacing)] * 3,
              "--crops-per-case", "64", "--epochs", "100000", "--max-steps", str(args.steps), "--batch-size", "8",
              "--lr", "1e-3", "--warmup-epochs", "0.5", "--no-progress", "--out", str(out), "--overwrite",
              *args.extra])
    assert rc == 0
    train_s = time.time() - t0
    model, _ = load_bm_mae(str(out))
    sp = (args.spacing,) * 3
    res = impute_case(model, Path(args.data) / args.test_case, "flair", spacing=sp, compare=True)
    w = res["work"]
    brain = w["brain"]
    # mean-intensity-profile baseline: the training case's FLAIR in the same space (both SRI-24, 1 mm)
    prof = impute_case(model, Path(args.data) / args.train_case, "flair", spacing=sp, compare=True)["work"]["real"]
    if prof.shape != w["real"].shape:
        raise SystemExit(f"training and test cases differ in shape after resampling: {prof.shape} {w['real'].shape}")
    zero = torch.zeros_like(w["real"])
    rows = {
        "bm-mae imputation": w["imputed"],
        "baseline: mean intensity (0 in the brain)": zero,
        "baseline: mean intensity profile (training FLAIR)": torch.where(brain, prof, zero),
    }
    result = {name: {"psnr": psnr_in_mask(v, w["real"], brain), "ssim": ssim_in_mask(v, w["real"], brain)}
              for name, v in rows.items()}
    fig = save_imputation_figure(w["real"], w["imputed"], w["inputs"], "flair", out / "pictures" / "imputation.png",
                                 baseline=rows["baseline: mean intensity profile (training FLAIR)"])
    summary = {"train_case": args.train_case, "test_case": args.test_case, "steps": args.steps,
               "train_time_s": round(train_s, 1), "spacing_mm": args.spacing, "results": result,
               "figure": str(fig)}
    print(json.dumps(summary, indent=1))
    for name, r in result.items():
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} |")


if __name__ == "__main__":
    main()
