"""FSDD benchmark of mae-audio (run by hand; results go to docs/benchmarks/audio.md).

Free Spoken Digit Dataset, official split (takes 0-4 = test, 300 clips; 2700 train), 8 kHz resampled to 16 kHz,
Audio-MAE front end (kaldi fbank, 128 mel bins, ``--target-length`` frames, 16 x 16 patches), normalisation
statistics computed on the training split. Stages (each one writes ``<out>/results.json``; rerun to continue):

- features: the fbank features of the 3000 clips are computed once and cached in ``<out>/features/`` (safetensors);
- ``--stage pretrain``: Audio-MAE pretraining on the 2700 training clips (no labels). ``--budget-s`` stops the run
  after the epoch that exceeds it (a checkpoint is saved); the same command resumes it exactly (same cosine
  schedule) until ``--pretrain-epochs`` are done. Every ``--probe-every`` epochs a quick linear probe of the
  frozen features is logged (the curve of probe accuracy against pretraining epochs);
- ``--stage probe``: frozen features, pretrained vs. the same architecture at random init: linear probe (BN + linear
  on the mean of the patch tokens) and prototypical probe (token grid); baselines on the raw fbank;
- ``--stage finetune``: 10 % of the labels, pretrained vs. scratch (same steps and recipe; scratch with and without
  layer decay), ``--seeds`` label subsets / seeds; then all labels from the pretrained encoder.

    A="--data ../shared/data/fsdd --out runs/fsdd"   # defaults = the recorded recipe
    flock /tmp/mae-cpu.lock env OMP_NUM_THREADS=2 uv run python benchmarks/audio_fsdd.py $A --stage pretrain --budget-s 600
    flock /tmp/mae-cpu.lock env OMP_NUM_THREADS=2 uv run python benchmarks/audio_fsdd.py $A --stage probe
    flock /tmp/mae-cpu.lock env OMP_NUM_THREADS=2 uv run python benchmarks/audio_fsdd.py $A --stage finetune

(repeat the pretrain line until it says done; the recorded run is in docs/benchmarks/audio.md.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import mae_audio  # noqa: F401
from mae_audio.data import FSDD, FSDDConfig
from mae_audio.methods import AudioMAE, AudioMAEConfig
from mae_audio.viz import save_prototype_map, save_spectrogram_reconstruction
from mae_core.checkpoint import atomic_write, atomic_write_json, from_pretrained, save_pretrained
from mae_core.data.utils import subset_fraction
from mae_core.eval import extract_features, finetune, linear_probe
from mae_core.eval.prototypical import extract_token_grids, prototypical_probe
from mae_core.rundir import RunDir
from mae_core.train import Trainer, TrainConfig


class CachedFSDD(FSDD):
    """FSDD whose raw (un-normalised, padded) fbank features are cached on disk as safetensors + JSON."""

    cache_dir: Path | None = None

    def _raw(self, split: str) -> dict:
        from safetensors.torch import load_file, save_file

        c = self.config
        stem = f"fsdd-{split}-{c.sample_rate}hz-{c.target_length}x{c.num_mel_bins}"
        f, meta = self.cache_dir / f"{stem}.safetensors", self.cache_dir / f"{stem}.json"
        if f.exists() and meta.exists():
            t, m = load_file(str(f)), json.loads(meta.read_text())
            return {"feats": t["feats"], "labels": t["labels"], **m}
        d = super()._raw(split)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(f, lambda p: save_file({"feats": d["feats"].contiguous(), "labels": d["labels"]}, p))
        atomic_write_json(meta, {k: d[k] for k in ("names", "classes", "skipped")})
        return d


class StopStage(Exception):
    pass


def model_config(args) -> AudioMAEConfig:
    return AudioMAEConfig(target_length=args.target_length, num_mel_bins=128, embed_dim=args.embed_dim,
                          depth=args.depth, num_heads=args.num_heads, decoder_embed_dim=args.decoder_embed_dim,
                          decoder_depth=args.decoder_depth, decoder_num_heads=4, decoder_mode=args.decoder_mode,
                          decoder_window=2, mask_ratio=args.mask_ratio, ft_mixup=0.5, ft_freq_mask=24,
                          ft_time_mask=12, ft_token_drop_time=0.2, ft_token_drop_freq=0.2,
                          roll_mag_aug=False)  # the recorded run predates roll_mag_aug (no norm stats: fill 0)


def fresh_model(args, seed: int) -> AudioMAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AudioMAE(model_config(args))


def quick_probe(model, train, test, epochs=50) -> float:
    xtr, ytr = extract_features(model, train, batch_size=256, pool="mean")
    xte, yte = extract_features(model, test, batch_size=256, pool="mean")
    return linear_probe(xtr, ytr, xte, yte, num_classes=10, epochs=epochs, lr=1e-2)["acc"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/fsdd-bench")
    ap.add_argument("--stage", choices=["pretrain", "probe", "finetune", "all"], default="all")
    ap.add_argument("--budget-s", type=float, default=None, help="stop pretraining after the epoch that passes this")
    ap.add_argument("--pretrain-epochs", type=int, default=40)
    ap.add_argument("--pretrain-lr", type=float, default=5e-4)
    ap.add_argument("--warmup-epochs", type=float, default=10)
    ap.add_argument("--probe-every", type=int, default=25, help="epochs between quick linear probes (0 = never)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--target-length", type=int, default=64, help="fbank frames (10 ms) per clip")
    ap.add_argument("--embed-dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--num-heads", type=int, default=3)
    ap.add_argument("--decoder-embed-dim", type=int, default=128)
    ap.add_argument("--decoder-depth", type=int, default=2)
    ap.add_argument("--decoder-mode", default="plain", choices=["plain", "local"])
    ap.add_argument("--mask-ratio", type=float, default=0.8)
    ap.add_argument("--probe-epochs", type=int, default=100)
    ap.add_argument("--proto-epochs", type=int, default=30)
    ap.add_argument("--ft10-epochs", type=int, default=60, help="epochs of each 10 %%-label fine-tune")
    ap.add_argument("--ft-epochs", type=int, default=10, help="epochs of the all-label fine-tune")
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=2, help="label subsets / seeds of the 10 %% fine-tunes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results: dict = json.loads(res_path.read_text()) if res_path.exists() else {}
    results.setdefault("commands", []).append(" ".join(sys.argv))
    results["torch_threads"] = torch.get_num_threads()

    def save():
        atomic_write_json(res_path, results)

    # ---- data (cached features) ---------------------------------------------------------------------------------------
    t0 = time.time()
    CachedFSDD.cache_dir = out / "features"
    dcfg = FSDDConfig(path=args.data, sample_rate=16000, target_length=args.target_length, num_mel_bins=128)
    train, test = CachedFSDD(dcfg, "train"), CachedFSDD(dcfg, "test")
    results.setdefault("data", {"train": len(train), "test": len(test), "norm_mean": dcfg.norm_mean,
                                "norm_std": dcfg.norm_std, "skipped": train.skipped + test.skipped,
                                "features_s": round(time.time() - t0, 1)})
    print(f"data: {len(train)} train / {len(test)} test clips, {time.time() - t0:.1f} s", flush=True)
    save()
    mcfg = model_config(args)
    pre_dir = out / "pretrain"

    # ---- pretraining (resumable, time-boxed) --------------------------------------------------------------------------
    if args.stage in ("pretrain", "all"):
        tc = TrainConfig(epochs=args.pretrain_epochs, batch_size=args.batch_size, lr=args.pretrain_lr,
                         warmup_epochs=args.warmup_epochs, weight_decay=0.05, seed=args.seed, progress=False,
                         log_every=20, device="cpu", keep_last=1)
        model = fresh_model(args, args.seed)
        resume = pre_dir.exists() and any((pre_dir / "checkpoints").glob("step-*")) if pre_dir.exists() else False
        run = RunDir(pre_dir, resume=resume, overwrite=not resume)
        if not resume:
            run.write_config({"method": "audio-mae", "model": mcfg.__dict__, "data": dcfg.__dict__,
                              "train": tc.__dict__})
        t1 = time.time()
        curve = results.setdefault("pretrain_probe_curve", {})

        def on_epoch_end(trainer, epoch):
            done = epoch + 1
            extra = None
            if args.probe_every and (done % args.probe_every == 0 or done == 1):
                acc = quick_probe(trainer.raw_model, train, test)
                curve[str(done)] = acc
                save()
                extra = {"quick_probe_acc": acc}
                print(f"epoch {done}: loss {trainer.last_loss:.4f}, quick linear probe {acc:.3f} "
                      f"({time.time() - t1:.0f} s)", flush=True)
            if args.budget_s and time.time() - t1 > args.budget_s and done < args.pretrain_epochs:
                trainer.save()
                raise StopStage(f"budget reached after epoch {done}")
            return extra

        trainer = Trainer(model, train, tc, run_dir=run, on_epoch_end=on_epoch_end)
        if curve.get("0") is None:
            curve["0"] = quick_probe(model, train, test)  # random init
        try:
            summary = trainer.fit(resume_from=trainer.latest_checkpoint() if resume else None)
        except StopStage as e:
            results["pretrain_wall_s"] = results.get("pretrain_wall_s", 0) + round(time.time() - t1, 1)
            results["pretrain_status"] = f"{e} (step {trainer.step}); rerun the same command to continue"
            save()
            print(results["pretrain_status"], flush=True)
            return
        results["pretrain_wall_s"] = results.get("pretrain_wall_s", 0) + round(time.time() - t1, 1)
        save_pretrained(model, pre_dir)
        if args.probe_every:
            curve[str(args.pretrain_epochs)] = quick_probe(model, train, test)
        hist = [json.loads(l) for l in (pre_dir / "metrics.jsonl").read_text().splitlines()]
        hist = [h for h in hist if "loss" in h]
        results["pretrain"] = {"steps": summary["steps"], "epochs": args.pretrain_epochs,
                               "first_loss": hist[0]["loss"], "final_loss": summary["final_loss"],
                               "params": sum(p.numel() for p in model.parameters()),
                               "encoder_params": sum(p.numel() for n, p in model.named_parameters()
                                                     if not n.startswith("decoder"))}
        results["pretrain_status"] = "done"
        save()
        save_spectrogram_reconstruction(model, test, out / "reconstruction.png", num=4)
        print(json.dumps(results["pretrain"]), flush=True)

    if args.stage in ("probe", "finetune", "all") and not (pre_dir / "config.json").exists():
        sys.exit(f"error: {pre_dir} has no finished pretraining (run --stage pretrain until it says done)")

    # ---- frozen features ------------------------------------------------------------------------------------------------
    if args.stage in ("probe", "all"):
        model = from_pretrained(pre_dir)
        rnd = fresh_model(args, args.seed)
        probes = results.setdefault("probes", {})
        t1 = time.time()
        # baselines without any encoder: the normalised fbank, mean over time (128 values) and flattened
        ftr, fte = train.feats[:, 0], test.feats[:, 0]
        probes["fbank_time_mean"] = linear_probe(ftr.mean(1), train.labels, fte.mean(1), test.labels, 10,
                                                 epochs=args.probe_epochs, lr=1e-2)
        probes["fbank_flat"] = linear_probe(ftr.flatten(1), train.labels, fte.flatten(1), test.labels, 10,
                                            epochs=args.probe_epochs, lr=1e-3)
        for name, m in (("pretrained", model), ("random_init", rnd)):
            for pool in ("mean", "cls"):
                xtr, ytr = extract_features(m, train, batch_size=256, pool=pool)
                xte, yte = extract_features(m, test, batch_size=256, pool=pool)
                probes[f"linear_{name}_{pool}"] = linear_probe(xtr, ytr, xte, yte, num_classes=10,
                                                               epochs=args.probe_epochs, lr=1e-2)
                print(name, pool, probes[f"linear_{name}_{pool}"], flush=True)
            save()
        probes["linear_wall_s"] = round(time.time() - t1, 1)
        for name, m in (("pretrained", model), ("random_init", rnd)):
            t1 = time.time()
            ttr, ttr_y, grid = extract_token_grids(m, train, 128)
            tte, tte_y, _ = extract_token_grids(m, test, 128)
            r, head = prototypical_probe(ttr, ttr_y, tte, tte_y, grid, 10, num_prototypes=20,
                                         epochs=args.proto_epochs, proto_lr=0.05, head_lr=0.01, batch_size=64,
                                         return_head=True)
            r["wall_s"] = round(time.time() - t1, 1)
            probes[f"prototypical_{name}"] = r
            print(name, "prototypical", r, flush=True)
            save()
            if name == "pretrained":
                for i in (0, 150):
                    save_prototype_map(m, head, test[i], out / f"prototypes-{i}.png", classes=test.classes, top=3)
            del ttr, tte

    # ---- fine-tuning ----------------------------------------------------------------------------------------------------
    if args.stage in ("finetune", "all"):
        fts = results.setdefault("finetune", {})

        def ft(name, frac, init, seed, epochs, layer_decay):
            t1 = time.time()
            sub = subset_fraction(train, frac, seed=seed)
            backbone = fresh_model(args, 1000 + seed) if init == "scratch" else from_pretrained(pre_dir)
            bs = 32
            tc = TrainConfig(epochs=epochs, batch_size=bs, lr=args.ft_lr, warmup_epochs=max(1.0, epochs / 10),
                             weight_decay=0.05, seed=seed, progress=False, log_every=20, device="cpu", keep_last=1)
            _, summary = finetune(backbone, sub, test, 10, tc, layer_decay=layer_decay, drop_path=0.1,
                                  pool="mean", label_smoothing=0.1, run_dir=RunDir(out / "ft" / name, overwrite=True))
            r = {"labels": len(sub), "epochs": epochs, "steps": summary["steps"], "layer_decay": layer_decay,
                 "final_loss": summary["final_loss"], "test_acc": summary["test_acc"],
                 "wall_s": round(time.time() - t1, 1)}
            fts[name] = r
            save()
            print(name, r, flush=True)
            return r["test_acc"]

        table = {"pretrained": [], "scratch": [], "scratch_ld": []}
        for s in range(args.seeds):
            seed = args.seed + s
            table["pretrained"].append(ft(f"10pct_pretrained_s{seed}", 0.1, "pretrained", seed, args.ft10_epochs, 0.75))
            table["scratch"].append(ft(f"10pct_scratch_s{seed}", 0.1, "scratch", seed, args.ft10_epochs, None))
            table["scratch_ld"].append(ft(f"10pct_scratch_ld_s{seed}", 0.1, "scratch", seed, args.ft10_epochs, 0.75))
        results["finetune_10pct_summary"] = {k: {"accs": v, "mean": sum(v) / len(v)} for k, v in table.items()}
        save()
        ft("full_pretrained", 1.0, "pretrained", args.seed, args.ft_epochs, 0.75)
    print(json.dumps(results, indent=1), flush=True)


if __name__ == "__main__":
    main()
