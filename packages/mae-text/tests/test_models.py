import pytest
import torch

from mae_core.checkpoint import from_pretrained, save_pretrained
from mae_core.registry import build_model
from mae_text.retrieval import DualEncoder


@pytest.mark.parametrize("method", ["retromae", "dupmae", "starbucks"])
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
