"""The commands mae-text adds to mae-core's CLI: ``finetune`` (retrieval fine-tuning with in-batch negatives; it
replaces the classification fine-tune), ``evaluate`` (nDCG@10 / MRR@10 / Recall@100, BM25 baseline, Starbucks
(layer, dimension) table and plot) and ``encode`` (embeddings of a corpus to a safetensors file)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from mae_core.errors import ConfigError, DataError


def _retrieval_set(data: str | None, split: str, max_queries: int | None = None):
    from .data import load_beir, pydocs_retrieval

    if data:
        rs = load_beir(data, split)
    else:
        if split not in ("train", "test"):
            raise DataError(f"the embedded pydocs-qa set has the splits train and test, not {split!r}")
        rs = pydocs_retrieval(split)
    if max_queries:
        keep = sorted(rs.queries)[:max_queries]
        rs.queries = {q: rs.queries[q] for q in keep}
        rs.qrels = {q: rs.qrels[q] for q in keep}
    return rs


def _note_skipped(rs) -> None:
    if rs.skipped_queries:
        print(f"note: {rs.skipped_queries} queries of queries.jsonl have no judgement in this split and are skipped")
    if rs.dropped_judgements:
        print(f"note: {rs.dropped_judgements} judgements name a query or document that does not exist; ignored")


def _device(name: str):
    from mae_core.train import resolve_device
    return resolve_device(name)


# ---- finetune ------------------------------------------------------------------------------------------------------------
FT_DEFAULTS = {"epochs": 3, "batch_size": 32, "lr": 2e-4, "warmup_epochs": 0.2, "weight_decay": 0.01,
               "betas": (0.9, 0.999), "log_every": 10}


def finetune_arguments(p) -> None:
    from mae_core.cli.flags import add_dataclass_flags
    from mae_core.train import TrainConfig

    g = p.add_argument_group("what to fine-tune")
    g.add_argument("--run", metavar="DIR", help="a pretraining run (its tokenizer and architecture are used)")
    g.add_argument("--scratch", action="store_true", help="random initialisation: of --run's architecture and "
                   "tokenizer when --run is given, else of --method with a tokenizer trained on the corpus")
    g.add_argument("--method", default="retromae", help="method for --scratch without --run")
    g.add_argument("--data", metavar="PATH", help="BEIR folder (default: the embedded pydocs-qa task)")
    g.add_argument("--split", default="train", help="qrels split with the training pairs")
    g.add_argument("--eval-split", default="test", help="split evaluated after training ('none' to skip)")
    g.add_argument("--similarity", choices=["cos", "dot"], default="cos", help="score of a (query, passage) pair: "
                   "cos = cosine (L2-normalised embeddings), dot = raw inner product; saved with the fine-tuned "
                   "model, so evaluate / encode use it too")
    g.add_argument("--temperature", type=float, default=0.05, help="scores are divided by it in the contrastive "
                   "loss (0.05 with cosine as SimCSE / Contriever; RetroMAE's Tevatron recipe: dot with 1)")
    g.add_argument("--kl-weight", type=float, default=None, help="Starbucks: weight of the KL term (default: the "
                   "model's kl_weight)")
    g.add_argument("--layer-decay", type=float, default=1.0, help="layer-wise lr decay (1 = none)")
    g.add_argument("--pool", default=None, help="representation trained and evaluated (default: the method's; "
                   "e.g. cls for DupMAE's [CLS] alone)")
    g.add_argument("--out", metavar="DIR", help="run directory (default: <run>/finetune-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    g.add_argument("--eval-batch-size", type=int, default=128, help="batch size when encoding for evaluation")
    taken = {"method", "data", "run", "out", "overwrite", "split", "scratch", "temperature"}
    p.set_defaults(_train_map=add_dataclass_flags(p, TrainConfig, "train", taken, "training (TrainConfig)",
                                                  shown_defaults=FT_DEFAULTS))


def _train_config(args):
    from mae_core.config import from_dict
    from mae_core.train import TrainConfig

    vals = dict(FT_DEFAULTS)
    for dest, (_, name) in args._train_map.items():
        if hasattr(args, dest):
            vals[name] = getattr(args, dest)
    return from_dict(TrainConfig, vals, "flags: train")


def load_model(run: str):
    from mae_core.api import load_run

    return load_run(run).model


def is_fine_tuned(run: str) -> bool:
    """Whether ``run`` is the output of ``mae-text finetune`` (its config.yaml has a ``finetune`` section)."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(run) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and "finetune" in cfg


