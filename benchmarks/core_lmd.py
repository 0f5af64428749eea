"""LMD in miniature on the embedded shapes: pixel MAE vs latent MAE at a fixed ratio vs latent MAE with LMD's cosine
mask-ratio schedule, each at ``--steps`` optimizer steps and at a third of them. Each run is pretrained, probed
(linear probe on the frozen encoder's features of the test split) and its reconstructions scored: PSNR in pixels
(display range [0, 1]) of 512 test images at mask 0.75, over the masked area (pixel MAE: the masked patches; LMD: the
pixels under the masked latent patches, after the frozen decoder) and over the whole image (visible parts pasted
back, as the reconstruction picture). Training compute is counted in FLOPs (one forward + backward of a batch,
``torch.utils.flop_counter``; LMD's includes the frozen encoder's forward). One JSON line per run is appended to
``--out``/results.jsonl.

    uv run python benchmarks/core_lmd.py --out runs/lmd --seed 0 --steps 300 --runs pixel latent-fixed latent-schedule
    uv run python benchmarks/core_lmd.py --out runs/lmd --table      # the table from results.jsonl

The autoencoder is the default ``latent-ae`` (mae-core trains it once, cached under runs/teachers) unless
``--autoencoder DIR``; its own reconstruction PSNR (the ceiling of every LMD number) is recorded with each LMD run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench_common import append_result, arm_parser, mean_sd, read_results
from bench_common import step_flops as batch_step_flops

RUNS = {
    "pixel": ("image-mae", {}),
    "latent-fixed": ("lmd", {"mask_schedule": "constant"}),
    "latent-schedule": ("lmd", {"mask_schedule": "cosine"}),
}
NUM_EVAL = 512
LMD_ONLY = {"autoencoder", "latent_downsample", "latent_channels", "ae_width", "ae_epochs"}


def psnr(a, b, where=None) -> float:
    """Mean over images of 10 log10(1 / MSE), images in [0, 1]; ``where`` (same shape, 1 = counted) restricts it."""
    import torch

    w = torch.ones_like(a) if where is None else where
    mse = (((a - b) ** 2) * w).sum((1, 2, 3)) / w.sum((1, 2, 3))
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def scores(run, seed: int = 0) -> dict:
    """Reconstruction PSNR of the first NUM_EVAL test images at mask 0.75 (see the module docstring)."""
    import torch

    from mae_core.layers import unpatchify
    from mae_core.viz import image_reconstruction

    ds = run.dataset("test")
    images = torch.stack([ds[i]["image"] for i in range(min(NUM_EVAL, len(ds)))])
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (ds.mean, ds.std))
    show = lambda x: (x.float() * std + mean).clamp(0, 1)  # noqa: E731
    model = run.model.cpu().eval()
    model.mask_ratio = 0.75
    out = {}
    with torch.no_grad():
        if hasattr(model, "reconstruct_images"):  # LMD
            r = model.reconstruct_images(images, torch.Generator().manual_seed(seed))
            recon, pixel_mask = r["recon"], r["mask"]
            out["psnr_ae"] = psnr(show(r["ceiling"]), show(images))
        else:
            p = model.config.patch_size
            _, _, _, recon, _, mask, _ = image_reconstruction(model, images, p, seed)
            c, (h, w) = images.shape[1], images.shape[-2:]
            pixel_mask = unpatchify(mask[..., None].float().expand(-1, -1, p * p * c), p, (h // p, w // p), c)
    out["psnr_masked"] = psnr(show(recon), show(images), pixel_mask)
    out["psnr_image"] = psnr(show(recon), show(images))
    return out


def step_flops(run, batch_size: int) -> float:
    """FLOPs of one training step (forward + backward) on a batch of ``batch_size`` training images at mask 0.75."""
    from mae_core.data.utils import collate_dicts

    ds = run.dataset("train")
    run.model.mask_ratio = 0.75
    return batch_step_flops(run.model, collate_dicts([ds[i] for i in range(batch_size)]))


def table(out: Path) -> str:
    rows: dict[tuple, list[dict]] = {}
    for rs in read_results(out).values():
        for r in rs:
            rows.setdefault((r["run"], r["steps"]), []).append(r)
    cell = mean_sd

    text = ["| run | steps | seeds | linear % | PSNR masked dB | PSNR image dB | autoencoder PSNR dB | GFLOP / step | "
            "training TFLOP |", "|---|---|---|---|---|---|---|---|---|"]
    for (name, steps), rs in sorted(rows.items(), key=lambda kv: (list(RUNS).index(kv[0][0]), kv[0][1])):
        text.append(f"| {name} | {steps} | {','.join(str(r['seed']) for r in rs)} | {cell(rs, 'linear', 100)} | "
                    f"{cell(rs, 'psnr_masked', digits=2)} | {cell(rs, 'psnr_image', digits=2)} | "
                    f"{cell(rs, 'psnr_ae', digits=2)} | {rs[0]['step_gflop']:.1f} | "
                    f"{rs[0]['step_gflop'] * steps / 1e3:.2f} |")
    return "\n".join(text)


def main() -> None:
    ap = arm_parser(__doc__, sorted(RUNS), steps_help="optimizer steps of the full runs (a third for the short)",
                    batch_size=128)
    ap.add_argument("--autoencoder", default="", help="latent-ae run directory (default: the cached default one)")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(out))
        return
    import mae_core

    out.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        method, opts = RUNS[name]
        for steps in (args.steps, args.steps // 3):
            o = {**opts, **json.loads(args.set)}
            probe_opts = {k: o.pop(k) for k in list(o) if k.startswith("probe_")}
            if method == "lmd":
                o.setdefault("autoencoder", args.autoencoder)
            else:  # the latent-grid options are LMD's only
                o = {k: v for k, v in o.items() if k not in LMD_ONLY}
            n_train = o.get("num_train", 4096)
            per_epoch = n_train // args.batch_size
            epochs = math.ceil(steps / per_epoch)
            run_dir = out / f"{name}-{steps}-s{args.seed}"
            run = mae_core.pretrain(method, out=str(run_dir), overwrite=True, progress=False, seed=args.seed,
                                    **{"epochs": epochs, "max_steps": steps, "batch_size": args.batch_size,
                                       "warmup_epochs": 0.1 * steps / per_epoch, "base_lr": 1.5e-3, **o})
            summary = json.loads((run_dir / "summary.json").read_text())
            res = mae_core.probe(run, kind="linear", **probe_opts)
            rec = {"run": name, "method": method, "seed": args.seed, "options": o, "steps": summary["steps"],
                   "final_loss": summary["final_loss"], "linear": res["linear"]["acc"],
                   "step_gflop": step_flops(run, args.batch_size) / 1e9, **scores(run, seed=args.seed),
                   "autoencoder": getattr(run.model.config, "autoencoder", None)}
            append_result(out, rec)


if __name__ == "__main__":
    main()
