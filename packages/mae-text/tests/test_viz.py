import torch

from mae_core.registry import build_model
from mae_text.viz import token_accuracy


def test_token_accuracy_against_the_most_frequent_token_baseline(tiny_cfg, corpus_texts):
    """A model that always answers the most frequent target token scores exactly the baseline; one that always
    answers a token absent from the targets scores 0; the baseline is the mode's share counted by hand."""
    model = build_model("retromae", tiny_cfg()).eval()
    texts = corpus_texts[:8]
    enc = model.tokenize_text({"text": texts})
    masks = model.draw_masks(enc, torch.Generator().manual_seed(0))
    target = enc.input_ids[masks["enc_mask"]]
    counts = torch.bincount(target)
    frequent = int(counts.argmax())
    share = float(counts.max()) / target.numel()
    vocab = model.config.vocab_size

    def always(token):
        return lambda h: torch.nn.functional.one_hot(torch.full(h.shape[:-1], token), vocab).float()

    model.mlm_logits = always(frequent)
    acc = token_accuracy(model, texts, seed=0)
    assert abs(acc["mlm"]["frequent"] - share) < 1e-6
    assert abs(acc["mlm"]["acc"] - share) < 1e-6
    assert 0 < acc["decoder"]["frequent"] <= 1
    absent = next(t for t in range(5, vocab) if not (enc.input_ids == t).any())
    model.mlm_logits = always(absent)
    acc = token_accuracy(model, texts, seed=0)
    assert acc["mlm"]["acc"] == 0.0 and acc["decoder"]["acc"] == 0.0
