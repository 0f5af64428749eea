"""Text readers and datasets.

* plain text files (passages separated by blank lines; the file name is the title), JSONL (``{"text", "title"?,
  "_id"?}`` per line), or a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``);
* the embedded default ``pydocs``: the docstrings of the Python standard library that ships with this interpreter
  (module, class and function docstrings read with ``ast``, nothing imported or downloaded), split into passages
  titled with their dotted name. ``pydocs-qa`` turns them into a retrieval task: the summary line of a docstring is
  the query, the rest of it the relevant passage.

Samples are ``{"text": str, "label": int}`` (label = source file / top-level module, for the core probes); the model
tokenizes (its tokenizer travels with it).
"""
from __future__ import annotations

import ast
import csv
import functools
import json
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from mae_core.config import field
from mae_core.errors import DataError


@dataclass
class TextDataConfig:
    path: str | None = field(None, "text file (.txt / .jsonl), a folder of them, or a BEIR folder (corpus.jsonl)")
    tokenizer: str | None = field(None, "a local tokenizer.json to use instead of training a WordPiece one")
    vocab_size: int = field(8000, "WordPiece vocabulary size when the tokenizer is trained on the corpus", ge=1)
    max_passages: int | None = field(None, "use at most this many passages (deterministic subset)", ge=1)
    passage_words: int = field(48, "split longer texts into passages of at most this many words (0 = never)", ge=0)
    test_fraction: float = field(0.05, "fraction of passages held out as the test split", ge=0, lt=1)
    seed: int = field(0, "seed of the train / test split")


# ---- readers -------------------------------------------------------------------------------------------------------------
def read_jsonl(path: Path, require: tuple[str, ...] = ("text",)) -> list[dict]:
    rows = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    i = 0
    with fh:
        lines = iter(fh)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except UnicodeDecodeError:  # raised while decoding a chunk ahead: find the line from the bytes
                raw = Path(path).read_bytes()
                try:
                    raw.decode("utf-8")
                    at = len(raw)
                except UnicodeDecodeError as e:
                    at = e.start
                line_no = raw[:at].count(b"\n") + 1
                raise DataError(f"{path}:{line_no}: not UTF-8 text (byte {at})") from None
            i += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: invalid JSON ({e.msg})") from None
            except RecursionError:
                raise DataError(f"{path}:{i}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
            for k in require:
                if k not in obj:
                    raise DataError(f"{path}:{i}: missing field {k!r}")
                if not isinstance(obj[k], str):
                    raise DataError(f"{path}:{i}: field {k!r} must be a string")
            rows.append(obj)
    return rows


def read_text_file(path: Path) -> list[dict]:
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    paras = [" ".join(p.split()) for p in raw.split("\n\n")]
    return [{"title": path.stem, "text": p} for p in paras if p]


def read_corpus(path: str | Path) -> list[dict]:
    """Passages ``{"title", "text", "source"}`` from a .txt / .jsonl file, a folder of them, or a BEIR folder."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            files = [path / "corpus.jsonl"]
        else:
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
            if not files:
                raise DataError(f"{path}: no .txt or .jsonl files (and no corpus.jsonl) in this folder")
    else:
        files = [path]
    out = []
    for src, f in enumerate(files):
        if f.suffix == ".jsonl":
            rows = read_jsonl(f)
            for r in rows:
                out.append({"title": str(r.get("title") or ""), "text": r["text"],
                            "source": src if len(files) > 1 else 0, "_id": str(r.get("_id", ""))})
        elif f.suffix in (".txt", ".md", ".rst", "") or len(files) == 1:
            for r in read_text_file(f):
                out.append({**r, "source": src})
        else:
            raise DataError(f"{f}: unsupported file type (use .txt or .jsonl)")
    out = [r for r in out if (r["title"] + r["text"]).strip()]
    if not out:
        raise DataError(f"{path}: the corpus is empty (no non-blank passage)")
    return out


# ---- embedded corpus: Python standard library docstrings -----------------------------------------------------------------
_SKIP = {"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3", "__pycache__", "ensurepip",
         "turtledemo", "pydoc_data"}


@functools.lru_cache(maxsize=1)
def stdlib_docstrings() -> tuple[tuple[str, str, str], ...]:
    """(dotted name, top-level module, docstring) for every module / class / function docstring of >= 8 words."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not (_SKIP & set(p.relative_to(root).parts)))
    out = []
    for f in files:
        rel = f.relative_to(root).with_suffix("")
        mod = ".".join(p for p in rel.parts if p != "__init__")
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}.{child.name}"
                    d = ast.get_docstring(child)
                    if d and len(d.split()) >= 8:
                        out.append((name, mod.split(".")[0], d))
                    if isinstance(child, ast.ClassDef):
                        visit(child, name)

        d = ast.get_docstring(tree)
        if d and len(d.split()) >= 8:
            out.append((mod, mod.split(".")[0], d))
        visit(tree, mod)
    if not out:
        raise DataError(f"{root}: found no docstrings in the Python standard library")
    return tuple(out)


