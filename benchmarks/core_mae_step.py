"""Image MAE training step: ours vs Hugging Face transformers' ViTMAEForPreTraining, in one process.

Same configuration for both: ViT-S/16 at 224 px, batch 32, mask 0.75, decoder width 256 depth 4, fp32, CPU,
AdamW. Steps are interleaved (ours, HF, ours, HF, ...) so that background load hits both alike; the median step
time of each is reported. Also reports our step time at mask 0.75 divided by the step time at mask 0.

Our step is the trainer's step: AdamW built by ``mae_core.train.optim.build_optimizer`` (fused, no decay on
biases / norms / tokens). HF gets ``torch.optim.AdamW`` as a plain script would.

To put the step rates in proportion, the script counts the floating-point operations of one training step of each
model (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions and attention, forward and backward) and
measures the machine's fp32 matmul peak (best of large square ``torch.mm`` at the same thread count), then prints
the achieved GFLOP/s and their fraction of that peak.

    uv run python benchmarks/core_mae_step.py [--steps 10] [--batch 32] [--compile] [--no-peak]

transformers is a benchmark-only (dev) dependency.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mae_core.models.image_mae import ImageMAE, ImageMAEConfig
from mae_core.train.optim import build_optimizer, param_groups


def build_ours(mask_ratio: float, compile_: bool):
    torch.manual_seed(0)
    cfg = ImageMAEConfig(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256,
                         decoder_depth=4, decoder_num_heads=8, mask_ratio=mask_ratio, norm_pix_loss=True)
    model = ImageMAE(cfg)
    opt = build_optimizer(param_groups(model, weight_decay=0.05), lr=1e-4, betas=(0.9, 0.95))
    fwd = torch.compile(model) if compile_ else model
    gen = torch.Generator().manual_seed(0)

    def step(x):
        out = fwd({"image": x}, generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return step


def build_hf(mask_ratio: float):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.ViTMAEConfig(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12,
                                    num_attention_heads=6, intermediate_size=1536, decoder_hidden_size=256,
                                    decoder_num_hidden_layers=4, decoder_num_attention_heads=8,
                                    decoder_intermediate_size=1024, mask_ratio=mask_ratio, norm_pix_loss=True,
                                    attn_implementation="sdpa")
    model = transformers.ViTMAEForPreTraining(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))

    def step(x):
        out = model(pixel_values=x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return step


def count_flops(step, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(x)
    return float(fc.get_total_flops())


def matmul_peak(sizes=(1024, 2048, 3072), reps: int = 5) -> float:
    """Best fp32 GFLOP/s of ``torch.mm`` on square matrices at the current thread count."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def timed(step, x) -> float:
    t = time.perf_counter()
    step(x)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model (after 2 warm-up steps)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="torch.compile our model")
    ap.add_argument("--no-peak", action="store_true", help="skip the FLOP count and the matmul peak measurement")
    args = ap.parse_args()
    x = torch.randn(args.batch, 3, 224, 224)
    runs = {"ours@0.75": build_ours(0.75, args.compile), "hf@0.75": build_hf(0.75),
            "ours@0.0": build_ours(0.0, args.compile)}
    times = {k: [] for k in runs}
    for k, step in runs.items():  # warm-up
        for _ in range(2):
            step(x)
    flops = {} if args.no_peak else {k: count_flops(step, x) for k, step in runs.items()}
    peak = None if args.no_peak else matmul_peak()
    for _ in range(args.steps):
        for k, step in runs.items():
            times[k].append(timed(step, x))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    if peak:
        print(f"fp32 matmul peak (square torch.mm): {peak:.0f} GFLOP/s")
    for k, v in med.items():
        line = f"{k:>10}: {v:.3f} s/step  {args.batch / v:6.1f} img/s"
        if flops:
            rate = flops[k] / v / 1e9
            line += f"  {flops[k] / 1e9:6.0f} GFLOP/step  {rate:5.0f} GFLOP/s = {rate / peak:4.0%} of peak"
        print(line)
    print(f"speed-up over HF ViTMAE (sdpa) at mask 0.75: {med['hf@0.75'] / med['ours@0.75']:.2f}x (target >= 1.5)")
    print(f"step time mask 0.75 / mask 0: {med['ours@0.75'] / med['ours@0.0']:.3f} (target <= 0.35)")


if __name__ == "__main__":
    main()
