"""SciFact (BEIR layout) retrieval benchmark for mae-text, run by hand, in stages that save their run folders
(so that each locked run stays short):

    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --pretrain retromae --steps 500
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --pretrain mlm --steps 500
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --pretrain dupmae --steps 500
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --pretrain starbucks --steps 150 --pairs 1x16 2x32 3x64 4x128
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --finetune scratch retromae dupmae --seeds 0 1
    OMP_NUM_THREADS=1 uv run python benchmarks/text_scifact.py --bm25
    uv run python benchmarks/text_scifact.py --report                  # tables (markdown) from the run folders

Every stage calls the ``mae-text`` CLI: ``pretrain`` on the corpus, ``finetune`` on the training claims (the same
recipe for every model: cosine similarity, temperature 0.05, lr 2e-4, 150 steps; it evaluates on the test claims at
the end), ``evaluate --pairs`` for Starbucks. ``scratch``
is the RetroMAE architecture and tokenizer with random weights (``finetune --scratch --run <retromae>``);
``dupmae-cls`` fine-tunes the DupMAE-pretrained encoder on its [CLS] alone. Small model, short sequences, a fixed
number of optimizer steps: sized for a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mae_text.cli import main as mae_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "scifact" / "beir_format"
FINETUNED = ["scratch", "retromae", "mlm", "dupmae", "dupmae-cls", "starbucks", "starbucks-scratch"]
LABELS = {"scratch": "same encoder, no pretraining", "retromae": "RetroMAE",
          "mlm": "plain MLM (same encoder, whole-word 0.3, no decoder)",
          "dupmae": "DupMAE ([CLS] reduced + top-k lexical)",
          "dupmae-cls": "DupMAE pretraining, [CLS] only (finetune --pool cls)",
          "starbucks": "Starbucks (full size, 4x128)",
          "starbucks-scratch": "Starbucks fine-tuning loss, no pretraining (full size)"}


def model_flags(a):
    return ["--embed-dim", str(a.dim), "--depth", str(a.depth), "--num-heads", str(a.heads), "--max-len",
            str(a.max_len), "--vocab-size", str(a.vocab)]


def train_flags(steps, batch, lr, seed):
    return ["--max-steps", str(steps), "--epochs", "1000", "--batch-size", str(batch), "--lr", str(lr),
            "--seed", str(seed), "--no-progress", "--log-every", "25", "--device", "cpu"]


def run(argv):
    t0 = time.time()
    print("$ mae-text " + " ".join(argv), flush=True)
    rc = mae_text(argv)
    if rc:
        raise SystemExit(f"mae-text {argv[0]} failed with status {rc}")
    return round(time.time() - t0, 1)


def times_file(out: Path) -> Path:
    return out / "times.json"


def record(out: Path, key: str, seconds: float) -> None:
    p = times_file(out)
    t = json.loads(p.read_text()) if p.exists() else {}
    t[key] = seconds
    p.write_text(json.dumps(t, indent=1))


def pretrain(a, method):
    out = Path(a.out)
    extra = ["--pairs", *a.pairs] if (method == "starbucks" and a.pairs) else []
    s = run(["pretrain", "--method", method, "--data", str(a.data), *model_flags(a), *extra,
             "--passage-words", str(a.passage_words), "--test-fraction", "0.01",
             *train_flags(a.steps, a.batch, a.lr, 0), "--warmup-epochs", "0.05", "--out", str(out / method),
             "--overwrite"])
    record(out, f"pretrain-{method}", s)


def finetune(a, name, seed):
    out = Path(a.out)
    ft = out / f"{name}-ft-s{seed}"
    base = {"scratch": "retromae", "dupmae-cls": "dupmae", "starbucks-scratch": "starbucks"}.get(name, name)
    extra = (["--scratch"] if name in ("scratch", "starbucks-scratch") else []) + \
        (["--pool", "cls"] if name == "dupmae-cls" else [])
    extra += ["--similarity", a.ft_similarity, "--temperature", str(a.ft_temperature)]
    s = run(["finetune", "--run", str(out / base), *extra, "--data", str(a.data), "--split", "train",
             *train_flags(a.ft_steps, a.ft_batch, a.ft_lr, seed), "--out", str(ft), "--overwrite"])
    record(out, f"finetune-{name}-s{seed}", s)
    if name.startswith("starbucks"):
        s = run(["evaluate", "--run", str(ft), "--data", str(a.data), "--split", "test", "--pairs"])
        record(out, f"evaluate-pairs-{name}-s{seed}", s)


def cls_cosine(a, runs, n=128):
    """Mean cosine between the [CLS] embeddings of the first ``n`` corpus documents, before fine-tuning (random init
    of the first run's architecture, then each run's pretrained weights)."""
    import torch
    import torch.nn.functional as F

    from mae_core.api import load_run
    with open(Path(a.data) / "corpus.jsonl") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(n), f)]
    for path, weights in [(runs[0], False)] + [(r, True) for r in runs]:
        model = load_run(path, weights=weights).model.eval()
        with torch.no_grad():
            e = F.normalize(model.encode({"text": texts}, pool="cls"), dim=-1)
        off = (e @ e.T)[~torch.eye(len(texts), dtype=torch.bool)]
        print(f"{path} ({'pretrained' if weights else 'random init'}): mean [CLS] cosine {off.mean():.3f}")


def report(a):
    out = Path(a.out)
    metrics = ("ndcg@10", "mrr@10", "recall@100")

    def fmt(vals):
        if len(vals) == 1:
            return f"{vals[0]:.4f}"
        return f"{statistics.mean(vals):.4f} ({', '.join(f'{v:.3f}' for v in vals)})"

    lines = ["| model | nDCG@10 | MRR@10 | Recall@100 |", "|---|---|---|---|"]
    if (out / "bm25.json").exists():
        bm = json.loads((out / "bm25.json").read_text())["bm25"]
        lines.append("| BM25 (bm25s) | " + " | ".join(f"{bm[m]:.4f}" for m in metrics) + " |")
    for name in FINETUNED:
        res = [json.loads(p.read_text()).get("test") for p in sorted(out.glob(f"{name}-ft-s*/summary.json"))]
        res = [r for r in res if r]
        if res:
            lines.append(f"| {LABELS[name]} | " + " | ".join(fmt([r[m] for r in res]) for m in metrics) + " |")
    for name in ("starbucks", "starbucks-scratch"):
        tables = sorted(out.glob(f"{name}-ft-s*/retrieval-test.json"))
        if tables:
            per_seed = [json.loads(p.read_text())["pairs"] for p in tables]
            lines += ["", f"{name}:", "", "| (layer, dim) | nDCG@10 | MRR@10 | Recall@100 |", "|---|---|---|---|"]
            for k in per_seed[0]:
                lines.append(f"| ({k.replace('x', ', ')}) | " + " | ".join(fmt([t[k][m] for t in per_seed])
                                                                      for m in metrics) + " |")
    if times_file(out).exists():
        lines += ["", "times (s): " + times_file(out).read_text().replace("\n", "")]
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain", choices=["retromae", "mlm", "dupmae", "starbucks"])
    ap.add_argument("--finetune", nargs="*", choices=FINETUNED, default=[])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help="fine-tuning seeds")
    ap.add_argument("--bm25", action="store_true")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--cls-cosine", nargs="*", default=[], help="runs: mean cosine between documents' [CLS]")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-text-scifact"))
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=6000)
    ap.add_argument("--passage-words", type=int, default=40)
    ap.add_argument("--steps", type=int, default=500, help="pretraining steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ft-steps", type=int, default=150)
    ap.add_argument("--ft-batch", type=int, default=32)
    ap.add_argument("--ft-lr", type=float, default=2e-4)
    ap.add_argument("--ft-similarity", default="cos", choices=["cos", "dot"])
    ap.add_argument("--ft-temperature", type=float, default=0.05)
    ap.add_argument("--pairs", nargs="*", default=None, help="Starbucks pairs (default: scaled paper pairs)")
    a = ap.parse_args()
    if not Path(a.data).is_dir():
        raise SystemExit(f"{a.data}: SciFact BEIR folder not found")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if a.pretrain:
        pretrain(a, a.pretrain)
    for seed in a.seeds if a.finetune else []:
        for name in a.finetune:
            finetune(a, name, seed)
    if a.bm25:
        s = run(["evaluate", "--data", str(a.data), "--split", "test", "--bm25", "--out",
                 str(Path(a.out) / "bm25.json")])
        record(Path(a.out), "bm25", s)
    if a.report:
        report(a)
    if a.cls_cosine:
        cls_cosine(a, a.cls_cosine)
