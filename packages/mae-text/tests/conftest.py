import json

import pytest

from mae_core.testing import single_thread

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Masked autoencoders reconstruct missing tokens from the visible context.",
    "Dense retrieval encodes queries and passages into vectors and ranks by inner product.",
    "Whole word masking hides every piece of a chosen word at once.",
    "The decoder sees the sentence embedding and a heavily masked copy of the input.",
    "Bag of words targets make the token outputs predict the lexicon of the passage.",
    "Matryoshka embeddings can be truncated to fewer dimensions and layers.",
    "Proteins fold into shapes that determine their biological function in cells.",
    "Vitamin D deficiency is associated with bone loss in older adults.",
    "Stochastic gradient descent updates parameters with noisy gradient estimates.",
    "Gene expression changes after exposure to cold temperatures in mice.",
    "Antibiotic resistance spreads through horizontal gene transfer among bacteria.",
]


@pytest.fixture
def corpus_texts():
    return [f"{s} {SENTENCES[(i + 3) % len(SENTENCES)]}" for i, s in enumerate(SENTENCES * 3)]


TINY = dict(embed_dim=32, depth=2, num_heads=2, max_len=32, vocab_size=300)


@pytest.fixture
def tiny_cfg(corpus_texts):
    """Factory: config of a method with a tokenizer trained on the tiny corpus."""
    import mae_text  # noqa: F401
    from mae_core.registry import get_method
    from mae_text.commands import adapt_text
    from mae_text.data import TextDataConfig

    def make(method="retromae", **kw):
        cls = get_method(method, "text").config_cls
        return adapt_text(cls(**{**TINY, **kw}), TextDataConfig(), None, texts=corpus_texts)
    return make


@pytest.fixture
def beir_dir(tmp_path):
    """A tiny BEIR folder: 12 documents, 12 queries (train 8, test 4), one query without judgements."""
    d = tmp_path / "beir"
    (d / "qrels").mkdir(parents=True)
    from_words = [s.split() for s in SENTENCES]
    with open(d / "corpus.jsonl", "w") as fh:
        for i, s in enumerate(SENTENCES):
            fh.write(json.dumps({"_id": f"d{i}", "title": " ".join(from_words[i][:2]), "text": s}) + "\n")
    with open(d / "queries.jsonl", "w") as fh:
        for i, w in enumerate(from_words):
            fh.write(json.dumps({"_id": f"q{i}", "text": " ".join(w[2:7])}) + "\n")
        fh.write(json.dumps({"_id": "q_orphan", "text": "no judgement for me"}) + "\n")
    with open(d / "qrels" / "train.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for i in range(8):
            fh.write(f"q{i}\td{i}\t1\n")
    with open(d / "qrels" / "test.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for i in range(8, 12):
            fh.write(f"q{i}\td{i}\t1\n")
    return d


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread (mae_core.testing.single_thread)."""
    with single_thread():
        yield
