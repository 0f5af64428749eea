"""Peak memory of one image-MAE training step with and without activation checkpointing of the encoder.

Each setting runs in a fresh process; the peak resident set size (ru_maxrss) of the step minus the baseline after
building the model is reported, so the number is the activation + gradient memory of the step.

    uv run python benchmarks/core_memory.py [--batch 32] [--mask-ratio 0.0]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CHILD = """
import json, resource, sys, torch
from mae_core.models.image_mae import ImageMAE, ImageMAEConfig
batch, ratio, ckpt = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1"
torch.manual_seed(0)
m = ImageMAE(ImageMAEConfig(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256,
                            decoder_depth=4, decoder_num_heads=8, mask_ratio=ratio))
m.set_grad_checkpointing(ckpt)
m.train()
x = torch.randn(batch, 3, 224, 224)
for p in m.parameters():
    p.grad = torch.zeros_like(p)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = m({"image": x})
out.loss.backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024, "step_mib": (peak - base) / 1024}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--mask-ratio", type=float, default=0.0)
    args = ap.parse_args()
    for ckpt in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.batch), str(args.mask_ratio), ckpt],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"grad checkpointing {'on ' if ckpt == '1' else 'off'}: step memory {r['step_mib']:.0f} MiB "
              f"(peak RSS {r['peak_mib']:.0f} MiB), ViT-S/16 224 px, batch {args.batch}, mask {args.mask_ratio}")


if __name__ == "__main__":
    main()
