"""Dense retrieval on top of any mae-text model: exact search, nDCG@10 / MRR@10 / Recall@100, a BM25 baseline
(``bm25s``), and the dual-encoder wrapper that fine-tunes with in-batch negatives through mae-core's Trainer."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from mae_core.models.mae import ModelOutput


# ---- metrics ------------------------------------------------------------------------------------------------------------
def ndcg_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains, as trec_eval's ``ndcg_cut`` (BEIR): gain = relevance grade, discount log2(rank + 1),
    negative grades count as 0, the ideal ranking from every judged document. ``ranked`` is taken as ordered (trec_eval
    itself would re-sort tied scores by document id, descending)."""
    dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], rels: dict[str, int], k: int = 100) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(ranked[:k])) / len(relevant)


def evaluate_rankings(rankings: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 over the judged queries (a judged query without a ranking scores 0)."""
    qs = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    if not qs:
        return {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0, "queries": 0}
    res = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}
    for q in qs:
        ranked = rankings.get(q, [])
        res["ndcg@10"] += ndcg_at_k(ranked, qrels[q], 10)
        res["mrr@10"] += mrr_at_k(ranked, qrels[q], 10)
        res["recall@100"] += recall_at_k(ranked, qrels[q], 100)
    out = {k: v / len(qs) for k, v in res.items()}
    out["queries"] = len(qs)
    return out


# ---- search -----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_texts_with(model, texts: Sequence[str], pool=None, batch_size: int = 128, device="cpu",
                      desc: str = "encode", progress: bool = True, pairs=None):
    """Encode ``texts`` in batches (longest first, to pad little) -> (N, F) float32 on CPU, in the input order.
    With ``pairs`` (Starbucks) returns {pair: (N, d)} from one pass."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunks = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc=desc, unit="batch", leave=False)
    outs: list = []
    for s in chunks:
        batch = {"text": [texts[i] for i in order[s:s + batch_size]]}
        if pairs is not None:
            outs.append({p: v.float().cpu() for p, v in model.encode_pairs(batch, pairs).items()})
        else:
            outs.append(model.encode(batch, pool=pool).float().cpu())
    inv = torch.empty(len(order), dtype=torch.long)
    inv[torch.tensor(order)] = torch.arange(len(order))
    if pairs is not None:
        return {p: torch.cat([o[p] for o in outs])[inv] for p in pairs}
    return torch.cat(outs)[inv]


def exact_search(q: torch.Tensor, d: torch.Tensor, doc_ids: list[str], query_ids: list[str], k: int = 100,
                 chunk: int = 256) -> dict[str, list[str]]:
    """Top-k documents of every query by inner product (brute force, chunked)."""
    k = min(k, d.shape[0])
    out = {}
    for s in range(0, q.shape[0], chunk):
        top = (q[s:s + chunk] @ d.T).topk(k, dim=1).indices
        for qi, row in zip(query_ids[s:s + chunk], top.tolist()):
            out[qi] = [doc_ids[j] for j in row]
    return out


def bm25_rankings(corpus: dict[str, str], queries: dict[str, str], k: int = 100) -> dict[str, list[str]]:
    """BM25 (bm25s, Lucene scoring, k1 = 1.5, b = 0.75, English stop words; Snowball stemming when PyStemmer is
    installed)."""
    import bm25s

    try:
        import Stemmer  # type: ignore
        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", stemmer=stemmer,
                                   show_progress=False), show_progress=False)
    qids = list(queries)
    qtok = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    idx, _ = retriever.retrieve(qtok, k=min(k, len(doc_ids)), show_progress=False)
    return {q: [doc_ids[j] for j in row] for q, row in zip(qids, idx.tolist())}


def dense_rankings(model, rs, pool=None, batch_size: int = 128, device="cpu", k: int = 100, pairs=None):
    doc_ids, qids = list(rs.corpus), list(rs.queries)
    d = encode_texts_with(model, [rs.corpus[i] for i in doc_ids], pool, batch_size, device, "corpus", pairs=pairs)
    q = encode_texts_with(model, [rs.queries[i] for i in qids], pool, batch_size, device, "queries", pairs=pairs)
    if pairs is not None:
        return {p: exact_search(q[p], d[p], doc_ids, qids, k) for p in pairs}
    return exact_search(q, d, doc_ids, qids, k)


# ---- fine-tuning -------------------------------------------------------------------------------------------------------------
class DualEncoder(nn.Module):
    """Wraps a pretrained mae-text model for the Trainer: ``forward`` is the model's own ``contrastive_loss`` on a
    batch of (query, passage) pairs (in-batch negatives)."""

    def __init__(self, backbone: nn.Module, temperature: float = 1.0, **loss_kw):
        super().__init__()
        self.backbone = backbone
        self.temperature = temperature
        self.loss_kw = loss_kw
        self.config = backbone.config

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        loss, metrics = self.backbone.contrastive_loss(list(batch["query"]), list(batch["passage"]),
                                                       temperature=self.temperature, **self.loss_kw)
        return ModelOutput(loss=loss, metrics=metrics)

    def num_layers(self) -> int:
        return self.backbone.num_layers()

    def layer_id(self, name: str) -> int:
        if name.startswith("backbone."):
            return min(self.backbone.layer_id(name[len("backbone."):]), self.num_layers())
        return self.num_layers()
