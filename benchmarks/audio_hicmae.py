"""HiCMAE in miniature (run by hand; results go to docs/benchmarks/audio.md, section "multimodal").

Embedded talking faces (``talking-faces``: 320 training clips of 16 subjects, 160 test clips of 8 unseen subjects,
4 emotions balanced, 16 frames of 64 x 64, 1.3 s of 16 kHz audio as a 128 x 128 fbank). Four pretraining arms of the
same model, seed, data order and step count (the paper's ablation in miniature), plus the same encoders at random
init:

- ``plain``: audio-visual MAE (two encoders, co-attention fusion, plain decoders), no contrast;
- ``top``: + InfoNCE between the modalities at the last encoder block only;
- ``hier``: + InfoNCE at the three taps (hierarchical contrast);
- ``full``: + decoders cross-attending to the taps (hierarchical skips): HiCMAE.
- ``raw``: no model, the inputs themselves (mean frame at 32 x 32; the fbank's mean over time), a diagnostic of how
  much of the label each stream carries where a linear probe can read it.

Frozen features (``encode`` pools ``audio``, ``video`` and ``av``) are probed with few labels: ``k`` labelled
training clips per emotion (10 random draws), a linear SVM (mae-core's few-shot classifier), unweighted average
recall (UAR, the mean of the per-class recalls) on the whole test split; and with all 320 labels (linear SVM, C by
cross-validation). Each arm writes its numbers to ``<out>/results.json`` as it finishes; rerunning skips arms done.

    OMP_NUM_THREADS=1 uv run python benchmarks/audio_hicmae.py --out runs/hicmae --steps 250 --seed 0
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import mae_audio  # noqa: F401
from mae_audio.av_data import TalkingFaces, TalkingFacesConfig
from mae_audio.av_viz import visualize_av
from mae_audio.methods.hicmae import HiCMAE, HiCMAEConfig, adapt_hicmae
from bench_common import keyed_results
from mae_core.checkpoint import atomic_write_json
from mae_core.eval import extract_features
from mae_core.eval.fewshot import classify_episode
from mae_core.eval.svm import linear_svm
from mae_core.train import Trainer, TrainConfig

ARMS = {"plain": dict(contrast="none", decoder_skips=False), "top": dict(contrast="top", decoder_skips=False),
        "hier": dict(contrast="hierarchical", decoder_skips=False), "full": dict(contrast="hierarchical"),
        "random": dict(), "raw": None}  # random: the full architecture, not trained; raw: input features, no model
POOLS = ("audio", "video", "av")


def uar(pred: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score
    return float(balanced_accuracy_score(y, pred))


def few_label(xtr, ytr, xte, yte, k: int, draws: int, seed: int) -> tuple[float, float]:
    """Mean and std (percent) of the UAR over ``draws`` random sets of ``k`` labelled clips per class."""
    xtr, ytr, xte, yte = xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(np.flatnonzero(ytr == c), k, replace=False) for c in np.unique(ytr)])
        out.append(100 * uar(classify_episode(xtr[idx], ytr[idx], xte, "svm", seed=seed), yte))
    return float(np.mean(out)), float(np.std(out))


def raw_features(ds, pool: str) -> torch.Tensor:
    """The inputs themselves: video = the clip's mean frame at 32 x 32 (3072 values), audio = the fbank's mean over
    time (one value per mel bin), av = both."""
    v = torch.nn.functional.avg_pool2d(ds.video.float().mean(2) / 255.0, 2).flatten(1)
    a = ds.audio[:, 0].mean(1)
    return {"video": v, "audio": a, "av": torch.cat([v, a], 1)}[pool]


def probe(model, train, test, args) -> dict:
    res = {}
    for pool in POOLS:
        if model is None:
            xtr, ytr, xte, yte = raw_features(train, pool), train.labels, raw_features(test, pool), test.labels
        else:
            xtr, ytr = extract_features(model, train, batch_size=64, pool=pool)
            xte, yte = extract_features(model, test, batch_size=64, pool=pool)
        r = {f"k{k}": few_label(xtr, ytr, xte, yte, k, args.draws, args.seed) for k in args.shots}
        r["all"] = 100 * linear_svm(xtr, ytr, xte, yte, seed=args.seed)["acc"]  # balanced test split: acc = UAR
        res[pool] = r
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/hicmae")
    ap.add_argument("--arms", default="random,plain,top,hier,full")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--base-lr", type=float, default=4e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--picture", default=None, help="write the full arm's reconstruction picture here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    path, results = keyed_results(args.out)
    dcfg = TalkingFacesConfig()
    t0 = time.process_time()
    train, test = TalkingFaces(dcfg, "train"), TalkingFaces(dcfg, "test")
    results["data_cpu_s"] = round(time.process_time() - t0, 1)
    for arm in args.arms.split(","):
        key = f"{arm}/seed{args.seed}/steps{args.steps}"
        if key in results:
            print(f"{key}: done before, skipped")
            continue
        torch.manual_seed(args.seed)
        model = HiCMAE(adapt_hicmae(HiCMAEConfig(**ARMS[arm]), dcfg, train)) if arm != "raw" else None
        t0 = time.process_time()
        log = {}
        if arm not in ("random", "raw"):
            epochs = -(-args.steps * args.batch_size // len(train))
            tc = TrainConfig(epochs=epochs, max_steps=args.steps, batch_size=args.batch_size, base_lr=args.base_lr,
                             warmup_epochs=2, weight_decay=0.05, seed=args.seed, progress=False, log_every=50)
            trainer = Trainer(model, train, tc)
            summary = trainer.fit()
            model = trainer.raw_model
            log = {"final_loss": round(float(summary.get("final_loss", float("nan"))), 4)}
            model.eval()
            with torch.no_grad():
                o = model(next(iter(torch.utils.data.DataLoader(test, batch_size=64))),
                          generator=torch.Generator().manual_seed(0))
            log.update({f"test_{k}": round(v, 4) for k, v in o.metrics.items()})
        log["train_cpu_s"] = round(time.process_time() - t0, 1)
        t0 = time.process_time()
        log["probe"] = probe(model, train, test, args)
        log["probe_cpu_s"] = round(time.process_time() - t0, 1)
        results[key] = log
        atomic_write_json(path, results)
        print(key, json.dumps(log))
        if arm == "full" and args.picture:
            visualize_av(model, test, args.picture, num=2)


if __name__ == "__main__":
    main()
