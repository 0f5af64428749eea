import pytest
import torch

from mae_core.checkpoint import from_pretrained, save_pretrained
from mae_core.registry import build_model
from mae_text.retrieval import DualEncoder


@pytest.mark.parametrize("method", ["retromae", "dupmae", "starbucks", "mlm"])
def test_pretraining_loss_falls(tiny_cfg, corpus_texts, method):
    torch.manual_seed(0)
    model = build_model(method, tiny_cfg(method))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = {"text": corpus_texts[:8]}
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        out = model(batch, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    if method == "retromae":
        assert set(out.metrics) == {"mlm", "dec"}
    if method == "dupmae":
        assert "bow" in out.metrics
    if method == "starbucks":
        assert len(out.metrics) == len(model.pairs)
    if method == "mlm":
        assert set(out.metrics) == {"mlm"}


def test_masks_come_from_the_generator(tiny_cfg, corpus_texts):
    model = build_model("retromae", tiny_cfg())
    batch = {"text": corpus_texts[:4]}
    a = model(batch, generator=torch.Generator().manual_seed(5))
    b = model(batch, generator=torch.Generator().manual_seed(5))
    c = model(batch, generator=torch.Generator().manual_seed(6))
    assert a.loss.item() == b.loss.item() and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)


def test_padding_does_not_change_the_embedding(tiny_cfg):
    model = build_model("retromae", tiny_cfg()).eval()
    with torch.no_grad():
        alone = model.encode({"text": ["short text"]})
        padded = model.encode({"text": ["short text", "a much longer text " * 5]})[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


PAIRS = [("fox jumps over dog", "The quick brown fox jumps over the lazy dog."),
         ("vitamin d bone loss", "Vitamin D deficiency is associated with bone loss in older adults."),
         ("antibiotic resistance bacteria", "Antibiotic resistance spreads through gene transfer among bacteria."),
         ("gene expression cold mice", "Gene expression changes after exposure to cold temperatures in mice."),
         ("protein shape function", "Proteins fold into shapes that determine their function in cells."),
         ("gradient descent noise", "Stochastic gradient descent updates parameters with noisy gradients.")]


@pytest.mark.parametrize("method,pool", [("retromae", None), ("starbucks", None), ("dupmae", "cls"),
                                         ("dupmae", None)])
def test_contrastive_finetune_loss_falls(tiny_cfg, method, pool):
    torch.manual_seed(0)
    model = build_model(method, tiny_cfg(method))
    dual = DualEncoder(model, temperature=0.1, **({"pool": pool} if pool else {}))
    opt = torch.optim.AdamW(dual.parameters(), lr=3e-3)
    batch = {"query": [q for q, _ in PAIRS], "passage": [p for _, p in PAIRS]}
    losses = []
    for _ in range(20):
        out = dual(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_save_and_load_round_trip(tiny_cfg, tmp_path):
    model = build_model("dupmae", tiny_cfg("dupmae")).eval()
    save_pretrained(model, tmp_path)
    again = from_pretrained(tmp_path).eval()
    batch = {"text": ["proteins fold", "emoji 🚀 and 日本語 text"]}
    with torch.no_grad():
        assert torch.allclose(model.encode(batch), again.encode(batch))


@pytest.mark.parametrize("method,pools", [("retromae", [None, "mean"]), ("dupmae", [None, "dense", "lexical", "cls"]),
                                          ("starbucks", [None, "1x16", "2x32"])])
def test_cosine_similarity_gives_unit_vectors(tiny_cfg, method, pools):
    import torch.nn.functional as F
    texts = [p for _, p in PAIRS]
    dot = build_model(method, tiny_cfg(method)).eval()
    cos = build_model(method, tiny_cfg(method, similarity="cos")).eval()
    cos.load_state_dict(dot.state_dict())
    with torch.no_grad():
        for pool in pools:
            a, b = dot.encode({"text": texts}, pool=pool), cos.encode({"text": texts}, pool=pool)
            assert torch.allclose(b, F.normalize(a, dim=-1), atol=1e-6), pool
            assert torch.allclose(b.norm(dim=1), torch.ones(len(texts)), atol=1e-5), pool
        if method == "starbucks":
            for v in cos.encode_pairs({"text": texts}).values():
                assert torch.allclose(v.norm(dim=1), torch.ones(len(texts)), atol=1e-5)


def test_finetune_logits_do_not_grow_with_the_width(tiny_cfg, corpus_texts):
    """Session 3's SciFact failure: the [CLS] output is LayerNorm-ed (norm ~ sqrt(width)), so inner products at
    temperature 1 are width x cosine (effective temperature 1/128 for the benchmark's 128-wide encoder). A pretrained
    encoder (embeddings spread apart) whose similarities disagree with the training pairs then starts with a huge
    in-batch loss (SciFact: 13 vs ln 32 = 3.5) and the fine-tuning collapsed its embeddings (mean cosine between
    passages 0.68 -> 0.95; nDCG@10 0.07 vs 0.34 without pretraining). The recipe of `mae-text finetune` (cosine,
    temperature 0.05) bounds the logits by 1 / temperature at every width."""
    import argparse
    import dataclasses
    import math

    from mae_text.commands import finetune_arguments
    ap = argparse.ArgumentParser()
    finetune_arguments(ap)
    recipe = ap.parse_args([])
    assert (recipe.similarity, recipe.temperature) == ("cos", 0.05)

    torch.manual_seed(0)
    model = build_model("retromae", tiny_cfg(embed_dim=128))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for i in range(30):  # a short pretraining spreads the [CLS] embeddings apart
        out = model({"text": corpus_texts[(i * 12) % 36:(i * 12) % 36 + 12]}, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    queries = [q for q, _ in PAIRS]
    passages = [p for _, p in PAIRS[1:] + PAIRS[:1]]  # pairs the pretrained similarities disagree with
    with torch.no_grad():
        e = torch.nn.functional.normalize(model.encode({"text": passages}), dim=-1)
        assert (e @ e.T)[~torch.eye(len(passages), dtype=torch.bool)].mean() < 0.8  # spread apart
        losses = {}
        for sim, temp in [("dot", 1.0), (recipe.similarity, recipe.temperature)]:
            model.config = dataclasses.replace(model.config, similarity=sim)
            q, p = model.encode({"text": queries}), model.encode({"text": passages})
            logits = model.score(q, p) / temp
            losses[sim] = model.contrastive_loss(queries, passages, temperature=temp)[0].item()
            if sim == "cos":
                assert logits.abs().max() <= 1 / temp + 1e-4
    # at temperature 1 the logits scale with the width; the cosine recipe starts within its 1 / temperature bound
    assert losses["cos"] < math.log(len(passages)) + 2 / recipe.temperature
    assert losses["dot"] > 3 * losses["cos"], losses
