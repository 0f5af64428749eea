"""CDFSL-V in miniature: 5-way 5-shot on a stick-figure target domain after learning from moving-shapes clips.

Arms (docs/benchmarks/video.md, CDFSL-V section):

- random init: a VideoMAE with random weights (control);
- MAE source: VideoMAE V2 on the moving-shapes clips only, as many steps as the next arm;
- MAE source + target: VideoMAE V2 on the moving-shapes and the target training clips together (stage 1);
- + supervised: stage 2 from that run with the supervised source loss only (``--curriculum supervised``);
- full: stage 2 with the arctan curriculum from supervised CE to target self-distillation (``cdfsl-v``);
- released loss: stage 2 with the released code's effective loss, CE + 1 x distill (``--curriculum constant``);
- slow teacher: the full arm with the EMA as slow as the reference's once-per-epoch update (0.99^(1/32) per step).

Few-shot: the target's test split (MSR: the test subjects), 5-way 5-shot, 6 queries per class, logistic
regression on the frozen features (mae_core.eval.fewshot through ``target_fewshot``), mean accuracy and 95 %
interval over ``--episodes`` episodes; features ``mean`` (the encoder's token mean, every arm) and ``fc`` (the
stage-2 classifier's normed mean, the reference's testFS feature).

    uv run python benchmarks/video_cdfslv.py --out cdfslv.json                          # procedural stick figures
    uv run python benchmarks/video_cdfslv.py --skeletons PATH/MSRAction3DSkeletonReal3D.tar.gz --out msr.json
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

import mae_core
from mae_video.data.stickfigures import StickFigures
from mae_video.data.crossdomain import CDFSLPretrain, CDFSLPretrainConfig, target_config
from mae_core.teacher import cached_pretrain
from mae_video.methods.cdfslv import STAGE1_FIELDS, CDFSLVConfig, target_fewshot


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skeletons", default="", help="MSR Action3D folder / .tar.gz (empty: procedural stick figures)")
    ap.add_argument("--stage1-epochs", type=int, default=24)
    ap.add_argument("--stage2-epochs", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--query", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default="random,source,both,supervised,full,constant")
    ap.add_argument("--runs", default="runs/cdfslv-bench", help="where the runs are written")
    ap.add_argument("--out", default="cdfslv.json")
    ap.add_argument("--reuse", action="store_true", help="evaluate stage-2 runs already in --runs instead of training")
    a = ap.parse_args()
    arms = a.arms.split(",")
    runs = Path(a.runs) / (f"msr-s{a.seed}" if a.skeletons else f"procedural-s{a.seed}")
    data = {"skeletons": a.skeletons, "seed": a.seed}
    stage1 = CDFSLPretrainConfig(**data)
    target_test = StickFigures(target_config(stage1), "test")
    n_both = len(CDFSLPretrain(stage1, "train"))
    common = {"progress": False, "overwrite": True, "seed": a.seed}
    results = {"args": vars(a), "n_stage1_clips": n_both, "n_target_test": len(target_test), "arms": {}}

    def evaluate(name: str, model, pools, seconds: float, extra=None) -> None:
        model.eval()
        row = {"cpu_s": round(seconds, 1), **(extra or {})}
        with torch.no_grad():
            for pool in pools:
                r = target_fewshot(model, target_test, way=5, shot=5, query=a.query, episodes=a.episodes,
                                   seed=a.seed, pool=pool)
                row[pool] = {"acc": round(r["acc"], 2), "ci95": round(r["ci95"], 2)}
        results["arms"][name] = row
        print(name, json.dumps(row), flush=True)
        Path(a.out).write_text(json.dumps(results, indent=1))

    if "random" in arms:
        torch.manual_seed(a.seed)
        evaluate("random init", mae_core.create_model("videomae", domain="video"), ["mean"], 0.0)
    if "source" in arms:
        t0 = cpu_s()
        # the same number of steps as stage 1 on both domains (1024 source clips per epoch here)
        epochs = max(1, round(a.stage1_epochs * n_both / 1024))
        run = mae_core.pretrain("videomae", dataset="moving-shapes", data_config={"seed": a.seed}, epochs=epochs,
                                out=str(runs / "mae-source"), **common)
        evaluate("MAE source", run.model, ["mean"], cpu_s() - t0, {"epochs": epochs})
    if "both" in arms or any(x in arms for x in ("supervised", "full", "constant", "slowteacher")):
        # stage 1 = the default that cdfsl-v trains without --init (cached under runs/teachers, reused by later arms)
        t0 = cpu_s()
        if a.seed == 0:
            both = Path(mae_core.create_model("cdfsl-v", domain="video", dataset="cdfsl-paired", data_config=data,
                                              stage1_epochs=a.stage1_epochs).config.init)
        else:  # the same stage 1 with the trainer seed too (the default stage 1 seeds only the data)
            c = CDFSLVConfig()
            recipe = {"epochs": a.stage1_epochs, **{k: getattr(c, k) for k in STAGE1_FIELDS}, "seed": a.seed}
            both = cached_pretrain("videomae", stage1, recipe, prefix="cdfslv-stage1", what="stage-1 VideoMAE")
        seconds = cpu_s() - t0
        if "both" in arms:
            evaluate("MAE source + target", mae_core.load_run(both).model, ["mean"], seconds,
                     {"epochs": a.stage1_epochs, "stage1": str(both), "cpu_s is": "0 when cached"})
    # slowteacher: the full arm with the teacher as slow as the reference's once-per-epoch 0.99 (32 steps an epoch)
    for arm, curriculum in (("supervised", "supervised"), ("full", "arctan"), ("constant", "constant"),
                            ("slowteacher", "arctan")):
        if arm not in arms:
            continue
        t0 = cpu_s()
        out = runs / f"stage2-{arm}"
        if a.reuse and (out / "summary.json").exists():  # a finished run of the same settings (e.g. the no-argument
            model = mae_core.load_run(out).model           # `mae-video pretrain --method cdfsl-v` for "full")
        else:
            model = mae_core.pretrain("cdfsl-v", dataset="cdfsl-paired", data_config=data, init=str(both),
                                      curriculum=curriculum, epochs=a.stage2_epochs, out=str(out), **common,
                                      **({"ema_momentum": 0.99 ** (1 / 32)} if arm == "slowteacher" else {})).model
        summary = json.loads((out / "summary.json").read_text())
        name = {"supervised": "+ supervised stage", "full": "+ self-distillation (full, arctan curriculum)",
                "constant": "released loss (CE + distill, multiplier 1)",
                "slowteacher": "full, teacher 0.99 per epoch (0.99^(1/32) per step)"}[arm]
        evaluate(name, model, ["mean", "fc"], cpu_s() - t0,
                 {"epochs": a.stage2_epochs, "final_loss": summary.get("final_loss"),
                  "train_time_s": round(summary.get("train_time_s", 0), 1), "curriculum": model.config.curriculum,
                  "ema_momentum": model.config.ema_momentum})


if __name__ == "__main__":
    main()