def scratch_model(method: str, corpus_texts: list[str], run: str | None = None):
    from mae_core.api import load_run
    from mae_core.registry import build_model, get_method

    if run:  # the run's architecture, freshly initialised
        return load_run(run, weights=False).model
    spec = get_method(method, "text")
    from .data import TextDataConfig
    model_cfg = adapt_text(spec.config_cls(), TextDataConfig(), None, texts=corpus_texts)
    return build_model(method, model_cfg)


def run_finetune_cmd(args) -> int:
    from mae_core.checkpoint import save_pretrained
    from mae_core.rundir import RunDir, default_run_path
    from mae_core.train import Trainer, seed_everything
    from mae_core.train.optim import param_groups

    from .data import PairDataset
    from .retrieval import DualEncoder

    if not args.run and not args.scratch:
        raise ConfigError("give --run DIR (a pretraining run) or --scratch")
    tc = _train_config(args)
    rs = _retrieval_set(args.data, args.split)
    _note_skipped(rs)
    pairs = PairDataset(rs)
    seed_everything(tc.seed)
    if args.scratch:
        model = scratch_model(args.method, list(rs.corpus.values()), args.run)
    else:
        model = load_model(args.run)
    method = getattr(model, "method_name", args.method)
    model.config = dataclasses.replace(model.config, similarity=args.similarity)
    if hasattr(model, "decoder"):
        model.decoder.requires_grad_(False)  # only the encoder (and representation layers) is fine-tuned
    out = Path(args.out) if args.out else (Path(args.run) / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
                                           if args.run else default_run_path("text", method + "-scratch"))
    run = RunDir(out, overwrite=args.overwrite)
    kw = {"kl_weight": args.kl_weight} if args.kl_weight is not None else {}
    if args.pool:
        kw["pool"] = args.pool
    dual = DualEncoder(model, temperature=args.temperature, **kw)
    cfg = {"method": method, "finetune": {"run": args.run, "scratch": args.scratch, "data": args.data or "pydocs-qa",
                                          "split": args.split, "similarity": args.similarity,
                                          "temperature": args.temperature,
                                          "kl_weight": args.kl_weight, "layer_decay": args.layer_decay, "pool": args.pool,
                                          "pairs": len(pairs)},
           "train": dataclasses.asdict(tc)}
    run.write_config(cfg)

    def groups(m):
        return param_groups(m, tc.weight_decay, layer_decay=args.layer_decay if args.layer_decay < 1 else None,
                            layer_id=m.layer_id, num_layers=m.num_layers())

    trainer = Trainer(dual, pairs, tc, run_dir=run, groups_fn=groups, collate_fn=_collate_pairs, run_config=cfg)
    summary = trainer.fit()
    model = trainer.raw_model.backbone.cpu()
    if hasattr(model, "decoder"):
        model.decoder.requires_grad_(True)
    save_pretrained(model, out, extra={"run_config": {"method": method, "config_from": args.run}})
    summary.update({"method": method, "train_pairs": len(pairs)})
    if args.eval_split and args.eval_split != "none":
        try:
            rs_eval = _retrieval_set(args.data, args.eval_split)
        except DataError as e:
            print(f"note: no evaluation ({e})")
        else:
            res = evaluate_model(model, rs_eval, pool=args.pool, batch_size=args.eval_batch_size,
                                 device=_device(tc.device))
            summary[f"{args.eval_split}"] = res
            print(f"{args.eval_split}: " + json.dumps(res))
    run.write_summary(summary)
    print(f"run directory: {out}")
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}))
    return 0


def _collate_pairs(samples):
    return {"query": [s["query"] for s in samples], "passage": [s["passage"] for s in samples]}


