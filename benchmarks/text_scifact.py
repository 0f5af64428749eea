"""SciFact (BEIR layout) retrieval benchmark for mae-text, run by hand:

    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --stage retromae   # pretrain + fine-tune + test
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --stage dupmae
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --stage scratch    # needs the retromae stage
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --stage starbucks
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --stage bm25
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --stage dupmae-cls  # needs the dupmae stage
    uv run python benchmarks/text_scifact.py --report                              # table from the run folders

Each stage calls the ``mae-text`` CLI (pretrain on the corpus, finetune on the training claims, evaluate on the test
claims). Stages are independent processes, so two can run side by side. Time-boxed for a shared 2-core CPU machine:
small model, short sequences, a fixed number of optimizer steps (see the flags).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mae_text.cli import main as mae_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "scifact" / "beir_format"


def model_flags(a):
    return ["--embed-dim", str(a.dim), "--depth", str(a.depth), "--num-heads", str(a.heads), "--max-len",
            str(a.max_len), "--vocab-size", str(a.vocab)]


def train_flags(a, steps, batch, lr):
    return ["--max-steps", str(steps), "--epochs", "1000", "--batch-size", str(batch), "--lr", str(lr),
            "--no-progress", "--log-every", "25", "--device", "cpu"]


def run(argv):
    t0 = time.time()
    print("$ mae-text " + " ".join(argv), flush=True)
    rc = mae_text(argv)
    if rc:
        raise SystemExit(f"mae-text {argv[0]} failed with status {rc}")
    return time.time() - t0


def stage(a, name):
    out = Path(a.out)
    data = str(a.data)
    pre = out / name
    ft = out / f"{name}-ft"
    times = {}
    if name == "bm25":
        times["evaluate"] = run(["evaluate", "--data", data, "--split", "test", "--bm25", "--out",
                                 str(out / "bm25.json")])
        return times
    if name == "dupmae-cls":
        times["finetune"] = run(["finetune", "--run", str(out / "dupmae"), "--pool", "cls", "--data", data,
                                 "--split", "train", *train_flags(a, a.ft_steps, a.ft_batch, a.ft_lr), "--out", str(ft),
                                 "--overwrite"])
        return times
    if name == "scratch":
        base = out / "retromae"
        times["finetune"] = run(["finetune", "--scratch", "--run", str(base), "--data", data, "--split", "train",
                                 *train_flags(a, a.ft_steps, a.ft_batch, a.ft_lr), "--out", str(ft), "--overwrite"])
        return times
    extra = ["--pairs", *a.pairs] if (name == "starbucks" and a.pairs) else []
    steps = a.sb_steps if name == "starbucks" else a.steps
    times["pretrain"] = run(["pretrain", "--method", name, "--data", data, *model_flags(a), *extra,
                             "--passage-words", str(a.passage_words), "--test-fraction", "0.01",
                             *train_flags(a, steps, a.batch, a.lr), "--warmup-epochs", "0.05",
                             "--out", str(pre), "--overwrite"])
    times["finetune"] = run(["finetune", "--run", str(pre), "--data", data, "--split", "train",
                             *train_flags(a, a.ft_steps, a.ft_batch, a.ft_lr), "--out", str(ft), "--overwrite"])
    if name == "starbucks":
        times["evaluate_pairs"] = run(["evaluate", "--run", str(ft), "--data", data, "--split", "test", "--pairs"])
    (out / f"{name}-times.json").write_text(json.dumps(times))
    return times


def report(a):
    out = Path(a.out)
    rows = []

    def ft_result(name):
        p = out / f"{name}-ft" / "summary.json"
        return json.loads(p.read_text()).get("test") if p.exists() else None

    bm = json.loads((out / "bm25.json").read_text())["bm25"] if (out / "bm25.json").exists() else None
    if bm:
        rows.append(("BM25 (bm25s)", bm))
    for name, label in [("scratch", "same encoder, no pretraining"), ("retromae", "RetroMAE"),
                        ("dupmae", "DupMAE ([CLS] reduced + top-k lexical)"),
                        ("dupmae-cls", "DupMAE pretraining, [CLS] only (finetune --pool cls)"),
                        ("starbucks", "Starbucks (full size)")]:
        r = ft_result(name)
        if r:
            rows.append((label, r))
    lines = ["| model | nDCG@10 | MRR@10 | Recall@100 |", "|---|---|---|---|"]
    for label, r in rows:
        lines.append(f"| {label} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | {r['recall@100']:.4f} |")
    p = out / "starbucks-ft" / "retrieval-test.json"
    if p.exists():
        pairs = json.loads(p.read_text())["pairs"]
        lines += ["", "| (layer, dim) | nDCG@10 | MRR@10 | Recall@100 |", "|---|---|---|---|"]
        for k, r in pairs.items():
            lines.append(f"| ({k.replace('x', ', ')}) | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | "
                         f"{r['recall@100']:.4f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["retromae", "dupmae", "starbucks", "scratch", "bm25", "dupmae-cls"])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-text-scifact"))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=6000)
    ap.add_argument("--passage-words", type=int, default=40)
    ap.add_argument("--steps", type=int, default=400, help="pretraining steps (RetroMAE, DupMAE)")
    ap.add_argument("--sb-steps", type=int, default=150, help="pretraining steps (Starbucks, ~4x costlier per step)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ft-steps", type=int, default=150)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--ft-lr", type=float, default=2e-4)
    ap.add_argument("--pairs", nargs="*", default=None, help="Starbucks pairs (default: scaled paper pairs)")
    a = ap.parse_args()
    if not Path(a.data).is_dir():
        raise SystemExit(f"{a.data}: SciFact BEIR folder not found")
    if a.stage:
        print(json.dumps(stage(a, a.stage)))
    if a.report:
        report(a)
