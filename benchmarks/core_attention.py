"""Does the attention-maps option slow the default SDPA path? Image MAE step time, new code vs the previous
``Attention`` / ``Block`` / ``TransformerEncoder``, in one process.

The previous classes are those of ``mae_core/layers/blocks.py`` and ``mae_core/models/mae.py`` at a git revision
(``--baseline-rev``, by default the commit before attention maps were added), loaded from ``git show`` into their
own modules. Two image MAEs with the same weights are built; in the baseline every ``Attention``, ``Block`` and
``TransformerEncoder`` gets the previous class (``__class__`` swap: same attributes, the previous ``forward``). A
sanity check first asserts that both give the same loss on the same batch and masks. Then each round times
``--steps`` training steps of each model (forward, backward, the trainer's fused AdamW) in pairs (new, old; the
order flips every round); the ratio new / old of each pair follows the machine's load from moment to moment, and
the median over all pairs is the result. Also reported: the cost of asking for the maps, an encoder forward (no
grad, all tokens) with the attention maps of every block vs the same forward without.

    OMP_NUM_THREADS=1 flock /tmp/mae-timing.lock uv run python benchmarks/core_attention.py --preset default
    OMP_NUM_THREADS=1 flock /tmp/mae-timing.lock uv run python benchmarks/core_attention.py --preset vit-s16 \\
        --rounds 5 --steps 3
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mae_core.models.image_mae import ImageMAE, ImageMAEConfig
from mae_core.train.optim import build_optimizer, param_groups

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = "packages/mae-core/src/mae_core/layers/blocks.py"
MAE = "packages/mae-core/src/mae_core/models/mae.py"
BASELINE_REV = "306a9e567b69916d9a504fba5b7b00950f56d95a"  # the commit before attention maps on request
PRESETS = {  # name: (model config, batch)
    "default": (dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4, decoder_embed_dim=96,
                     decoder_depth=1, decoder_num_heads=4), 128),  # the model of `mae-core pretrain`
    "vit-s16": (dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, decoder_embed_dim=256,
                     decoder_depth=4, decoder_num_heads=8), 32),  # benchmarks/core_mae_step.py
}


def load_module(rev: str, path: str, name: str, package: str | None = None):
    """``path`` at git revision ``rev`` as a module named ``name`` (relative imports resolved in ``package``)."""
    src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    mod.__package__ = package
    sys.modules[name] = mod
    exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
    return mod


def baseline_classes(rev: str) -> dict[type, type]:
    """{current class: the class at ``rev``} for Attention, Block and TransformerEncoder."""
    from mae_core.layers.blocks import Attention, Block
    from mae_core.models.mae import TransformerEncoder

    blocks = load_module(rev, BLOCKS, "baseline_blocks")
    mae = load_module(rev, MAE, "mae_core.models.baseline_mae", package="mae_core.models")
    return {Attention: blocks.Attention, Block: blocks.Block, TransformerEncoder: mae.TransformerEncoder}


def build(cfg: dict, swap: dict[type, type] | None = None):
    torch.manual_seed(0)
    model = ImageMAE(ImageMAEConfig(**cfg, norm_pix_loss=True))
    swapped = 0
    for m in model.modules():
        if swap and type(m) in swap:
            m.__class__ = swap[type(m)]
            swapped += 1
    if swap:
        assert swapped == 2 * (cfg["depth"] + cfg["decoder_depth"]) + 1, swapped
    opt = build_optimizer(param_groups(model, weight_decay=0.05), lr=1e-4, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)

    def step(x):
        out = model({"image": x}, generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
    return model, step


def timed(fn, *a) -> float:
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model and round")
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    args = ap.parse_args()
    cfg, batch = PRESETS[args.preset]
    x = torch.randn(batch, 3, cfg["img_size"], cfg["img_size"])
    new_model, new_step = build(cfg)
    old_model, old_step = build(cfg, baseline_classes(args.baseline_rev))
    with torch.no_grad():  # same computation: same loss on the same batch and masks
        a = new_model({"image": x[:4]}, generator=torch.Generator().manual_seed(1)).loss
        b = old_model({"image": x[:4]}, generator=torch.Generator().manual_seed(1)).loss
    assert torch.equal(a, b), (a, b)
    for _ in range(2):  # warm-up
        new_step(x), old_step(x)
    pairs, t_new, t_old = [], [], []
    for r in range(args.rounds):
        rp = []
        for _ in range(args.steps):
            if r % 2 == 0:
                tn = timed(new_step, x)
                to = timed(old_step, x)
            else:
                to = timed(old_step, x)
                tn = timed(new_step, x)
            t_new.append(tn), t_old.append(to), rp.append(tn / to)
        pairs += rp
        print(f"round {r} ({'new first' if r % 2 == 0 else 'old first'}): median pair ratio "
              f"{statistics.median(rp):.4f}  (new {statistics.median(t_new[-args.steps:]):.4f} s, "
              f"old {statistics.median(t_old[-args.steps:]):.4f} s)", flush=True)
    # Python overhead, where it weighs most: a tiny encoder forward (4 blocks, width 32, 17 tokens, batch 2); the
    # best block of calls (as timeit reports) is the least disturbed by other processes
    tiny = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
                decoder_num_heads=2)
    enc_new = build(tiny)[0].encoder.eval()
    enc_old = build(tiny, baseline_classes(args.baseline_rev))[0].encoder.eval()
    xt = torch.randn(2, 16, 32)
    micro = []
    with torch.no_grad():
        for r in range(20):
            for enc in ((enc_new, enc_old) if r % 2 == 0 else (enc_old, enc_new)):
                t = time.perf_counter()
                for _ in range(200):
                    enc(xt)
                micro.append((enc is enc_new, (time.perf_counter() - t) / 200))
    mn = [t for is_new, t in micro[4:] if is_new]  # the first two rounds are warm-up
    mo = [t for is_new, t in micro[4:] if not is_new]
    # the price of asking for the maps: encoder forward on all tokens, every block's maps vs none
    enc = new_model.encoder.eval()
    with torch.no_grad():
        tokens, pos = new_model.tokenize({"image": x})
        tokens = new_model.embed_tokens(tokens)
        every = list(range(enc.depth))
        plain, maps = [], []
        for _ in range(max(3, args.steps // 2)):
            plain.append(timed(enc, tokens, pos))
            maps.append(timed(lambda: enc(tokens, pos, attn_blocks=every)))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"preset {args.preset}, batch {batch}, {args.rounds} rounds x {args.steps} steps, baseline "
          f"{args.baseline_rev[:7]}")
    q = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
    print(f"step time new {statistics.median(t_new):.4f} s, old {statistics.median(t_old):.4f} s (medians; ratio "
          f"{statistics.median(t_new) / statistics.median(t_old):.3f})")
    print(f"ratio new / old over {len(pairs)} pairs: median {statistics.median(pairs):.3f}, quartiles "
          f"{q[0]:.3f}-{q[2]:.3f}, min {min(pairs):.3f}, max {max(pairs):.3f}")
    print(f"tiny encoder forward (Python overhead), best of {len(mn)} x 200 calls: new {min(mn) * 1e6:.1f} us, old "
          f"{min(mo) * 1e6:.1f} us per call (ratio {min(mn) / min(mo):.3f}, difference "
          f"{(min(mn) - min(mo)) * 1e6:+.1f} us)")
    print(f"encoder forward (all tokens, no grad): SDPA {statistics.median(plain):.4f} s, with every block's maps "
          f"{statistics.median(maps):.4f} s ({statistics.median(maps) / statistics.median(plain):.2f}x)")


if __name__ == "__main__":
    main()
