"""Distillation in miniature on the embedded shapes: plain MAE against DMAE and MaskAlign at equal optimizer steps,
DMAE at mask 0.75 vs 0.95, MaskAlign with vs without Dynamic Alignment, a random-weight teacher as control. Each
variant is pretrained, then probed (linear + whitened kNN on the frozen encoder's features of the test split); one
JSON line per run is appended to ``--out``/results.jsonl.

    uv run python benchmarks/core_distillation.py --out runs/distill --seed 0 --runs mae dmae-75 dmae-95 \
        [--epochs 4] [--teacher-epochs 6]
    uv run python benchmarks/core_distillation.py --out runs/distill --table      # the tables from results.jsonl

The teacher is the default T-MIM (mae-core trains it once, cached under runs/teachers) unless ``--teacher DIR``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

RUNS = {
    "mae": ("image-mae", {}),
    "dmae-75": ("dmae", {"mask_ratio": 0.75}),
    "dmae-95": ("dmae", {"mask_ratio": 0.95}),
    "dmae-random-teacher": ("dmae", {"mask_ratio": 0.75, "teacher": "random"}),
    "maskalign": ("maskalign", {}),
    "maskalign-no-da": ("maskalign", {"dynamic_alignment": False}),
    "maskalign-random-mask": ("maskalign", {"attention_masking": False}),
    "maskalign-random-teacher": ("maskalign", {"teacher": "random"}),
    "mr-mae": ("mr-mae", {}),
    "mr-mae-decoder": ("mr-mae", {"mimic_on": "decoder"}),
    "mr-mae-random-teachers": ("mr-mae", {"teacher": "random", "cl_teacher": "random"}),
    "hybrid": ("hybrid-distill", {}),
    "hybrid-cl-only": ("hybrid-distill", {"relation_weight": 0.0}),
    "hybrid-relations-only": ("hybrid-distill", {"feature_weight": 0.0}),
    "hybrid-random-teachers": ("hybrid-distill", {"teacher": "random", "cl_teacher": "random"}),
}
TABLES = [("plain MAE vs the methods, and the random-weight teacher control",
           ["mae", "dmae-75", "maskalign", "mr-mae", "hybrid", "dmae-random-teacher", "maskalign-random-teacher"]),
          ("DMAE: mask 0.75 vs 0.95", ["dmae-75", "dmae-95"]),
          ("MaskAlign: Dynamic Alignment and attention-guided masking",
           ["maskalign", "maskalign-no-da", "maskalign-random-mask"]),
          ("MR-MAE: mimic on the visible tokens vs feature targets through the decoder",
           ["mae", "mr-mae", "mr-mae-decoder", "mr-mae-random-teachers"]),
          ("Hybrid Distillation: contrastive teacher only vs relations only vs both",
           ["mae", "hybrid", "hybrid-cl-only", "hybrid-relations-only", "hybrid-random-teachers"])]

# G2SD: the generic stage alone ("g2sd") vs generic + specific stage ("g2sd-specific": the same pretraining, fine-tuned
# with a distillation token from T-FT), plain MAE, a random-weight teacher. The runs in FINETUNE are also fine-tuned on
# 10 % of the labels (FT_PROTOCOL, every run the same); a run in REUSE takes the pretraining (and probes) of the run it
# names when that is already in --out with the same seed, and only fine-tunes.
RUNS.update({
    "mae-ft": ("image-mae", {}),
    "g2sd": ("g2sd", {}),
    "g2sd-specific": ("g2sd", {}),
    "g2sd-random-teacher": ("g2sd", {"teacher": "random"}),
})
FT_PROTOCOL = {"label_fraction": 0.1, "epochs": 30, "batch_size": 64}
FINETUNE = {"mae-ft": {"distill_teacher": "none"}, "g2sd": {"distill_teacher": "none"},
            "g2sd-specific": {"distill_teacher": "default"}, "g2sd-random-teacher": {"distill_teacher": "none"}}
REUSE = {"mae-ft": "mae", "g2sd-specific": "g2sd"}
# --finetune gives every other run the same 10 %-label fine-tuning (FT_PROTOCOL, plain: no distillation token); a run
# already pretrained in --out with the same seed (its record and its weights) is then only
# fine-tuned (again: the table reads the last record of each run and seed). Its pretraining is untouched, so the probes
# of earlier runs keep their numbers.
PLAIN_FT = {"distill_teacher": "none", "base_lr": 1.5e-3}  # image-mae's and g2sd's fine-tuning lr (the others: 1e-3)
FT_TABLES = [("G2SD: generic stage only vs generic + specific stage, plain MAE, random-weight teacher",
              ["mae-ft", "g2sd", "g2sd-specific", "g2sd-random-teacher"])]


def reused(out: Path, name: str, seed: int, finetune: bool = False):
    """(run, copy of its record) of the pretraining that ``name`` reuses (REUSE; with ``finetune``, its own earlier
    pretraining), or None."""
    src = REUSE.get(name, name if finetune and name not in FINETUNE else None)
    if src is None or not (out / "results.jsonl").exists():
        return None
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r["run"] == src and r["seed"] == seed]
    run_dir = out / f"{src}-s{seed}"
    if not recs or not (run_dir / "model.safetensors").exists():
        return None
    import mae_core
    return mae_core.load_run(run_dir), {**recs[-1], "run": name, "reused": src}


def table(out: Path) -> str:
    latest: dict[tuple, dict] = {}  # one record per (run, seed): the last (a later fine-tune of the same pretraining)
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        latest[r["run"], r["seed"]] = r
    rows: dict[str, list[dict]] = {}
    for r in sorted(latest.values(), key=lambda r: r["seed"]):
        rows.setdefault(r["run"], []).append(r)

    def cell(rs, key):
        v = [100 * r[key] for r in rs]
        return f"{statistics.mean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")

    def seeds(rs):
        return ",".join(str(r["seed"]) for r in rs)

    text = []
    for title, names in TABLES:
        text += [f"**{title}**", "", "| run | seeds | steps | linear % | kNN % | final loss | fine-tune 10 % labels % "
                 "| wall s (pretrain + probes, fine-tune) |", "|---|---|---|---|---|---|---|---|"]
        for n in names:
            if n in rows:
                rs = rows[n]
                fts = [r for r in rs if "finetune" in r]
                ft = "n/a" if not fts else cell(fts, "finetune") + (
                    "" if len(fts) == len(rs) else f" (seeds {seeds(fts)})")
                own = [r for r in rs if r.get("reused", n) == n]  # not another run's pretraining (mae-ft)
                wall = f"{statistics.mean(r['wall_s'] for r in own):.0f}" if own else "n/a"
                wall += f", {statistics.mean(r['ft_wall_s'] for r in fts):.0f}" if fts else ""
                text.append(f"| {n} | {seeds(rs)} | {rs[0]['steps']} | {cell(rs, 'linear')} | {cell(rs, 'knn')} "
                            f"| {statistics.mean(r['final_loss'] for r in rs):.4f} | {ft} | {wall} |")
        text.append("")
    for title, names in FT_TABLES:  # with the fine-tuning column
        text += [f"**{title}**", "", "| run | seeds | steps | linear % | kNN % | fine-tune 10 % labels % | wall s "
                 "(pretrain + probes, fine-tune) |", "|---|---|---|---|---|---|---|"]
        for n in names:
            rs = [r for r in rows.get(n, []) if "finetune" in r]
            if rs:
                wall = ", ".join(f"{statistics.mean(r[k] for r in rs):.0f}" for k in ("wall_s", "ft_wall_s"))
                text.append(f"| {n} | {','.join(str(r['seed']) for r in rs)} | {rs[0]['steps']} | {cell(rs, 'linear')} "
                            f"| {cell(rs, 'knn')} | {cell(rs, 'finetune')} | {wall} |")
        text.append("")
    return "\n".join(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", nargs="*", default=[], choices=sorted(RUNS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4, help="student pretraining epochs (equal steps for every run)")
    ap.add_argument("--teacher-epochs", type=int, default=6, help="epochs of the default T-MIM teacher")
    ap.add_argument("--teacher", default="", help="teacher run directory (default: the cached T-MIM)")
    ap.add_argument("--set", default="{}", help="JSON of extra options for every run (e.g. a smaller data set)")
    ap.add_argument("--finetune", action="store_true",
                    help="fine-tune every run on 10 %% of the labels (the G2SD table's protocol); a run already "
                         "pretrained in --out with this seed is only fine-tuned")
    ap.add_argument("--table", action="store_true", help="print the tables of results.jsonl")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(out))
        return
    import mae_core

    out.mkdir(parents=True, exist_ok=True)
    for name in args.runs:
        method, opts = RUNS[name]
        opts = {**opts, **json.loads(args.set)}
        probe_opts = {k: opts.pop(k) for k in list(opts) if k.startswith("probe_")}
        ft_over = {k[3:]: opts.pop(k) for k in list(opts) if k.startswith("ft_")}  # e.g. ft_epochs: FT_PROTOCOL
        if method != "image-mae":
            opts.setdefault("teacher", args.teacher)
            opts["teacher_epochs"] = args.teacher_epochs
        run_dir = out / f"{name}-s{args.seed}"
        t0 = time.time()
        prior = reused(out, name, args.seed, args.finetune)
        if prior is not None:
            run, rec = prior
        else:
            run = mae_core.pretrain(method, out=str(run_dir), overwrite=True, progress=False, seed=args.seed,
                                    **{"epochs": args.epochs, "batch_size": 128, "warmup_epochs": 1, "base_lr": 1.5e-3,
                                       **opts})
            summary = json.loads((run_dir / "summary.json").read_text())
            res = mae_core.probe(run, kind="linear,knn", **probe_opts)
            rec = {"run": name, "method": method, "seed": args.seed, "options": opts, "epochs": args.epochs,
                   "steps": summary["steps"], "final_loss": summary["final_loss"], "linear": res["linear"]["acc"],
                   "knn": res["knn"]["acc"], "teacher": getattr(run.model.config, "teacher", None),
                   "wall_s": round(time.time() - t0)}
        if name in FINETUNE or args.finetune:  # T-FT, when one has to be trained, counts in ft_wall_s
            t1 = time.time()
            ft_opts = {**FT_PROTOCOL, **FINETUNE.get(name, PLAIN_FT), **ft_over}
            ft = mae_core.finetune(run, out=str(out / f"{name}-s{args.seed}-ft"), overwrite=True, progress=False,
                                   **ft_opts)
            rec.update(finetune=ft["test_acc"], finetune_options=ft_opts, ft_wall_s=round(time.time() - t1))
        with open(out / "results.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