def split_words(text: str, n: int) -> list[str]:
    words = text.split()
    if n <= 0 or len(words) <= n:
        return [" ".join(words)]
    return [" ".join(words[i:i + n]) for i in range(0, len(words), n)]


def pydocs_passages(passage_words: int = 100) -> list[dict]:
    mods = sorted({m for _, m, _ in stdlib_docstrings()})
    index = {m: i for i, m in enumerate(mods)}
    out = []
    for name, mod, doc in stdlib_docstrings():
        for i, chunk in enumerate(split_words(doc, passage_words)):
            out.append({"title": name if i == 0 else f"{name} ({i + 1})", "text": chunk, "source": index[mod]})
    return out


# ---- datasets ------------------------------------------------------------------------------------------------------------
def passage_text(row: dict) -> str:
    t, x = row.get("title") or "", row.get("text") or ""
    return f"{t} {x}".strip() if t else x


class TextCorpus(Dataset):
    """Passages as ``{"text": title + text, "label": source}``; ``all_texts`` (both splits) trains the tokenizer."""

    def __init__(self, rows: list[dict], cfg: TextDataConfig, split: str, name: str):
        if split not in ("train", "test"):
            raise DataError(f"unknown split {split!r}")
        long_rows = []
        for r in rows:
            if cfg.passage_words and len(r["text"].split()) > cfg.passage_words and r.get("split_ok", True):
                for i, c in enumerate(split_words(r["text"], cfg.passage_words)):
                    long_rows.append({**r, "text": c, "title": r["title"] if i == 0 else f"{r['title']} ({i + 1})"})
            else:
                long_rows.append(r)
        rows = long_rows
        order = list(range(len(rows)))
        random.Random(cfg.seed).shuffle(order)
        if cfg.max_passages is not None:
            order = order[: cfg.max_passages]
        n_test = int(round(len(order) * cfg.test_fraction)) if len(order) > 1 else 0
        chosen = order[len(order) - n_test:] if split == "test" else order[: len(order) - n_test]
        self.name = name
        self.all_texts = [passage_text(rows[i]) for i in order]
        self.texts = [passage_text(rows[i]) for i in sorted(chosen)]
        self.labels = [int(rows[i].get("source", 0)) for i in sorted(chosen)]
        self.num_classes = max([int(r.get("source", 0)) for r in rows], default=0) + 1
        self.config = cfg

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {"text": self.texts[i], "label": self.labels[i]}


def build_pydocs(cfg: TextDataConfig, split: str) -> TextCorpus:
    return TextCorpus(pydocs_passages(0), cfg, split, "pydocs")


def build_text_files(cfg: TextDataConfig, split: str) -> TextCorpus:
    if not cfg.path:
        raise DataError("the text dataset needs --data PATH (a .txt / .jsonl file, a folder, or a BEIR folder)")
    return TextCorpus(read_corpus(cfg.path), cfg, split, str(cfg.path))