# ---- evaluate ----------------------------------------------------------------------------------------------------------------
def evaluate_model(model, rs, pool=None, batch_size=128, device="cpu", pairs=None):
    import torch

    from .retrieval import dense_rankings, evaluate_rankings
    from .tokenizer import count_truncated

    model.to(device)
    t0 = time.time()
    trunc = count_truncated(model.tokenizer, list(rs.corpus.values()), model.config.max_len)
    with torch.no_grad():
        ranks = dense_rankings(model, rs, pool=pool, batch_size=batch_size, device=device, pairs=pairs)
    if pairs is not None:
        return {f"{p[0]}x{p[1]}": {**evaluate_rankings(r, rs.qrels), "truncated_docs": trunc}
                for p, r in ranks.items()}
    res = evaluate_rankings(ranks, rs.qrels)
    res.update({"truncated_docs": trunc, "time_s": round(time.time() - t0, 1)})
    return res


def evaluate_arguments(p) -> None:
    p.add_argument("--run", metavar="DIR", help="a pretraining or fine-tuning run directory")
    p.add_argument("--data", metavar="PATH", help="BEIR folder (default: the embedded pydocs-qa task)")
    p.add_argument("--split", default="test", help="qrels split to evaluate")
    p.add_argument("--pool", default=None, help="representation: cls (RetroMAE), dup / dense / lexical (DupMAE), "
                   "LAYERxDIM (Starbucks), mean")
    p.add_argument("--pairs", action="store_true", help="Starbucks: evaluate every (layer, dim) pair and plot")
    p.add_argument("--bm25", action="store_true", help="also run the BM25 baseline (bm25s)")
    p.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N judged queries")
    p.add_argument("--batch-size", type=int, default=128, help="texts per encoding batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", metavar="JSON", help="results file (default: <run>/retrieval-<split>.json)")


def run_evaluate(args) -> int:
    from mae_core.checkpoint import atomic_write_json

    from .retrieval import bm25_rankings, evaluate_rankings

    if not args.run and not args.bm25:
        raise ConfigError("give --run DIR (a run to evaluate) and/or --bm25")
    rs = _retrieval_set(args.data, args.split, args.max_queries)
    _note_skipped(rs)
    results: dict = {"data": args.data or "pydocs-qa", "split": args.split, "queries": len(rs.queries),
                     "docs": len(rs.corpus)}
    if args.bm25:
        t0 = time.time()
        results["bm25"] = {**evaluate_rankings(bm25_rankings(rs.corpus, rs.queries), rs.qrels),
                           "time_s": round(time.time() - t0, 1)}
        print("bm25: " + json.dumps(results["bm25"]))
    if args.run:
        model = load_model(args.run)
        if not is_fine_tuned(args.run):
            print(f"note: {args.run} is a pretraining run: its encoder was not fine-tuned for retrieval, so expect low "
                  f"scores; fine-tune it first: mae-text finetune --run {args.run}"
                  + (f" --data {args.data}" if args.data else ""))
        dev = _device(args.device)
        if args.pairs:
            if not hasattr(model, "encode_pairs"):
                raise ConfigError(f"--pairs needs a Starbucks model; {args.run} is {model.method_name}")
            table = evaluate_model(model, rs, batch_size=args.batch_size, device=dev, pairs=model.pairs)
            results["pairs"] = table
            for k, v in table.items():
                print(f"{k:>10}: ndcg@10 {v['ndcg@10']:.4f}  mrr@10 {v['mrr@10']:.4f}  recall@100 {v['recall@100']:.4f}")
            pic = plot_pairs(table, Path(args.run) / "pictures" / f"starbucks-{args.split}.png",
                             title=f"{Path(args.run).name}: {results['data']} {args.split}")
            results["picture"] = str(pic)
            print(f"wrote {pic}")
        else:
            results["model"] = {"method": model.method_name, "pool": args.pool or model.pool,
                                **evaluate_model(model, rs, pool=args.pool, batch_size=args.batch_size, device=dev)}
            print("model: " + json.dumps(results["model"]))
    out = args.out or (str(Path(args.run) / f"retrieval-{args.split}.json") if args.run else None)
    if out:
        atomic_write_json(out, results)
        print(f"wrote {out}")
    return 0


