import torch

from mae_core.registry import build_model
from mae_text.viz import RIGHT, WRONG, draw_tokens, prose_indices, token_accuracy, token_pieces


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


def test_token_pieces_rebuild_the_words(tiny_cfg):
    """Pieces of a tokenised sentence joined give the lower-cased sentence with spaces around punctuation: '##'
    continuations glue to the piece before, every other token starts a word."""
    model = build_model("retromae", tiny_cfg())
    enc = model.tokenize_text({"text": ["Whole word masking hides a chosen word."]})
    n = int(enc.attention_mask[0].sum())
    ids = enc.input_ids[0, 1:n - 1]
    pieces = token_pieces(model.tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == "whole word masking hides a chosen word ."
    assert any(not p.startswith(" ") for p in pieces[1:])  # the tiny vocabulary splits at least one word


def test_draw_tokens_layers_line_up_and_cut():
    """Each (colour, weight) layer holds its pieces at their column and blanks elsewhere: overlaying the layers gives
    the joined line back; past ``max_chars`` the line ends with ' [...]'."""
    from mae_core.viz import pyplot
    fig = pyplot().figure()
    pieces, colours = ["in", " in", "comp", "at", "ible", " words"], ["k", RIGHT, WRONG, "k", RIGHT, "k"]
    layers = draw_tokens(fig, 0, 1, pieces, colours, bold=[False, True, True, False, True, False])
    assert set(layers) == {("k", False), (RIGHT, True), (WRONG, True)}
    line = "".join(pieces)
    overlay = [" "] * len(line)
    for text in layers.values():
        for i, c in enumerate(text):
            if c != " ":
                assert overlay[i] == " "
                overlay[i] = c
    assert "".join(overlay) == line
    assert layers[(WRONG, True)] == "     comp"
    cut = draw_tokens(fig, 0, 1, pieces, colours, max_chars=8)
    assert "".join(cut.values()).endswith(" [...]") and "comp" not in "".join(cut.values())
    assert len(fig.texts) == 3 + len(cut)


def test_prose_indices_pick_prose_evenly_and_fall_back():
    """Texts of at least 16 words, 85 % of them plain words, are the pool; four are taken evenly from it. With too
    few such texts the pick spreads over all texts."""
    prose = "the parser reads every line of the file and returns a list of tokens for the caller to use"
    code = "x = f(a, b) >>> g(1) [2, 3] == {4: 5} os.path.join(a, b) // 7 ** 8 ; if x: y() else z() 9"
    short = "returns a list"
    texts = [code, prose, short, prose + ".", code, prose + " too", prose + " again", prose + " now", code]
    assert prose_indices(texts, 4) == [1, 3, 5, 7]  # pool [1, 3, 5, 6, 7] at positions 0, 1.33, 2.67, 4 (floored)
    assert prose_indices(texts, 2) == [1, 7]
    assert prose_indices([code, short, prose], 2) == [0, 2]
