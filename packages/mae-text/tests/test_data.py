import json

import pytest

from mae_core.errors import DataError
from mae_text.data import (PairDataset, TextDataConfig, build_text_files, load_beir, pydocs_retrieval, read_corpus,
                           stdlib_docstrings)
from mae_text.tokenizer import encode_texts, load_tokenizer, train_wordpiece


def test_tokenizer_trains_on_small_corpus(corpus_texts, tmp_path):
    tok = train_wordpiece(corpus_texts, vocab_size=300)
    assert 50 < tok.get_vocab_size() <= 300
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    enc = encode_texts(tok, ["The quick brown fox", "Whole word masking"], max_len=32)
    assert enc.input_ids[:, 0].tolist() == [2, 2]  # [CLS]
    w = enc.word_ids[0][enc.word_ids[0] >= 0].tolist()
    assert w == sorted(w) and set(w) == {0, 1, 2, 3}  # one id per word, shared by its pieces
    # other scripts and emoji do not crash; unseen characters become [UNK]
    enc = encode_texts(tok, ["😀🚀 日本語のテキスト Ελληνικά العربية", "", "a " * 100], max_len=16)
    assert enc.input_ids.shape == (3, 16)
    assert enc.truncated == 1
    assert (enc.input_ids[0] == 1).any()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    assert load_tokenizer(path).get_vocab_size() == tok.get_vocab_size()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")


def test_jsonl_errors_name_the_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": "fine"}) + "\n\n" + "{broken\n")
    with pytest.raises(DataError, match=r"c.jsonl:3: invalid JSON"):
        read_corpus(p)
    p.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"title": "no text"}) + "\n")
    with pytest.raises(DataError, match=r"c.jsonl:2: missing field 'text'"):
        read_corpus(p)


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="empty"):
        read_corpus(tmp_path / "empty.txt")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        build_text_files(TextDataConfig(path=str(tmp_path / "e.jsonl")), "train")
    with pytest.raises(DataError, match="no .txt or .jsonl"):
        read_corpus(tmp_path / "nothing" if (tmp_path / "nothing").mkdir() is None else None)


def test_text_files_and_long_passages(tmp_path):
    (tmp_path / "a.txt").write_text("first passage here\n\nsecond one " + "word " * 250)
    ds = build_text_files(TextDataConfig(path=str(tmp_path / "a.txt"), passage_words=100, test_fraction=0.0),
                          "train")
    assert len(ds) == 4  # the 252-word paragraph becomes 3 passages
    assert all(s["text"].startswith("a ") for s in ds)  # titled with the file name


def test_beir_loading(beir_dir):
    rs = load_beir(beir_dir, "test")
    assert len(rs.corpus) == 12 and sorted(rs.queries) == ["q10", "q11", "q8", "q9"]
    assert rs.skipped_queries == 13 - 4  # the other split's queries and the orphan query
    assert len(PairDataset(load_beir(beir_dir, "train"))) == 8
    with pytest.raises(DataError, match="dev.tsv: not found; splits with relevance judgements: test, train"):
        load_beir(beir_dir, "dev")
    with open(beir_dir / "qrels" / "test.tsv", "a") as fh:
        fh.write("q_missing\td0\t1\n")
    assert load_beir(beir_dir, "test").dropped_judgements == 1


def test_embedded_corpus():
    docs = stdlib_docstrings()
    assert len(docs) > 1000
    names = {d[0] for d in docs}
    assert "json.dumps" in names
    rs = pydocs_retrieval("test")
    assert len(rs.queries) > 100 and all(len(v) == 1 for v in rs.qrels.values())
