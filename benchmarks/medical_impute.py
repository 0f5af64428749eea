"""Missing-modality imputation on real MRI: pretrain BM-MAE on one real case, impute FLAIR of the other real case
from T1, T1ce and T2, and compare PSNR / SSIM inside the brain mask with the baselines

- mean intensity: the z-scored brain mean (0) everywhere in the brain;
- mean intensity profile: the training set's FLAIR voxel by voxel (one training case, both cases in SRI-24 space);
- (reference, not a baseline of the issue) a voxel-wise linear regression FLAIR ~ T1 + T1ce + T2 fitted on the
  training case: what a per-voxel intensity mapping reaches.

Imputation (``impute_case``): the encoder sees every token of T1, T1ce and T2 (``draws=0``) or the pre-training
budget of visible tokens drawn from them and averaged over 8 draws (``draws=8``); every FLAIR token is masked; the
decoder's FLAIR voxels are in the data's z-scored units (``NormalizeIntensityd(nonzero=True)``), the same units as
the real FLAIR they are compared with; sliding-window inference, brain mask applied.

    flock /tmp/mae-cpu.lock env OMP_NUM_THREADS=2 uv run python benchmarks/medical_impute.py
    uv run python benchmarks/medical_impute.py --eval-only --out runs/bench-medical-impute   # re-evaluate a run
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def case_volumes(case_dir: Path, spacing) -> dict:
    """A case's volumes in the model's working space (RAS, resampled, z-scored inside the brain) and its brain
    mask, exactly as ``impute_case`` prepares them (without running the model)."""
    from monai.transforms import NormalizeIntensity

    from mae_medical.data.brain_folder import DEFAULT_PATTERNS, check_case, geometry_transform, parse_patterns

    mods = ["t1", "t1ce", "t2", "flair"]
    files = check_case(case_dir, mods, parse_patterns(DEFAULT_PATTERNS))
    d = geometry_transform(mods, spacing)({m: str(f) for m, f in files.items()})
    norm = NormalizeIntensity(nonzero=True, channel_wise=True)
    vols = {m: torch.as_tensor(norm(d[m])).float()[0] for m in mods}
    brain = torch.zeros_like(vols["t1"], dtype=torch.bool)
    for m in mods[:3]:
        brain |= torch.as_tensor(d[m])[0] != 0
    return {"inputs": {m: vols[m] for m in mods[:3]}, "real": vols["flair"], "brain": brain}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "brain_mri"))
    ap.add_argument("--train-case", default="BraTS-GLI-00001-000")
    ap.add_argument("--test-case", default="TCGA-DU-7294")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--crop", type=int, default=8, help="side of the training crops and inference windows (voxels)")
    ap.add_argument("--patch", type=int, default=2, help="3-D patch side (voxels)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-steps", type=int, default=150)
    ap.add_argument("--flip-prob", type=float, default=0.5, help="left-right flips of the training crops")
    ap.add_argument("--foreground-crops", type=float, default=0.9, help="fraction of crops centred on the brain")
    ap.add_argument("--draws", type=int, nargs="+", default=[0, 8], help="imputation modes evaluated (impute_case)")
    ap.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap of the imputation")
    ap.add_argument("--spacing", type=float, default=2.0)
    ap.add_argument("--out", default="runs/bench-medical-impute")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the run in --out without training")
    ap.add_argument("--resume", action="store_true", help="continue the pretraining in --out from its last checkpoint")
    ap.add_argument("--checkpoint", help="with --eval-only: evaluate this training checkpoint of the run")
    ap.add_argument("--extra", action="append", default=[],
                    help="an extra pretrain flag, repeatable (e.g. --extra=--embed-dim=192)")
    args = ap.parse_args()

    from mae_medical.cli import main as cli
    from mae_medical.commands import impute_case, load_method_run
    from mae_medical.metrics import psnr_in_mask, ssim_in_mask
    from mae_medical.viz import save_imputation_figure

    out = Path(args.out)
    crops = 100 * args.batch_size  # an "epoch" of 100 steps (one checkpoint per epoch)
    train_s = None
    if not args.eval_only:
        t0 = time.time()
        rc = cli(["pretrain", "--data", args.data, "--cases", args.train_case,
                  "--spacing", *[str(args.spacing)] * 3, "--crops-per-case", str(crops), "--flip-prob",
                  str(args.flip_prob), "--foreground-crops", str(args.foreground_crops), "--image-size", str(args.crop),
                  "--patch-size", str(args.patch), "--epochs", "100000", "--max-steps", str(args.steps),
                  "--batch-size", str(args.batch_size), "--lr", str(args.lr),
                  "--warmup-epochs", str(args.warmup_steps / 100),
                  "--no-progress", "--out", str(out), "--resume" if args.resume else "--overwrite", *args.extra])
        assert rc == 0
        train_s = time.time() - t0
    if args.checkpoint:  # a training checkpoint of an unfinished run
        import yaml

        from mae_core.checkpoint import load_checkpoint
        from mae_core.config import from_dict
        from mae_core.registry import build_model
        from mae_medical.methods.bm_mae import BMMAEConfig

        cfg = yaml.safe_load((out / "config.yaml").read_text())
        model = build_model("bm-mae", from_dict(BMMAEConfig, cfg["model"]))
        load_checkpoint(args.checkpoint, model)
    else:
        run = load_method_run(str(out), "bm-mae")
        model, cfg = run.model, run.config.to_dict()
    sp = (args.spacing,) * 3
    t0 = time.time()
    imputed = {d: impute_case(model, Path(args.data) / args.test_case, "flair", spacing=sp, compare=True, draws=d,
                               overlap=args.overlap) for d in args.draws}
    infer_s = time.time() - t0
    w = imputed[args.draws[0]]["work"]
    brain, real = w["brain"], w["real"]
    # mean-intensity-profile baseline: the training case's FLAIR in the same space (both SRI-24, 1 mm)
    train_work = case_volumes(Path(args.data) / args.train_case, sp)
    prof = train_work["real"]
    if prof.shape != real.shape:
        raise SystemExit(f"training and test cases differ in shape after resampling: {prof.shape} {real.shape}")
    zero = torch.zeros_like(real)
    # reference: per-voxel linear regression FLAIR ~ (T1, T1ce, T2) fitted on the training case
    tb = train_work["brain"]
    xa = torch.stack([train_work["inputs"][m][tb] for m in ("t1", "t1ce", "t2")] + [torch.ones(int(tb.sum()))], 1)
    coef = torch.linalg.lstsq(xa.double(), prof[tb].double()[:, None]).solution.float()
    xb = torch.stack([w["inputs"][m] for m in ("t1", "t1ce", "t2")] + [torch.ones_like(real)], -1)
    linreg = torch.where(brain, (xb @ coef)[..., 0], zero)
    names = {0: "bm-mae, all T1/T1ce/T2 tokens visible (draws=0)"}
    rows = {names.get(d, f"bm-mae, pre-training budget, {d} draws averaged (draws={d})"): imputed[d]["work"]["imputed"]
            for d in args.draws}
    rows.update({
        "baseline: mean intensity (0 in the brain)": zero,
        "baseline: mean intensity profile (training FLAIR)": torch.where(brain, prof, zero),
        "reference: voxel-wise linear regression on the training case": linreg,
    })
    result = {name: {"psnr": psnr_in_mask(v, real, brain), "ssim": ssim_in_mask(v, real, brain),
                     "std_in_brain": float(v[brain].std())} for name, v in rows.items()}
    fig = save_imputation_figure(real, w["imputed"], w["inputs"], "flair", out / "pictures" / "imputation.png",
                                 baseline=rows["baseline: mean intensity profile (training FLAIR)"])
    summary = {"train_case": args.train_case, "test_case": args.test_case, "steps": args.steps,
               "train_time_s": None if train_s is None else round(train_s, 1), "impute_time_s": round(infer_s, 1),
               "spacing_mm": args.spacing, "model": cfg.get("model"), "threads": torch.get_num_threads(),
               "real_std_in_brain": float(real[brain].std()), "results": result, "figure": str(fig)}
    print(json.dumps(summary, indent=1))
    for name, r in result.items():
        print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} |")


if __name__ == "__main__":
    main()
