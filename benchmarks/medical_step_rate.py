"""Training-step rate: our 3-D multimodal MAE (BM-MAE) against MONAI's ``MaskedAutoEncoderViT``, one process.

Same work on both sides: 4 modalities of S^3 voxels, patch p, so 4 L tokens (L = (S/p)^3); the encoder sees 25 %
of them (L tokens) plus a cls token, the decoder all 4 L; same widths, depths, heads, MLP ratio; MSE on the masked
patches; AdamW. MONAI's model gets the four modalities stacked along the depth axis as one 1-channel volume
(4S x S x S, also 4 L tokens) with masking ratio 0.75, which is the same token count and FLOPs. Steps are
interleaved (A, B, A, B, ...) so machine-load changes hit both equally.

The default configuration is the method's own (BM-MAE paper): 128^3 crops, patch 16 (512 tokens per modality,
2048 in all), ViT-B encoder 12 x 768 (12 heads), decoder 4 x 384 (12 heads), MLP ratio 4:

    flock /tmp/mae-cpu.lock uv run python benchmarks/medical_step_rate.py

the CPU default of ``mae-medical pretrain`` (32^3, patch 8) is ``--size 32 --patch 8 --embed 192 --depth 4
--heads 4 --dec-embed 96 --dec-depth 2 --dec-heads 4 --batch 8 --steps 20``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--embed", type=int, default=768)  # MONAI's 3-D sin-cos: divisible by 6
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dec-embed", type=int, default=384)
    ap.add_argument("--dec-depth", type=int, default=4)
    ap.add_argument("--dec-heads", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from monai.networks.nets import MaskedAutoEncoderViT

    from mae_core.layers import patchify
    from mae_core.losses import masked_mse
    from mae_medical.methods.bm_mae import BMMAE, BMMAEConfig

    dev = torch.device(args.device)
    torch.manual_seed(0)
    s, p = args.size, args.patch
    mods = ["t1", "t1ce", "t2", "flair"]
    ours = BMMAE(BMMAEConfig(img_size=s, patch_size=p, embed_dim=args.embed, depth=args.depth,
                             num_heads=args.heads, decoder_embed_dim=args.dec_embed, decoder_depth=args.dec_depth,
                             decoder_num_heads=args.dec_heads)).to(dev)
    theirs = MaskedAutoEncoderViT(in_channels=1, img_size=(4 * s, s, s), patch_size=p, hidden_size=args.embed,
                                  mlp_dim=4 * args.embed, num_layers=args.depth, num_heads=args.heads,
                                  masking_ratio=0.75, decoder_hidden_size=args.dec_embed,
                                  decoder_mlp_dim=4 * args.dec_embed, decoder_num_layers=args.dec_depth,
                                  decoder_num_heads=args.dec_heads, qkv_bias=True).to(dev)
    batch = {m: torch.randn(args.batch, 1, s, s, s, device=dev) for m in mods}
    stacked = torch.cat([batch[m] for m in mods], dim=2)  # (B, 1, 4S, S, S)
    target = patchify(stacked, p)
    opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_b = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    g = torch.Generator(device="cpu").manual_seed(0)

    def step_ours():
        out = ours(batch, generator=g)
        opt_a.zero_grad(set_to_none=True)
        out.loss.backward()
        opt_a.step()

    def step_monai():
        pred, mask = theirs(stacked)
        loss = masked_mse(pred, target, mask.float())
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step_ours(), step_monai()
    ta = tb = 0.0
    for _ in range(args.steps):
        sync(); t = time.perf_counter(); step_ours(); sync(); ta += time.perf_counter() - t
        sync(); t = time.perf_counter(); step_monai(); sync(); tb += time.perf_counter() - t
    res = {"ours_steps_per_s": args.steps / ta, "monai_steps_per_s": args.steps / tb, "speedup": tb / ta,
           "tokens_per_modality": (s // p) ** 3, "encoder_tokens": 1 + (s // p) ** 3, "decoder_tokens": 1 + 4 * (s // p) ** 3,
           "params_ours": sum(x.numel() for x in ours.parameters()),
           "params_monai": sum(x.numel() for x in theirs.parameters()),
           "device": str(dev), "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
           "config": vars(args)}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
