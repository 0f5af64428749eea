"""GPU benchmark suite: every row is ours vs a peer in one process, steps interleaved (ours, peer, ours, ...).

Rows (``--rows`` picks some, comma-separated):

- ``vit_mae``: ViT-B/16 MAE pretraining step, 224 px, batch 256, mask 0.75, bf16 autocast, fused AdamW on both
  sides; ours (``mae_core.create_model("image-mae")``) vs Hugging Face ``ViTMAEForPreTraining`` (sdpa), eager and
  ``torch.compile``; ours also with channels-last weights / input. img/s, and MFU = FLOPs of one step
  (``torch.utils.flop_counter.FlopCounterMode``, eager) / step time / the bf16 matmul peak measured in this run.
  Also which SDPA kernel each side runs (profiler op names; ``torch.nn.attention.sdpa_kernel`` says whether the
  flash kernel accepts the encoder's shapes) and how many dtype casts a step makes.
- ``mask_ratio``: our step time at mask 0.75 / at mask 0, against the FLOP ratio of the two steps.
- ``bm_mae``: BM-MAE (``mae_medical``) at 128^3, 4 modalities, patch 16, ViT-B encoder, 4 x 384 decoder, bf16,
  vs MONAI ``MaskedAutoEncoderViT`` on the four modalities stacked along depth (the same token count), same loss
  (``mae_core.losses.masked_mse`` on the masked patches); skipped with its reason when MONAI is not importable.
- ``videomae``: VideoMAE V2 ViT-B, 16 x 224^2, tubelet 2 x 16 x 16 (1568 tokens), tube mask 0.9, decoder 4 x 384:
  running-cell dual masking (0.5) vs decoding every token; the decoder's forward + backward alone (encoder run
  without gradients first) and the whole step.
- ``grouping``: Point-MAE grouping (``mae_3d.ops.group_points``: FPS + kNN), 32 x 1024 -> 64 x 32 and
  128 x 8192 -> 512 x 32, against the Open3D per-cloud CPU loop figure of docs/benchmarks/3d.md (quoted, not run).
- ``graphmae``: GraphMAE with the ``cora`` preset, 1500 full-graph epochs, wall time (Cora from
  ``--planetoid-folder``, else the embedded SBM graph, said in the output).
- ``loader``: the core image-folder loader (``create_dataset("image-folder")``, JPEGs written to a temporary
  folder) with worker processes, img/s, divided by what the ViT-B step consumes (goal: >= 3).

A missing library (transformers, MONAI, torch_geometric, ...) skips its row with the reason; a time budget
(``--budget-s``) skips the rows that would start after it. ``--device cpu --tiny`` runs every row at a toy size
(``torch.compile`` with the ``eager`` backend) in well under a minute; tests/test_gpu_suite.py runs it.

On the GPU machine (no install, no network; MONAI carried as a folder made by benchmarks/pack_gpu_carry.sh):

    PYTHONPATH=$(ls -d packages/*/src | tr '\\n' :).carry/site PYTHONUNBUFFERED=1 \\
        python3 benchmarks/gpu_suite.py --out $OUT/gpu_suite.json 2>&1 | tee $OUT/gpu_suite.log

with ``.carry`` in the run's ``carry`` list (docs/benchmarks/gpu.md).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import torch

# the Open3D per-cloud loop (FPS + KD-tree kNN), docs/benchmarks/3d.md section 1, set C, 1 thread
OPEN3D_CPU = {(32, 1024, 64, 32): {"ms": 33.0, "machine": "2-core AMD EPYC VM (1 thread), Open3D 0.20",
                                   "source": "docs/benchmarks/3d.md, section 1 (set C)"}}
ROWS = ["vit_mae", "mask_ratio", "bm_mae", "videomae", "grouping", "graphmae", "loader"]


class Skip(Exception):
    """A row that cannot run here; the message is the reason."""


def need(module: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Skip(f"{module} is not importable ({e})") from None


class Ctx:
    def __init__(self, args):
        self.args, self.tiny = args, args.tiny
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.amp = torch.bfloat16 if args.amp == "bf16" else None
        self.compile_backend = args.compile_backend or ("eager" if self.tiny else "inductor")
        self.shared: dict = {}

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def autocast(self):
        return torch.autocast(self.dev.type, dtype=self.amp, enabled=self.amp is not None)

    def gen(self, seed=0):
        return torch.Generator(device=self.dev).manual_seed(seed)

    def free(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def train_step(ctx: Ctx, loss_fn, opt, amp: bool = True):
    def step():
        with ctx.autocast() if amp else contextlib.nullcontext():
            loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def interleave(ctx: Ctx, fns: dict, steps: int, warmup: int) -> dict:
    """Median seconds per call of each function, the calls interleaved, synchronised around each."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, f in fns.items():
            ctx.sync()
            t = time.perf_counter()
            f()
            ctx.sync()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def matmul_peak(ctx: Ctx) -> float:
    """Best FLOP/s of square ``torch.mm`` in the autocast dtype (bf16 on the GPU)."""
    dtype = ctx.amp or torch.float32
    best = 0.0
    for n in ((128, 256) if ctx.tiny else (4096, 8192)):
        a, b = (torch.randn(n, n, device=ctx.dev, dtype=dtype) for _ in range(2))
        reps = 3 if ctx.tiny else 20
        torch.mm(a, b)
        for _ in range(3):
            ctx.sync()
            t = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            ctx.sync()
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


