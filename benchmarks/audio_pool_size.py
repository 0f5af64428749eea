"""Does Audio-MAE pretraining pay off on a small unlabelled pool? Probe accuracy against pool size on FSDD
(run by hand; results go to docs/benchmarks/audio.md).

FSDD official split (2700 train / 300 test clips), 16 kHz, 64 fbank frames x 128 mel bins (a 4 x 8 patch grid),
normalisation statistics of the training split. For each pool size (random subsets of the 2700 training clips, no
labels) and seed: a small Audio-MAE (reference decoder, roll_mag_aug, weight decay 1e-4) is pretrained for a fixed
number of steps; its frozen features are probed (BN + linear, mae-core ``linear_probe``) with all 2700 labels and with
5 labelled clips per class, next to the same encoder at random init and to the raw fbank. Several feature read-outs
are probed: the mean of the patch tokens, the cls token, the patch tokens minus the cls token (Bird-MAE's focal
tokens, averaged), the patch tokens averaged over frequency only (time order kept, 4 x D) and every patch token
(the whole grid, 32 x D). ``--layers`` also probes the time and grid read-outs of every encoder block's output
(blocks 1..depth, with and without the encoder's final norm), pretrained and at random init. ``--synthetic N`` adds the recipe "pretrain on N synthetic calls (the library's
``birdcalls``, at the FSDD front end), then on the small pool".

    OMP_NUM_THREADS=1 uv run python benchmarks/audio_pool_size.py --data <fsdd> --out runs/pool --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from mae_audio.data import FSDD, BirdCalls, BirdCallsConfig, FSDDConfig
from mae_audio.bird_probe import bird_mae_probe
from mae_audio.methods import AudioMAE, AudioMAEConfig
from mae_core.checkpoint import atomic_write_json
from mae_core.eval import linear_probe
from mae_core.eval.prototypical import prototypical_probe


def model_config(args, stats) -> AudioMAEConfig:
    return AudioMAEConfig(target_length=64, num_mel_bins=128, embed_dim=args.embed_dim, depth=args.depth,
                          num_heads=args.num_heads, decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2,
                          decoder_mode=args.decoder_mode, mask_ratio=0.8, norm_mean=stats[0], norm_std=stats[1],
                          roll_mag_aug=not args.no_roll)


def pretrain(model, feats, frames, steps, args, seed):
    """AdamW (betas 0.9 / 0.95, weight decay on matrices), warm-up then cosine, batches drawn with replacement."""
    g = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    warm = max(1, steps // 10)
    model.train()
    losses = []
    for s in range(steps):
        lr = args.lr * (s + 1) / warm if s < warm else args.lr * 0.5 * (1 + math.cos(math.pi * (s - warm) /
                                                                                  max(1, steps - warm)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        idx = torch.randint(len(feats), (min(args.batch_size, len(feats)),), generator=g)
        out = model({"x": feats[idx], "frames": frames[idx]}, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    model.eval()
    return sum(losses[:20]) / 20, sum(losses[-20:]) / 20


def token_readouts(x, grid) -> dict[str, torch.Tensor]:
    """Mean, cls, focal, time and grid read-outs of encoder tokens x (B, 1 + L, D), cls first, on a (time, frequency) grid."""
    cls, patch = x[:, 0], x[:, 1:]
    t, f = grid
    return {"mean": patch.mean(1), "cls": cls, "focal": (patch - cls[:, None]).mean(1),
            "time": patch.reshape(len(x), t, f, -1).mean(2).flatten(1), "grid": patch.flatten(1)}


@torch.no_grad()
def readouts(model, feats) -> dict[str, torch.Tensor]:
    model.eval()
    return token_readouts(torch.cat([model.forward_features({"x": feats[i:i + 256]})
                                     for i in range(0, len(feats), 256)]), model.grid)


@torch.no_grad()
def block_readouts(model, feats) -> dict[str, torch.Tensor]:
    """Time and grid read-outs of every encoder block's output: ``{readout}/b{block}`` after the encoder's final
    norm (the last block's equals ``readouts``), ``{readout}/b{block}-raw`` before it."""
    model.eval()
    hidden = []
    for i in range(0, len(feats), 256):
        tokens, pos = model.tokenize({"x": feats[i:i + 256]})
        hidden.append(model.encoder(model.embed_tokens(tokens), pos, return_hidden=True)[1])
    res = {}
    for b, parts in enumerate(zip(*hidden), 1):
        h = torch.cat(parts)
        for suffix, x in (("", model.encoder.norm(h)), ("-raw", h)):
            r = token_readouts(x, model.grid)
            res |= {f"{name}/b{b}{suffix}": r[name] for name in ("time", "grid")}
    return res


def probe_layers(model, train, test, shots, args) -> dict:
    return probe_all(block_readouts(model, train.feats), block_readouts(model, test.feats), train.labels,
                     test.labels, shots, args)


def probe_all(rtr, rte, ytr, yte, shots, args) -> dict:
    res = {}
    for name in rtr:
        full = linear_probe(rtr[name], ytr, rte[name], yte, 10, epochs=args.probe_epochs, lr=1e-2)["acc"]
        few = [linear_probe(rtr[name][idx], ytr[idx], rte[name], yte, 10, epochs=args.probe_epochs,
                            lr=1e-2)["acc"] for idx in shots]
        res[name] = {"all_labels": full, "5_per_class": sum(few) / len(few)}
    return res


@torch.no_grad()
def token_grids(model, feats, focal: bool) -> torch.Tensor:
    model.config.probe_tokens = "focal" if focal else "patch"
    return torch.cat([model.token_grid({"x": feats[i:i + 256]})[0] for i in range(0, len(feats), 256)])


def prototypical(model, train, test, args) -> dict:
    """mae-core's prototypical probe on the patch tokens (before) and the reference probe on the focal tokens."""
    res = {}
    for name, focal in (("core_patch", False), ("reference_focal", True), ("reference_patch", False)):
        ttr, tte = token_grids(model, train.feats, focal), token_grids(model, test.feats, focal)
        if name == "core_patch":
            r = prototypical_probe(ttr, train.labels, tte, test.labels, model.grid, 10, epochs=args.proto_epochs)
        else:
            r = bird_mae_probe(ttr, train.labels, tte, test.labels, model.grid, 10, epochs=args.proto_epochs)
        res[name] = {k: v for k, v in r.items() if not k.startswith("train_")} | {"train_acc": r["train_acc"]}
        print(name, res[name], flush=True)
    return res


def five_per_class(labels, seed, k=5):
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.cat([(labels == c).nonzero().flatten()[torch.randperm(int((labels == c).sum()), generator=g)[:k]]
                      for c in range(10)])


def plot(result_files, png, readouts=("mean", "time", "grid")) -> None:
    """Test accuracy against pool size (log axis), one panel per label budget; dashed: random init (mean of seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, rand = {}, {}
    for f in result_files:
        for key, v in json.loads(Path(f).read_text())["runs"].items():
            parts = key.split("/")
            if parts[0] == "random_init":
                for ro in readouts:
                    for lab in ("all_labels", "5_per_class"):
                        rand.setdefault((ro, lab), []).append(v[ro][lab])
                continue
            tag, recipe, pool = parts[0], parts[1], int(parts[2][4:])
            if recipe != "fsdd":
                continue
            for ro in readouts:
                for lab in ("all_labels", "5_per_class"):
                    curves.setdefault((tag, ro, lab), {}).setdefault(pool, []).append(v["probes"][ro][lab])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, lab in zip(axes, ("all_labels", "5_per_class")):
        for i, ro in enumerate(readouts):
            color = f"C{i}"
            for (tag, r, lb), pts in sorted(curves.items()):
                if r != ro or lb != lab:
                    continue
                xs = sorted(pts)
                ax.plot(xs, [100 * sum(pts[x]) / len(pts[x]) for x in xs], "o-" if "1500" in tag else "s--",
                        color=color, label=f"{ro}, {tag}")
            if (ro, lab) in rand:
                ax.axhline(100 * sum(rand[(ro, lab)]) / len(rand[(ro, lab)]), color=color, ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("unlabelled pretraining pool (FSDD clips)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"linear probe, {lab.replace('_', ' ')} (dotted: random init)")
        ax.legend(fontsize=7)
    fig.savefig(png, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/audio-pool")
    ap.add_argument("--pools", type=int, nargs="+", default=[100, 300, 1000, 2700])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--embed-dim", type=int, default=96)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--num-heads", type=int, default=3)
    ap.add_argument("--decoder-mode", default="swin", choices=["swin", "plain", "local"])
    ap.add_argument("--no-roll", action="store_true", help="pretrain without roll_mag_aug")
    ap.add_argument("--probe-epochs", type=int, default=100)
    ap.add_argument("--proto-epochs", type=int, default=10)
    ap.add_argument("--proto-pools", type=int, nargs="*", default=[2700],
                    help="pools whose model (and the random init) also get the prototypical probes")
    ap.add_argument("--synthetic", type=int, default=0, help="synthetic calls for the pretrain-on-synthetic recipe")
    ap.add_argument("--synthetic-pools", type=int, nargs="+", default=[100], help="pools that get that recipe")
    ap.add_argument("--layers", action="store_true",
                    help="also probe the time and grid read-outs of every encoder block (pretrained and random init)")
    ap.add_argument("--plot", nargs="+", metavar="RESULTS_JSON", help="only draw <out>/pool_size.png from these")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.plot:
        out.mkdir(parents=True, exist_ok=True)
        plot(args.plot, out / "pool_size.png")
        return
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    results.setdefault("commands", []).append(" ".join(sys.argv))
    save = lambda: atomic_write_json(res_path, results)  # noqa: E731

    dcfg = FSDDConfig(path=args.data, sample_rate=16000, target_length=64, num_mel_bins=128)
    train, test = FSDD(dcfg, "train"), FSDD(dcfg, "test")
    stats = (dcfg.norm_mean, dcfg.norm_std)
    ytr, yte = train.labels, test.labels
    shots = [five_per_class(ytr, s) for s in args.seeds]
    results["data"] = {"train": len(train), "test": len(test), "norm": stats}
    if "raw_fbank" not in results:
        raw_tr = {"mean": train.feats[:, 0].mean(1), "grid": train.feats[:, 0].flatten(1)}
        raw_te = {"mean": test.feats[:, 0].mean(1), "grid": test.feats[:, 0].flatten(1)}
        results["raw_fbank"] = {}
        for name in raw_tr:
            lr = 1e-2 if name == "mean" else 1e-3
            full = linear_probe(raw_tr[name], ytr, raw_te[name], yte, 10, epochs=args.probe_epochs, lr=lr)["acc"]
            few = [linear_probe(raw_tr[name][i], ytr[i], raw_te[name], yte, 10, epochs=args.probe_epochs,
                                lr=lr)["acc"] for i in shots]
            results["raw_fbank"][name] = {"all_labels": full, "5_per_class": sum(few) / len(few)}
        save()
        print("raw fbank", results["raw_fbank"], flush=True)
    tag = f"{args.decoder_mode}{'-noroll' if args.no_roll else ''}-{args.steps}"
    runs = results.setdefault("runs", {})
    for seed in args.seeds:
        key = f"random_init/seed{seed}"
        if key not in runs or (args.layers and "layers" not in runs[key]):
            torch.manual_seed(seed)
            m = AudioMAE(model_config(args, stats))
            if key not in runs:
                runs[key] = probe_all(readouts(m, train.feats), readouts(m, test.feats), ytr, yte, shots, args)
                if args.proto_pools:
                    runs[key]["prototypical"] = prototypical(m, train, test, args)
            if args.layers:
                runs[key]["layers"] = probe_layers(m, train, test, shots, args)
            save()
            print(key, json.dumps(runs[key]), flush=True)
        synth = None
        if args.synthetic:
            bc = BirdCallsConfig(sample_rate=16000, target_length=64, num_mel_bins=128, num_train=args.synthetic,
                                 num_test=1, norm_mean=stats[0], norm_std=stats[1], seed=seed)
            synth = BirdCalls(bc, "train")
        for pool in args.pools:
            recipes = [("fsdd", None)]
            if synth is not None and pool in args.synthetic_pools:
                recipes.append(("synthetic+fsdd", synth))
            for recipe, first in recipes:
                key = f"{tag}/{recipe}/pool{pool}/seed{seed}"
                if key in runs and (not args.layers or "layers" in runs[key]):
                    continue
                t0 = time.time()
                torch.manual_seed(seed)
                m = AudioMAE(model_config(args, stats))
                g = torch.Generator().manual_seed(seed)
                sel = torch.randperm(len(train), generator=g)[:pool]
                losses = {}
                steps = args.steps
                if first is not None:
                    losses["synthetic"] = pretrain(m, first.feats, first.frames, args.steps // 2, args, seed + 7)
                    steps = args.steps - args.steps // 2
                losses["pool"] = pretrain(m, train.feats[sel], train.frames[sel], steps, args, seed)
                r = probe_all(readouts(m, train.feats), readouts(m, test.feats), ytr, yte, shots, args)
                runs[key] = {"loss_first_last": losses, "probes": r, "wall_s": round(time.time() - t0, 1)}
                if args.layers:
                    runs[key]["layers"] = probe_layers(m, train, test, shots, args)
                    runs[key]["wall_s"] = round(time.time() - t0, 1)
                if pool in args.proto_pools and recipe == "fsdd":
                    runs[key]["prototypical"] = prototypical(m, train, test, args)
                    torch.save(m.state_dict(), out / f"model-{tag}-pool{pool}-seed{seed}.pt")
                save()
                print(key, json.dumps(runs[key]), flush=True)


if __name__ == "__main__":
    main()
