import json

import pytest
import torch

from mae_text.cli import main

TINY_FLAGS = ["--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--max-len", "32", "--vocab-size", "300",
              "--batch-size", "8", "--epochs", "1", "--no-progress", "--device", "cpu"]


@pytest.fixture
def corpus_file(tmp_path, corpus_texts):
    p = tmp_path / "corpus.jsonl"
    p.write_text("".join(json.dumps({"title": f"t{i}", "text": t}) + "\n" for i, t in enumerate(corpus_texts)))
    return p


def test_cli_end_to_end(tmp_path, corpus_file, beir_dir, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(corpus_file), *TINY_FLAGS, "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "retromae" and cfg["config"]["tokenizer_json"]  # the tokenizer is saved with the run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] >= 4
    assert (run / "pictures" / "reconstruction.png").stat().st_size > 1000
    assert main(["probe", "--run", str(run), "--probe", "knn", "--k", "3"]) == 0
    ft = tmp_path / "ft"
    assert main(["finetune", "--run", str(run), "--data", str(beir_dir), "--epochs", "2", "--batch-size", "4",
                 "--no-progress", "--device", "cpu", "--out", str(ft)]) == 0
    s = json.loads((ft / "summary.json").read_text())
    assert s["train_pairs"] == 8 and 0.0 <= s["test"]["ndcg@10"] <= 1.0
    assert main(["evaluate", "--run", str(ft), "--data", str(beir_dir), "--bm25"]) == 0
    res = json.loads((ft / "retrieval-test.json").read_text())
    assert res["queries"] == 4 and res["model"]["queries"] == 4
    assert res["bm25"]["ndcg@10"] > 0.5  # queries are words of their document
    out = capsys.readouterr().out
    assert "queries of queries.jsonl have no judgement" in out
    assert "not fine-tuned" not in out  # a fine-tuned run: no hint
    assert main(["evaluate", "--run", str(run), "--data", str(beir_dir)]) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if "not fine-tuned" in line]
    assert len(hint) == 1 and f"mae-text finetune --run {run} --data {beir_dir}" in hint[0], hint
    emb = tmp_path / "emb.safetensors"
    assert main(["encode", "--run", str(ft), "--data", str(corpus_file), "--out", str(emb)]) == 0
    from safetensors.torch import load_file
    e = load_file(str(emb))["embeddings"]
    assert e.shape == (36, 32)
    # the fine-tuning recipe (cosine) is saved with the fine-tuned model: its embeddings are unit vectors
    assert json.loads((ft / "config.json").read_text())["config"]["similarity"] == "cos"
    assert torch.allclose(e.norm(dim=1), torch.ones(36), atol=1e-4)


def test_cli_starbucks_pairs(tmp_path, corpus_file, beir_dir):
    run = tmp_path / "sb"
    assert main(["pretrain", "--method", "starbucks", "--pairs", "1x8", "2x32", "--data", str(corpus_file),
                 *TINY_FLAGS, "--out", str(run)]) == 0
    assert main(["evaluate", "--run", str(run), "--data", str(beir_dir), "--pairs"]) == 0
    res = json.loads((run / "retrieval-test.json").read_text())
    assert set(res["pairs"]) == {"1x8", "2x32"}
    assert (run / "pictures" / "starbucks-test.png").stat().st_size > 1000


def test_cli_bad_input(tmp_path, beir_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n')
    assert main(["pretrain", "--data", str(bad), *TINY_FLAGS, "--out", str(tmp_path / "r")]) == 2
    assert "bad.jsonl:2: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing half-written
    assert main(["evaluate", "--data", str(beir_dir), "--split", "dev", "--bm25"]) == 2
    assert "splits with relevance judgements: test, train" in capsys.readouterr().err
    assert main(["finetune", "--data", str(beir_dir)]) == 2
    assert main(["evaluate", "--run", str(tmp_path / "nope"), "--data", str(beir_dir)]) == 2


def test_retromae_on_the_embedded_docs_trains_small_and_long_and_a_user_corpus_gets_the_method_recipe(capsys):
    # the embedded run fills in words and its [CLS] probe gains over a random encoder only with a 2000-token
    # vocabulary, 2 blocks and 7 epochs at batch 16, lr 2e-3 (docs/benchmarks.md); the method's own model and recipe
    # stay for a user's corpus and the other methods
    import mae_core
    from mae_core.runconfig import resolve_run_config

    mae_core.registry.autoload()
    emb = resolve_run_config("retromae", domain="text")
    assert (emb.train.lr, emb.train.batch_size, emb.train.epochs) == (2e-3, 16, 7)
    assert (emb.model.vocab_size, emb.model.depth) == (2000, 2)
    user = resolve_run_config("retromae", domain="text", dataset="text-files")
    assert (user.train.lr, user.train.batch_size, user.train.epochs) == (5e-4, 32, 3)
    assert (user.model.vocab_size, user.model.depth) == (6000, 4)
    assert resolve_run_config("retromae", domain="text", overrides={"depth": 3}).model.depth == 3
    assert resolve_run_config("mlm", domain="text").train.lr == 5e-4
    assert resolve_run_config("retromae", domain="text", overrides={"lr": 1e-4}).train.lr == 1e-4
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.002)" in out and "samples per step and process (default: 16)" in out