SDPA_OPS = {"_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)", "_flash_attention": "flash",
            "_efficient_attention": "memory-efficient", "_cudnn_attention": "cuDNN",
            "_scaled_dot_product_attention_math": "math", "_fused_attention_overrideable": "fused (other)"}


def profile_ops(fn) -> dict:
    """SDPA kernels (by aten op name) and dtype-cast counts of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        fn()
    kernels, casts = {}, 0
    for ev in prof.key_averages():
        for key, name in SDPA_OPS.items():
            if key in ev.key and ev.key.startswith("aten::") and "backward" not in ev.key:
                kernels[name] = kernels.get(name, 0) + ev.count
                break  # the first key that matches names it ("flash (CPU)" before "flash")
        if ev.key == "aten::_to_copy":
            casts += ev.count
    return {"sdpa_kernels": kernels or {"none found": 0}, "dtype_casts_per_step": casts}


def flash_accepts(ctx: Ctx, b: int, heads: int, length: int, dim: int) -> str:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    dtype = ctx.amp or torch.float32
    q = torch.randn(b, heads, length, dim, device=ctx.dev, dtype=dtype)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return "yes"
    except RuntimeError as e:
        return f"no ({str(e).splitlines()[0][:120]})"


# ---- rows ------------------------------------------------------------------------------------------------------
def vit_configs(ctx: Ctx, mask_ratio: float):
    if ctx.tiny:
        d = dict(img=32, patch=8, dim=32, depth=1, heads=2, ddim=32, ddepth=1, dheads=2, batch=4)
    else:
        d = dict(img=224, patch=16, dim=768, depth=12, heads=12, ddim=512, ddepth=8, dheads=16, batch=256)
    ours = dict(img_size=d["img"], patch_size=d["patch"], embed_dim=d["dim"], depth=d["depth"], num_heads=d["heads"],
                decoder_embed_dim=d["ddim"], decoder_depth=d["ddepth"], decoder_num_heads=d["dheads"],
                mask_ratio=mask_ratio, norm_pix_loss=True)
    return d, ours


def build_ours_vit(ctx: Ctx, mask_ratio: float):
    import mae_core
    import mae_core.image  # noqa: F401  (registers image-mae: from PYTHONPATH there are no entry points)
    from mae_core.train.optim import build_optimizer, param_groups
    d, cfg = vit_configs(ctx, mask_ratio)
    torch.manual_seed(0)
    model = mae_core.create_model("image-mae", adapt=False, **cfg).to(ctx.dev).train()
    opt = build_optimizer(param_groups(model, weight_decay=0.05), lr=1e-4, betas=(0.9, 0.95))  # fused AdamW
    return d, model, opt


def row_vit_mae(ctx: Ctx) -> dict:
    transformers = need("transformers")
    d, ours, opt = build_ours_vit(ctx, 0.75)
    torch.manual_seed(0)
    hcfg = transformers.ViTMAEConfig(
        image_size=d["img"], patch_size=d["patch"], hidden_size=d["dim"], num_hidden_layers=d["depth"],
        num_attention_heads=d["heads"], intermediate_size=4 * d["dim"], decoder_hidden_size=d["ddim"],
        decoder_num_hidden_layers=d["ddepth"], decoder_num_attention_heads=d["dheads"],
        decoder_intermediate_size=4 * d["ddim"], mask_ratio=0.75, norm_pix_loss=True, attn_implementation="sdpa")
    hf = transformers.ViTMAEForPreTraining(hcfg).to(ctx.dev).train()
    hopt = torch.optim.AdamW(hf.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    x = torch.randn(d["batch"], 3, d["img"], d["img"], device=ctx.dev)
    g = ctx.gen()
    import copy
    ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    from mae_core.train.optim import build_optimizer, param_groups
    opt_cl = build_optimizer(param_groups(ours_cl, weight_decay=0.05), lr=1e-4, betas=(0.9, 0.95))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    steps = {"ours": train_step(ctx, lambda: ours({"image": x}, generator=g).loss, opt),
             "hf": train_step(ctx, lambda: hf(pixel_values=x).loss, hopt),
             "ours_channels_last": train_step(ctx, lambda: ours_cl({"image": x_cl}, generator=g).loss, opt_cl)}
    phases, t0 = {}, time.perf_counter()
    flops = {k: count_flops(f) for k, f in steps.items() if k != "ours_channels_last"}
    peak = ctx.shared.setdefault("peak", matmul_peak(ctx))
    prof = {"ours": profile_ops(steps["ours"]), "hf": profile_ops(steps["hf"])}
    phases["flops_peak_profile_s"], t0 = time.perf_counter() - t0, time.perf_counter()
    n_steps, warm = (2, 1) if ctx.tiny else (20, 3)
    t = interleave(ctx, steps, n_steps, warm)
    phases["eager_s"] = time.perf_counter() - t0
    if ctx.cuda:
        phases["max_memory_gib"] = torch.cuda.max_memory_allocated(ctx.dev) / 2 ** 30
    res = {"batch": d["batch"], "matmul_peak_tflops": peak / 1e12, "flops_per_step": flops, "profile": prof,
           "phases": phases,
           "flash_accepts_encoder_shape": flash_accepts(ctx, d["batch"], d["heads"],
                                                        1 + (d["img"] // d["patch"]) ** 2 // 4,
                                                        d["dim"] // d["heads"])}
    if not ctx.args.no_compile:
        cours = torch.compile(ours, backend=ctx.compile_backend)
        chf = torch.compile(hf, backend=ctx.compile_backend)
        csteps = {"ours_compiled": train_step(ctx, lambda: cours({"image": x}, generator=g).loss, opt),
                  "hf_compiled": train_step(ctx, lambda: chf(pixel_values=x).loss, hopt)}
        t0 = time.perf_counter()
        for f in csteps.values():  # compilation
            f()
        ctx.sync()
        res["compile_s"] = time.perf_counter() - t0
        t.update(interleave(ctx, csteps, n_steps, 2))
        res["compile_backend"] = ctx.compile_backend
    for k, s in t.items():
        f = flops["hf" if k.startswith("hf") else "ours"]
        res[k] = {"step_s": s, "img_per_s": d["batch"] / s, "mfu": f / s / peak}
    res["speedup_eager"] = t["hf"] / t["ours"]
    if "ours_compiled" in t:
        res["speedup_compiled"] = t["hf_compiled"] / t["ours_compiled"]
    best = min((k for k in t if k.startswith("ours")), key=t.get)
    best_hf = min((k for k in t if k.startswith("hf")), key=t.get)
    res.update(best_ours=best, speedup_best=t[best_hf] / t[best], mfu_best=res[best]["mfu"])
    ctx.shared["consumption_img_per_s"] = res[best]["img_per_s"]
    res["goal"] = "ours >= 1.3x HF sdpa (best of each) at MFU >= 45 %"
    res["goal_met"] = res["speedup_best"] >= 1.3 and res["mfu_best"] >= 0.45
    res["summary"] = (f"ours {res[best]['img_per_s']:.0f} img/s ({best}, MFU {res['mfu_best']:.0%}) vs HF "
                      f"{d['batch'] / t[best_hf]:.0f} ({best_hf}): {res['speedup_best']:.2f}x")
    return res


def row_mask_ratio(ctx: Ctx) -> dict:
    runs = {r: build_ours_vit(ctx, r) for r in (0.75, 0.0)}
    d = runs[0.75][0]
    x = torch.randn(d["batch"], 3, d["img"], d["img"], device=ctx.dev)
    g = ctx.gen()
    steps = {r: train_step(ctx, (lambda m: lambda: m({"image": x}, generator=g).loss)(m), o)
             for r, (_, m, o) in runs.items()}
    flops = {r: count_flops(f) for r, f in steps.items()}
    t = interleave(ctx, {str(r): f for r, f in steps.items()}, *((2, 1) if ctx.tiny else (15, 3)))
    tr, fr = t["0.75"] / t["0.0"], flops[0.75] / flops[0.0]
    return {"step_s_mask_0.75": t["0.75"], "step_s_mask_0": t["0.0"], "time_ratio": tr, "flop_ratio": fr,
            "time_over_flop_ratio": tr / fr, "goal": "time ratio within 5 % of the FLOP ratio",
            "goal_met": abs(tr / fr - 1) <= 0.05, "summary": f"time ratio {tr:.3f} vs FLOP ratio {fr:.3f}"}


def row_bm_mae(ctx: Ctx) -> dict:
    nets = need("monai.networks.nets")
    need("mae_medical")  # registers bm-mae
    import mae_core
    from mae_core.layers import patchify
    from mae_core.losses import masked_mse
    s, p, e, dep, h, de, dd, dh, b = ((16, 8, 48, 1, 2, 24, 1, 2, 1) if ctx.tiny else
                                      (128, 16, 768, 12, 12, 384, 4, 12, 4))
    torch.manual_seed(0)
    ours = mae_core.create_model("bm-mae", adapt=False, img_size=s, patch_size=p, embed_dim=e, depth=dep,
                                 num_heads=h, decoder_embed_dim=de, decoder_depth=dd,
                                 decoder_num_heads=dh).to(ctx.dev).train()
    mods = list(ours.config.modality_names)
    theirs = nets.MaskedAutoEncoderViT(in_channels=1, img_size=(len(mods) * s, s, s), patch_size=p, hidden_size=e,
                                       mlp_dim=4 * e, num_layers=dep, num_heads=h, masking_ratio=0.75,
                                       decoder_hidden_size=de, decoder_mlp_dim=4 * de, decoder_num_layers=dd,
                                       decoder_num_heads=dh, qkv_bias=True).to(ctx.dev).train()
    batch = {m: torch.randn(b, 1, s, s, s, device=ctx.dev) for m in mods}
    stacked = torch.cat([batch[m] for m in mods], dim=2)
    target = patchify(stacked, p)
    g = ctx.gen()

    inp = {"x": stacked}

    def monai_loss():
        pred, mask = theirs(inp["x"])
        return masked_mse(pred.float(), target, mask.float())
    precision = "autocast" if ctx.amp else "fp32"
    try:
        train_step(ctx, monai_loss, torch.optim.AdamW(theirs.parameters(), lr=1e-4))()
    except RuntimeError as e:  # MONAI's index_put of bf16 tokens into an fp32 buffer fails under autocast
        if ctx.amp is None:
            raise
        theirs.to(ctx.amp)
        inp["x"] = stacked.to(ctx.amp)
        precision = f"bf16 weights and input, no autocast (under autocast: {str(e).splitlines()[0][:90]})"
    steps = {"ours": train_step(ctx, lambda: ours(batch, generator=g).loss,
                                torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)),
             "monai": train_step(ctx, monai_loss, torch.optim.AdamW(theirs.parameters(), lr=1e-4, fused=True))}
    t = interleave(ctx, steps, *((2, 1) if ctx.tiny else (10, 2)))
    sp = t["monai"] / t["ours"]
    return {"batch": b, "tokens": len(mods) * (s // p) ** 3, "ours_step_s": t["ours"], "monai_step_s": t["monai"],
            "ours_precision": "autocast" if ctx.amp else "fp32", "monai_precision": precision,
            "speedup": sp, "goal": "ours >= 2x MONAI", "goal_met": sp >= 2,
            "summary": f"{t['ours'] * 1e3:.1f} ms vs MONAI {t['monai'] * 1e3:.1f} ms: {sp:.2f}x"}


def row_videomae(ctx: Ctx) -> dict:
    need("mae_video")
    import mae_core
    cfg = (dict(num_frames=4, img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16,
                decoder_depth=1, decoder_num_heads=2) if ctx.tiny else
           dict(num_frames=16, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6))
    b = 2 if ctx.tiny else 32
    models, fns_dec, fns_step = {}, {}, {}
    x = torch.randn(b, 3, cfg["num_frames"], cfg["img_size"], cfg["img_size"], device=ctx.dev)
    g = ctx.gen()
    for name, r in (("dual", 0.5), ("every_token", 0.0)):
        torch.manual_seed(0)
        m = mae_core.create_model("videomae", adapt=False, tubelet_size=2, mask_ratio=0.9, decoder_mask_ratio=r,
                                  **cfg).to(ctx.dev).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
        models[name] = m
        fns_step[name] = train_step(ctx, (lambda m: lambda: m({"video": x}, generator=g).loss)(m), opt)

        def dec(m=m):
            with torch.no_grad(), ctx.autocast():
                tokens, pos = m.tokenize({"video": x})
                enc = m.make_mask({"video": x}, tokens, g)
                latent = m.forward_encoder(tokens, pos, enc)
                target = m.prepare_target(m.target({"video": x}))
            latent.requires_grad_(True)
            with ctx.autocast():
                loss = m.decode(latent, enc, target, m.video_grid(x), g).loss
            loss.backward()
            m.zero_grad(set_to_none=True)
        fns_dec[name] = dec
    steps = (2, 1) if ctx.tiny else (10, 2)
    td, ts = interleave(ctx, fns_dec, *steps), interleave(ctx, fns_step, *steps)
    res = {"batch": b, "tokens": (cfg["num_frames"] // 2) * (cfg["img_size"] // cfg["patch_size"]) ** 2,
           "decoder_s": td, "step_s": ts, "decoder_speedup": td["every_token"] / td["dual"],
           "step_speedup": ts["every_token"] / ts["dual"], "goal": None, "goal_met": None}
    res["summary"] = f"decoder {res['decoder_speedup']:.2f}x, whole step {res['step_speedup']:.2f}x"
    return res


def row_grouping(ctx: Ctx) -> dict:
    ops = need("mae_3d.ops")
    sizes = [(2, 128, 8, 8), (2, 256, 16, 8)] if ctx.tiny else [(32, 1024, 64, 32), (128, 8192, 512, 32)]
    res, ok = {"sizes": []}, []
    gen = torch.Generator().manual_seed(0)
    for b, n, gr, k in sizes:
        pts = ops.normalize_unit_sphere(torch.randn(b, n, 3, generator=gen)).to(ctx.dev)
        with torch.inference_mode():
            t = interleave(ctx, {"group": lambda: ops.group_points(pts, gr, k)}, *((2, 1) if ctx.tiny else (20, 3)))
        ms = t["group"] * 1e3
        ref = OPEN3D_CPU.get((b, n, gr, k))
        row = {"batch": b, "points": n, "groups": gr, "group_size": k, "ms": ms}
        if ref:
            row.update(open3d_cpu_ms=ref["ms"], open3d_machine=ref["machine"], open3d_source=ref["source"],
                       speedup_vs_open3d=ref["ms"] / ms)
            ok.append(ref["ms"] / ms >= 20)
        else:
            row["open3d_cpu_ms"] = None
            row["note"] = "no Open3D figure at this size in docs/benchmarks/3d.md"
        res["sizes"].append(row)
    res.update(goal=">= 20x the Open3D CPU loop (sizes with a quoted figure)", goal_met=all(ok) if ok else None)
    res["summary"] = "; ".join(f"{r['batch']}x{r['points']}->{r['groups']}x{r['group_size']}: {r['ms']:.2f} ms"
                               + (f" ({r['speedup_vs_open3d']:.0f}x Open3D CPU)" if r["open3d_cpu_ms"] else "")
                               for r in res["sizes"])
    return res


def row_graphmae(ctx: Ctx) -> dict:
    need("torch_geometric")
    mg = need("mae_graph")
    import mae_core
    from mae_graph.data.graphs import collate_graphs
    folder = ctx.args.planetoid_folder
    if folder:
        ds, data = mae_core.create_dataset("planetoid", config={"path": folder, "name": "cora"}), f"Cora from {folder}"
    else:
        ds, data = mae_core.create_dataset("sbm"), "embedded SBM graph (no --planetoid-folder given)"
    _, model_cfg, _, train_cfg, _ = mg.PRESETS["cora"]
    epochs = 5 if ctx.tiny else train_cfg["epochs"]
    torch.manual_seed(0)
    model = mae_core.create_model("graphmae", dataset=ds, **model_cfg).to(ctx.dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"], fused=True)
    batch = {k: (v.to(ctx.dev) if hasattr(v, "to") else v) for k, v in collate_graphs([ds[0]]).items()}
    g = ctx.gen()
    step = train_step(ctx, lambda: model(batch, generator=g).loss, opt, amp=False)  # fp32, as the preset trains
    step()
    ctx.sync()
    t = time.perf_counter()
    for _ in range(epochs):
        step()
    ctx.sync()
    wall = time.perf_counter() - t
    return {"data": data, "nodes": int(ds[0]["graph"].num_nodes), "epochs": epochs, "precision": "fp32", "wall_s": wall,
            "ms_per_epoch": wall / epochs * 1e3, "goal": None, "goal_met": None,
            "summary": f"{epochs} epochs in {wall:.1f} s ({wall / epochs * 1e3:.2f} ms/epoch) on the {data}"}


def row_loader(ctx: Ctx) -> dict:
    import numpy as np
    from PIL import Image
    from torch.utils.data import DataLoader

    import mae_core
    import mae_core.image  # noqa: F401  (registers image-folder)
    from mae_core.data.utils import collate_dicts
    n, side, size, b = (32, 40, 32, 8) if ctx.tiny else (2048, 256, 224, 256)
    workers = ctx.args.workers if ctx.args.workers is not None else (1 if ctx.tiny else min(16, os.cpu_count() or 1))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        for i in range(n):
            os.makedirs(f"{root}/c{i % 2}", exist_ok=True)
            small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((side, side),
                                                                                            Image.BICUBIC)
            small.save(f"{root}/c{i % 2}/{i}.jpg", quality=90)
        ds = mae_core.create_dataset("image-folder", path=root, image_size=size, val_fraction=0.0)
        loader = DataLoader(ds, batch_size=b, shuffle=True, num_workers=workers, collate_fn=collate_dicts,
                            pin_memory=ctx.cuda, drop_last=True, persistent_workers=workers > 0)
        for _ in loader:  # start the workers
            pass
        ctx.sync()
        t, seen = time.perf_counter(), 0
        for batch in loader:
            seen += batch["image"].to(ctx.dev, non_blocking=True).shape[0]
        ctx.sync()
        rate = seen / (time.perf_counter() - t)
        del loader
    res = {"images": n, "jpeg_side": side, "crop": size, "batch": b, "workers": workers, "loader_img_per_s": rate}
    use = ctx.shared.get("consumption_img_per_s")
    if use is None:
        d, m, o = build_ours_vit(ctx, 0.75)
        x, g = torch.randn(d["batch"], 3, d["img"], d["img"], device=ctx.dev), ctx.gen()
        t = interleave(ctx, {"s": train_step(ctx, lambda: m({"image": x}, generator=g).loss, o)},
                       *((1, 1) if ctx.tiny else (5, 2)))
        use = d["batch"] / t["s"]
        res["consumption_from"] = "a few eager ViT-B steps measured here (vit_mae row not run)"
    else:
        res["consumption_from"] = "the vit_mae row's fastest ours variant"
    res.update(step_img_per_s=use, ratio=rate / use, goal="loader / step consumption >= 3", goal_met=rate / use >= 3)
    res["summary"] = f"loader {rate:.0f} img/s ({workers} workers) vs step {use:.0f} img/s: {rate / use:.2f}"
    return res


def environment(ctx: Ctx) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(ctx.dev),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "threads": torch.get_num_threads(), "amp": ctx.args.amp, "tiny": ctx.tiny}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.dev)
        env.update(gpu=torch.cuda.get_device_name(ctx.dev), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2 ** 30, 1))
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            env["driver"] = "unknown (nvidia-smi not available)"
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="toy sizes (the CPU test)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants of vit_mae")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; tiny: eager)")
    ap.add_argument("--planetoid-folder", default=None, help="folder with the raw Planetoid Cora files (ind.cora.*)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default min(16, CPUs); tiny: 1)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="rows that would start after this are skipped")
    args = ap.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        print(f"error: --rows: unknown row(s) {', '.join(bad)}; choose from {', '.join(ROWS)}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available", file=sys.stderr)
        return 2
    if args.planetoid_folder and not os.path.isdir(args.planetoid_folder):
        print(f"error: --planetoid-folder {args.planetoid_folder}: no such folder", file=sys.stderr)
        return 2
    ctx = Ctx(args)
    if ctx.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = {"environment": environment(ctx), "rows": {}}
    print(json.dumps(out["environment"]), flush=True)
    start = time.perf_counter()
    for name in rows:
        t0 = time.perf_counter()
        if t0 - start > args.budget_s:
            res = {"status": "skipped", "reason": f"time budget of {args.budget_s:.0f} s spent"}
        else:
            try:
                res = {"status": "ok", **globals()[f"row_{name}"](ctx)}
            except Skip as e:
                res = {"status": "skipped", "reason": str(e)}
            except Exception as e:  # a failing row must not lose the others' numbers
                res = {"status": "error", "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                       "traceback": traceback.format_exc(limit=6)}
        res["seconds"] = time.perf_counter() - t0
        out["rows"][name] = res
        ctx.free()
        line = res.get("summary") or res.get("reason", "")
        met = {True: "goal met", False: "goal MISSED", None: ""}[res.get("goal_met")]
        print(f"{name:<11} {res['status']:<8} {res['seconds']:6.1f} s  {line}  {met}", flush=True)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(out, fh, indent=1, default=str)
    out["total_s"] = time.perf_counter() - start
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
    print(f"total {out['total_s']:.1f} s")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
