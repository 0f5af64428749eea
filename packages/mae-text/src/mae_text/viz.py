"""Reconstruction picture for text MAEs: the encoder's masked input, its MLM fill-ins, and what the one-layer
decoder rebuilds from the [CLS] embedding (plus its masked context), for the methods that have a decoder."""
from __future__ import annotations

import re

import torch

from mae_core.viz import pyplot, save_figure


_PLAIN_WORD = re.compile(r"[A-Za-z]+[.,;:]?")


def prose_indices(texts: list[str], num: int, min_words: int = 16, min_share: float = 0.85) -> list[int]:
    """``num`` indices spread evenly over the texts that read as prose: at least ``min_words`` words, of which at
    least ``min_share`` are plain words (letters, at most one closing punctuation mark); evenly over all texts when
    fewer than ``num`` qualify. The choice reads the texts only, never the model."""
    def prose(text):
        words = text.split()
        return len(words) >= min_words and sum(bool(_PLAIN_WORD.fullmatch(w)) for w in words) >= min_share * len(words)

    pool = [i for i, t in enumerate(texts) if prose(t)]
    if len(pool) < num:
        pool = list(range(len(texts)))
    return [pool[j] for j in torch.linspace(0, len(pool) - 1, min(num, len(pool))).long().tolist()]


def token_pieces(tok, ids) -> list[str]:
    """Each token as printed in running text: a leading space, except on WordPiece continuations ("##")."""
    pieces = []
    for i in ids:
        s = tok.id_to_token(int(i)) or "[UNK]"
        pieces.append(s[2:] if s.startswith("##") and pieces else " " + s.removeprefix("##"))
    if pieces:
        pieces[0] = pieces[0].lstrip()
    return pieces


RIGHT, WRONG, CONTEXT = "#1a7f37", "#cf222e", "0.55"


def draw_tokens(fig, x: float, y: float, pieces: list[str], colours: list, bold: list[bool] | None = None,
                max_chars: int = 170, fontsize: float = 8) -> dict[tuple, str]:
    """Write ``pieces`` (see :func:`token_pieces`) on one monospace line of ``fig`` from (x, y) in figure
    coordinates, each in its own colour (bold where ``bold``), cut with "[...]" after ``max_chars`` characters.
    One text per (colour, weight), blank where the others write, so the font lays out every layer alike; returns
    those texts by (colour, bold)."""
    bold = bold or [False] * len(pieces)
    layers: dict[tuple, list[str]] = {}
    used = 0
    for piece, colour, b in zip(pieces, colours, bold):
        cut = used + len(piece) > max_chars
        if cut:
            piece, colour, b = " [...]", "0.3", False
        layer = layers.setdefault((colour, b), [])
        layer.extend(" " * (used - len(layer)))
        layer.extend(piece)
        used += len(piece)
        if cut:
            break
    texts = {key: "".join(chars) for key, chars in layers.items()}
    for (colour, b), text in texts.items():
        fig.text(x, y, text, fontsize=fontsize, family="monospace", va="top", color=colour,
                 weight="bold" if b else "normal")
    return texts


@torch.no_grad()
def token_accuracy(model, texts: list[str], seed: int = 0) -> dict:
    """Top-1 accuracy of the encoder's MLM fill-ins (masked tokens) and of the decoder's rebuild (every ordinary
    token), each beside the accuracy of always answering the most frequent target token of the same texts."""
    enc = model.tokenize_text({"text": texts})
    masks = model.draw_masks(enc, torch.Generator().manual_seed(seed))
    h = model.run_encoder(masks["enc_in"], enc.attention_mask)

    def scored(pred, where):
        target = enc.input_ids[where]
        if target.numel() == 0:
            return None
        common = target.mode().values
        return {"acc": float((pred[where] == target).float().mean()), "frequent": float((target == common).float().mean())}

    out = {"mlm": scored(model.mlm_logits(h).argmax(-1), masks["enc_mask"])}
    if model.has_decoder:
        rebuilt = model.mlm_logits(model.decode(h[:, 0], enc, masks)).argmax(-1)
        out["decoder"] = scored(rebuilt, enc.attention_mask.bool() & ~enc.special)
    return out