# ---- retrieval sets (BEIR layout) ----------------------------------------------------------------------------------------
@dataclass
class RetrievalSet:
    corpus: dict[str, str]  # doc id -> title + text
    queries: dict[str, str]  # query id -> text (only queries that have relevance judgements)
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance > 0}
    skipped_queries: int = 0  # queries of queries.jsonl without judgements in this split
    dropped_judgements: int = 0  # judgements whose query or document does not exist
    name: str = ""


def available_splits(path: Path) -> list[str]:
    q = path / "qrels"
    return sorted(p.stem for p in q.glob("*.tsv")) if q.is_dir() else []


def load_beir(path: str | Path, split: str = "test") -> RetrievalSet:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a BEIR folder (expected corpus.jsonl, queries.jsonl, qrels/{split}.tsv)")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (path / name).is_file():
            raise DataError(f"{path}: missing {name} (BEIR layout)")
    qfile = path / "qrels" / f"{split}.tsv"
    if not qfile.is_file():
        raise DataError(f"{qfile}: not found; splits with relevance judgements: "
                        f"{', '.join(available_splits(path)) or 'none'}")
    corpus = {}
    for i, r in enumerate(read_jsonl(path / "corpus.jsonl", ("_id", "text")), 1):
        corpus[r["_id"]] = passage_text({"title": str(r.get("title") or ""), "text": r["text"]})
    if not corpus:
        raise DataError(f"{path / 'corpus.jsonl'}: the corpus is empty")
    queries_all = {r["_id"]: r["text"] for r in read_jsonl(path / "queries.jsonl", ("_id", "text"))}
    qrels: dict[str, dict[str, int]] = {}
    dropped = 0
    with open(qfile, encoding="utf-8") as fh:
        for i, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or (i == 1 and row[0] in ("query-id", "query_id", "qid")):
                continue
            if len(row) < 3:
                raise DataError(f"{qfile}:{i}: expected query-id, corpus-id, score separated by tabs")
            try:
                score = int(float(row[2]))
            except ValueError:
                raise DataError(f"{qfile}:{i}: score {row[2]!r} is not a number") from None
            if row[0] not in queries_all or row[1] not in corpus:
                dropped += 1
                continue
            if score > 0:
                qrels.setdefault(row[0], {})[row[1]] = score
    if not qrels:
        raise DataError(f"{qfile}: no judgement refers to a query of queries.jsonl and a document of corpus.jsonl")
    queries = {q: queries_all[q] for q in queries_all if q in qrels}
    return RetrievalSet(corpus, queries, qrels, skipped_queries=len(queries_all) - len(queries),
                        dropped_judgements=dropped, name=str(path))


def pydocs_retrieval(split: str = "test", test_fraction: float = 0.2, seed: int = 0,
                     max_queries: int | None = None) -> RetrievalSet:
    """Embedded retrieval task: query = the summary line of a docstring, relevant passage = its body."""
    pairs = []
    for name, _, doc in stdlib_docstrings():
        parts = doc.strip().split("\n\n", 1)
        summary, body = " ".join(parts[0].split()), " ".join(parts[1].split()) if len(parts) > 1 else ""
        if len(summary.split()) >= 4 and len(body.split()) >= 12:
            pairs.append((name, summary, body))
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_test = int(len(order) * test_fraction)
    chosen = order[:n_test] if split == "test" else order[n_test:]
    if max_queries:
        chosen = chosen[:max_queries]
    corpus = {f"d{i}": f"{pairs[i][0].split('.')[0]} {pairs[i][2]}" for i in range(len(pairs))}
    queries = {f"q{i}": pairs[i][1] for i in chosen}
    qrels = {f"q{i}": {f"d{i}": 1} for i in chosen}
    return RetrievalSet(corpus, queries, qrels, name=f"pydocs-qa/{split}")


class PairDataset(Dataset):
    """(query, relevant passage) pairs of a retrieval set, one sample per judgement."""

    def __init__(self, rs: RetrievalSet):
        self.pairs = [(rs.queries[q], rs.corpus[d]) for q in sorted(rs.qrels) for d in sorted(rs.qrels[q])]
        if not self.pairs:
            raise DataError(f"{rs.name}: no (query, passage) pairs to train on")

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        q, p = self.pairs[i]
        return {"query": q, "passage": p}
