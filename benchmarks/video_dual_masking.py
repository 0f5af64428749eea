"""VideoMAE V2 dual masking vs a decoder on every token, at the same encoder (run by hand; results go to
docs/benchmarks/video.md).

1. Decoder time per step: the encoder runs once per batch (no grad); the decoder + loss forward and backward are
   timed (process CPU time with one thread, robust on a shared machine; wall time too) for ``decoder_mask_ratio`` 0.5 (running cell) and 0 (every token), on the same latent, at two sizes.
2. Linear probe: the same model pretrained twice on the synthetic moving-shapes clips (same seed, same steps), once
   with each decoder, then a linear probe (BatchNorm + linear, mae-core) on frozen features of the test clips.

    OMP_NUM_THREADS=1 uv run python benchmarks/video_dual_masking.py --epochs 12 --out bench-video.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from mae_core.eval import extract_features, knn_classify, linear_probe
from mae_core.train import TrainConfig, Trainer
from mae_video.data.synthetic import MovingShapes, MovingShapesConfig
from mae_video.methods.videomae import VideoMAE, VideoMAEConfig


def decoder_time(cfg: VideoMAEConfig, batch: int, steps: int, warmup: int = 2) -> dict:
    out = {}
    x = torch.randn(batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
    for ratio in (0.5, 0.0):
        torch.manual_seed(0)
        model = VideoMAE(dataclasses.replace(cfg, decoder_mask_ratio=ratio))
        g = torch.Generator().manual_seed(0)
        times, cpu = [], []
        for i in range(warmup + steps):
            with torch.no_grad():
                tokens, pos = model.tokenize({"video": x})
                enc = model.make_mask({"video": x}, tokens, g)
                latent = model.forward_encoder(tokens, pos, enc)
                target = model.prepare_target(model.target({"video": x}))
            latent.requires_grad_(True)
            t0, c0 = time.perf_counter(), time.process_time()
            res = model.decode(latent, enc, target, model.grid, g)
            res.loss.backward()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            model.zero_grad(set_to_none=True)
            if i >= warmup:
                times.append(dt)
                cpu.append(dc)
        times.sort()
        cpu.sort()
        out[f"decoder_ratio_{ratio}"] = {"cpu_median_s": cpu[len(cpu) // 2], "wall_median_s": times[len(times) // 2],
                                         "wall_min_s": times[0], "decoder_tokens": res.metrics["decoder_tokens"]}
    for key in ("cpu_median_s", "wall_median_s", "wall_min_s"):
        out[f"speedup_{key[:-2]}"] = out["decoder_ratio_0.0"][key] / out["decoder_ratio_0.5"][key]
    return out


def probe_run(cfg: VideoMAEConfig, data: MovingShapesConfig, epochs: int, batch: int, lr: float, seed: int) -> dict:
    train, test = MovingShapes(data, "train"), MovingShapes(data, "test")
    torch.manual_seed(seed)
    model = VideoMAE(cfg)
    t0 = time.time()
    summary = Trainer(model, train, TrainConfig(epochs=epochs, batch_size=batch, lr=lr, warmup_epochs=1, seed=seed,
                                                progress=False, device="cpu")).fit()
    train_s = time.time() - t0
    res = {"final_loss": summary["final_loss"], "train_time_s": train_s, "steps": summary["steps"]}
    for pool in ("time", "mean"):
        xtr, ytr = extract_features(model, train, pool=pool)
        xte, yte = extract_features(model, test, pool=pool)
        res[f"linear_{pool}"] = linear_probe(xtr, ytr, xte, yte, num_classes=8, epochs=100, lr=1e-2)["acc"]
        res[f"knn_{pool}"] = knn_classify(xtr, ytr, xte, yte, k=20, num_classes=8)["acc"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--patch-size", type=int, default=4, help="tubelet side for the probe comparison")
    p.add_argument("--timing-steps", type=int, default=7)
    p.add_argument("--skip-probe", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    sizes = {
        "default 8x32x32, tubelet 2x8x8, decoder 96x2": (VideoMAEConfig(), 32),
        "8x32x32, tubelet 2x4x4, decoder 96x2": (VideoMAEConfig(patch_size=4), 32),
        "16x64x64, tubelet 2x8x8 (512 tokens), ViT-S decoder 192x4": (
            VideoMAEConfig(num_frames=16, img_size=64, embed_dim=384, depth=2, num_heads=6, decoder_embed_dim=192,
                           decoder_depth=4, decoder_num_heads=3), 8),
    }
    results["decoder_time"] = {}
    for name, (cfg, batch) in sizes.items():
        results["decoder_time"][name] = r = decoder_time(cfg, batch, args.timing_steps)
        print(f"{name}: decoder fwd+bwd CPU time {r['decoder_ratio_0.0']['cpu_median_s'] * 1e3:.1f} ms (every token) "
              f"vs {r['decoder_ratio_0.5']['cpu_median_s'] * 1e3:.1f} ms (dual, "
              f"{r['decoder_ratio_0.5']['decoder_tokens']:.2f} of the tokens): {r['speedup_cpu_median']:.2f}x "
              f"(wall: {r['speedup_wall_median']:.2f}x)", flush=True)
    if not args.skip_probe:
        data = MovingShapesConfig()
        results["probe"] = {"epochs": args.epochs, "patch_size": args.patch_size}
        for ratio in (0.5, 0.0):
            cfg = VideoMAEConfig(patch_size=args.patch_size, decoder_mask_ratio=ratio)
            r = probe_run(cfg, data, args.epochs, args.batch_size, args.lr, args.seed)
            results["probe"][f"decoder_ratio_{ratio}"] = r
            print(f"decoder_mask_ratio {ratio}: " + json.dumps(r), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
