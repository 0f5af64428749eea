"""FSDD benchmark of mae-audio (run by hand; results go to docs/benchmarks/audio.md).

Free Spoken Digit Dataset, official split (takes 0-4 = test, 300 clips; 2700 train), 8 kHz resampled to 16 kHz,
Audio-MAE front end (128 mel bins, --target-length frames, 16 x 16 patches), normalisation statistics
computed on the training split. Small model and few epochs (the machine is a shared 2-core CPU); the results are
written after every step:

1. pretrain Audio-MAE (80 % random masking, local-window decoder) on the 2700 training clips (no labels);
2. frozen features: linear probe (BN + linear on mean-pooled tokens) and prototypical probe (token grid);
3. fine-tune with 10 % of the labels: pretrained vs. the same architecture from scratch (same recipe, same steps);
4. fine-tune the pretrained encoder with all labels.

    OMP_NUM_THREADS=2 nice -n 5 uv run python benchmarks/audio_fsdd.py --data ../shared/data/fsdd --out runs/fsdd
    (defaults: 64 frames = 0.64 s, 4 x 8 patch grid, ViT 128 x 3, pretrain 3 epochs, fine-tune 10 % labels 10
    epochs, all labels 2 epochs)
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import mae_audio  # noqa: F401
from mae_audio.data import FSDD, FSDDConfig
from mae_audio.methods import AudioMAE, AudioMAEConfig
from mae_audio.viz import save_prototype_map, save_spectrogram_reconstruction
from mae_core.checkpoint import atomic_write_json, from_pretrained, save_pretrained
from mae_core.data.utils import subset_fraction
from mae_core.eval import extract_features, finetune, linear_probe
from mae_core.eval.prototypical import extract_token_grids, prototypical_probe
from mae_core.rundir import RunDir
from mae_core.train import Trainer, TrainConfig


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/fsdd-bench")
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--ft-epochs", type=int, default=2, help="epochs of the full-label fine-tune")
    ap.add_argument("--ft10-epochs", type=int, default=10, help="epochs of each 10 %-label fine-tune")
    ap.add_argument("--probe-epochs", type=int, default=100)
    ap.add_argument("--proto-epochs", type=int, default=5)
    ap.add_argument("--target-length", type=int, default=64, help="fbank frames (10 ms) per clip")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-pretrain", action="store_true", help="reuse <out>/pretrain")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if args.skip_pretrain and (out / "results.json").exists():
        results = json.loads((out / "results.json").read_text())
    results.update({"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
                    "torch_threads": torch.get_num_threads()})

    def save():
        atomic_write_json(out / "results.json", results)
        print(json.dumps(results, indent=1), flush=True)

    t0 = time.time()
    dcfg = FSDDConfig(path=args.data, sample_rate=16000, target_length=args.target_length, num_mel_bins=128)
    train, test = FSDD(dcfg, "train"), FSDD(dcfg, "test")
    results["data"] = {"train": len(train), "test": len(test), "norm_mean": dcfg.norm_mean, "norm_std": dcfg.norm_std,
                       "skipped": train.skipped + test.skipped, "features_s": round(time.time() - t0, 1)}
    save()

    mcfg = AudioMAEConfig(target_length=args.target_length, num_mel_bins=128, embed_dim=args.embed_dim,
                          depth=args.depth, num_heads=4, decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4,
                          decoder_mode="local", decoder_window=2, mask_ratio=0.8, ft_mixup=0.3)
    bs = args.batch_size
    batch = {"x": train.feats[:bs]}
    pre_dir = out / "pretrain"
    if not args.skip_pretrain:
        epochs = args.pretrain_epochs
        tc = TrainConfig(epochs=epochs, batch_size=bs, lr=1e-3, warmup_epochs=min(1.0, epochs / 3), weight_decay=0.05,
                         seed=args.seed, progress=False, log_every=10, device="cpu")
        model = AudioMAE(copy.deepcopy(mcfg))
        model.method_name = "audio-mae"
        run = RunDir(pre_dir, overwrite=True)
        run.write_config({"method": "audio-mae", "model": mcfg.__dict__, "data": dcfg.__dict__, "train": tc.__dict__})
        t1 = time.time()
        summary = Trainer(model, train, tc, run_dir=run).fit()
        save_pretrained(model, pre_dir)
        hist = [json.loads(l) for l in (pre_dir / "metrics.jsonl").read_text().splitlines()]
        results["pretrain"] = {"steps": summary["steps"], "epochs": epochs, "first_loss": hist[0]["loss"], "final_loss": summary["final_loss"],
                               "wall_s": round(time.time() - t1, 1),
                               "params": sum(p.numel() for p in model.parameters())}
        save()
        save_spectrogram_reconstruction(model, test, out / "reconstruction.png", num=4)
    model = from_pretrained(pre_dir)

    # ---- frozen features ----------------------------------------------------------------------------------------------
    t1 = time.time()
    xtr, ytr = extract_features(model, train, batch_size=64, pool="mean")
    xte, yte = extract_features(model, test, batch_size=64, pool="mean")
    results["linear_probe"] = linear_probe(xtr, ytr, xte, yte, num_classes=10, epochs=args.probe_epochs, lr=1e-2)
    results["linear_probe"]["wall_s"] = round(time.time() - t1, 1)
    rnd = AudioMAE(copy.deepcopy(mcfg))
    rtr, _ = extract_features(rnd, train, batch_size=64, pool="mean")
    rte, _ = extract_features(rnd, test, batch_size=64, pool="mean")
    results["linear_probe_random_init"] = linear_probe(rtr, ytr, rte, yte, num_classes=10, epochs=args.probe_epochs,
                                                       lr=1e-2)
    save()
    t1 = time.time()
    ttr, ttr_y, grid = extract_token_grids(model, train, 64)
    tte, tte_y, _ = extract_token_grids(model, test, 64)
    res, head = prototypical_probe(ttr, ttr_y, tte, tte_y, grid, 10, num_prototypes=20, epochs=args.proto_epochs,
                                   proto_lr=0.05, head_lr=0.01, batch_size=64, return_head=True)
    res["wall_s"] = round(time.time() - t1, 1)
    results["prototypical_probe"] = res
    save()
    for i in (0, 150):
        save_prototype_map(model, head, test[i], out / f"prototypes-{i}.png", classes=test.classes, top=3)
    del ttr, tte

    # ---- fine-tuning ----------------------------------------------------------------------------------------------------
    def ft(name, frac, scratch):
        t1 = time.time()
        sub = subset_fraction(train, frac, seed=args.seed)
        backbone = AudioMAE(copy.deepcopy(mcfg)) if scratch else from_pretrained(pre_dir)
        epochs = args.ft10_epochs if frac < 1 else args.ft_epochs
        tc = TrainConfig(epochs=epochs, batch_size=bs, lr=1e-3, warmup_epochs=min(1.0, epochs / 3),
                         weight_decay=0.05, seed=args.seed, progress=False, log_every=20, device="cpu")
        _, summary = finetune(backbone, sub, test, 10, tc, layer_decay=None if scratch else 0.75, drop_path=0.1,
                              pool="mean", label_smoothing=0.1, run_dir=RunDir(out / name, overwrite=True))
        results[name] = {"labels": len(sub), "epochs": epochs, "steps": summary["steps"],
                         "test_acc": summary["test_acc"], "wall_s": round(time.time() - t1, 1)}
        save()

    ft("finetune_10pct_pretrained", 0.1, False)
    ft("finetune_10pct_scratch", 0.1, True)
    ft("finetune_full_pretrained", 1.0, False)
    results["total_wall_s"] = round(time.time() - t0, 1)
    save()


if __name__ == "__main__":
    main()