def plot_pairs(table: dict, path, title: str = ""):
    """nDCG@10 of each Starbucks (layer, dim) pair: a line over the pairs and a layer x dim grid."""
    from mae_core.viz import pyplot, save_figure

    plt = pyplot()
    names = list(table)
    vals = [table[n]["ndcg@10"] for n in names]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(range(len(names)), vals, "o-")
    ax[0].set_xticks(range(len(names)), names, rotation=30)
    ax[0].set_xlabel("layer x dimension")
    ax[0].set_ylabel("nDCG@10")
    ax[0].grid(alpha=0.3)
    layers = sorted({int(n.split("x")[0]) for n in names})
    dims = sorted({int(n.split("x")[1]) for n in names})
    import numpy as np
    grid = np.full((len(layers), len(dims)), np.nan)
    for n, v in zip(names, vals):
        a, b = (int(x) for x in n.split("x"))
        grid[layers.index(a), dims.index(b)] = v
    im = ax[1].imshow(grid, origin="lower", cmap="viridis")
    ax[1].set_xticks(range(len(dims)), dims)
    ax[1].set_yticks(range(len(layers)), layers)
    ax[1].set_xlabel("dimension")
    ax[1].set_ylabel("layer")
    for i in range(len(layers)):
        for j in range(len(dims)):
            if not np.isnan(grid[i, j]):
                ax[1].text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax[1])
    fig.suptitle(title)
    return save_figure(fig, path)


# ---- encode -----------------------------------------------------------------------------------------------------------------
def encode_arguments(p) -> None:
    p.add_argument("--run", metavar="DIR", required=True, help="a pretraining or fine-tuning run directory")
    p.add_argument("--data", metavar="PATH", required=True, help="texts: .txt / .jsonl file, folder, BEIR folder")
    p.add_argument("--pool", default=None, help="representation (see `evaluate --help`)")
    p.add_argument("--batch-size", type=int, default=128, help="texts per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--out", metavar="FILE", required=True, help="output .safetensors (tensor 'embeddings', ids in "
                   "the metadata)")


def run_encode(args) -> int:
    from safetensors.torch import save_file

    from mae_core.checkpoint import atomic_write, check_writable

    from .data import passage_text, read_corpus
    from .retrieval import encode_texts_with
    from .tokenizer import count_truncated

    check_writable(args.out, "embeddings")  # a read-only --out fails now, not after encoding
    rows = read_corpus(args.data)
    model = load_model(args.run).to(_device(args.device))
    texts = [passage_text(r) for r in rows]
    n = count_truncated(model.tokenizer, texts, model.config.max_len)
    if n:
        print(f"note: {n} of {len(texts)} texts are longer than {model.config.max_len} tokens and were truncated")
    emb = encode_texts_with(model, texts, args.pool, args.batch_size, _device(args.device)).contiguous()
    ids = [r.get("_id") or str(i) for i, r in enumerate(rows)]
    atomic_write(args.out, lambda tmp: save_file({"embeddings": emb}, tmp, metadata={"ids": json.dumps(ids)}))
    print(f"wrote {args.out}: {tuple(emb.shape)}")
    return 0


# ---- tokenizer from the data ------------------------------------------------------------------------------------------
_TOK_CACHE: dict = {}


def adapt_text(model_cfg, data_cfg, dataset, texts: list[str] | None = None):
    """Give the model its tokenizer: the one it already has, ``data.tokenizer`` (a tokenizer.json), or a WordPiece
    trained on the corpus; count texts longer than ``max_len``."""
    from .tokenizer import count_truncated, fingerprint, load_tokenizer, tokenizer_from_json, train_wordpiece

    texts = texts if texts is not None else dataset.all_texts
    if model_cfg.tokenizer_json:
        tok = tokenizer_from_json(model_cfg.tokenizer_json)
    elif getattr(data_cfg, "tokenizer", None):
        tok = load_tokenizer(data_cfg.tokenizer)
    else:
        key = fingerprint(texts, model_cfg.vocab_size)
        if key not in _TOK_CACHE:
            t0 = time.time()
            _TOK_CACHE[key] = train_wordpiece(texts, vocab_size=model_cfg.vocab_size).to_str()
            print(f"trained a WordPiece tokenizer on {len(texts)} texts in {time.time() - t0:.1f}s")
        tok = tokenizer_from_json(_TOK_CACHE[key])
    n = count_truncated(tok, texts, model_cfg.max_len)
    if n:
        print(f"note: {n} of {len(texts)} texts are longer than {model_cfg.max_len} tokens and are truncated")
    if dataset is not None:
        dataset.truncated = n
    return dataclasses.replace(model_cfg, tokenizer_json=tok.to_str(), vocab_size=tok.get_vocab_size())