@torch.no_grad()
def save_text_reconstruction(model, dataset, path, num: int = 4, seed: int = 0, num_scored: int = 64):
    model.eval()
    scored_idx = torch.linspace(0, len(dataset) - 1, min(num_scored, len(dataset))).long().tolist()
    acc = token_accuracy(model, [dataset[i]["text"] for i in scored_idx], seed)
    candidates = torch.linspace(0, len(dataset) - 1, min(1000, len(dataset))).long().unique().tolist()
    idx = [candidates[i] for i in prose_indices([dataset[i]["text"] for i in candidates], num)]
    batch = {"text": [dataset[i]["text"] for i in idx]}
    enc = model.tokenize_text(batch)
    masks = model.draw_masks(enc, torch.Generator().manual_seed(seed))
    h = model.run_encoder(masks["enc_in"], enc.attention_mask)
    mlm = model.mlm_logits(h).argmax(-1)
    filled = torch.where(masks["enc_mask"], mlm, enc.input_ids)
    rebuilt = model.mlm_logits(model.decode(h[:, 0], enc, masks)).argmax(-1) if model.has_decoder else None
    tok = model.tokenizer
    plt = pyplot()
    fig = plt.figure(figsize=(12, 2.3 * len(idx)))
    parts = [f"{name}: {a['acc']:.0%} of tokens right (always the most frequent token: {a['frequent']:.0%})"
             for name, a in (("encoder MLM on masked tokens", acc["mlm"]), ("decoder from [CLS]", acc.get("decoder")))
             if a is not None]
    hidden = masks["enc_mask"]
    shown = f"{float((filled[hidden] == enc.input_ids[hidden]).float().mean()):.0%}" if hidden.any() else "none"
    head = [f"top-1 over {len(scored_idx)} evenly spaced texts - " + "; ".join(parts),
            f"below: {len(idx)} texts that read as prose (at least 85 % plain words; chosen from the texts alone, not "
            f"the model), {shown} of their masked tokens right",
            "masked tokens in bold; predictions green where they are the original token, red where not; grey: given "
            "to the model"]
    fig.text(0.01, 1.085, "\n".join(head), fontsize=8, va="top", linespacing=1.5)
    y = 1.0
    step = 0.055 / max(1, len(idx) / 4)
    for b in range(len(idx)):
        n = int(enc.attention_mask[b].sum())
        where = masks["enc_mask"][b, 1:n - 1].tolist()
        truth = enc.input_ids[b, 1:n - 1]
        rows = [("original", truth, ["black"] * len(where), where),
                ("encoder input (masked)", masks["enc_in"][b, 1:n - 1], [CONTEXT] * len(where), where)]
        fill = filled[b, 1:n - 1]
        rows.append(("encoder MLM fill-in", fill, [(RIGHT if p == t else WRONG) if w else CONTEXT
                                                    for p, t, w in zip(fill.tolist(), truth.tolist(), where)], where))
        if rebuilt is not None:
            dec = rebuilt[b, 1:n - 1]
            rows.append(("decoder from [CLS]", dec, [RIGHT if p == t else WRONG
                                                      for p, t in zip(dec.tolist(), truth.tolist())], None))
        for label, ids, colours, bold in rows:
            fig.text(0.01, y, f"{label}:", fontsize=8, weight="bold", va="top")
            draw_tokens(fig, 0.17, y, token_pieces(tok, ids), colours, bold)
            y -= step
        y -= 0.03 / max(1, len(idx) / 4)
    return save_figure(fig, path)


def visualize_text(model, dataset, path, num: int = 4, seed: int = 0):
    return save_text_reconstruction(model.cpu(), dataset, path, num=num, seed=seed)
