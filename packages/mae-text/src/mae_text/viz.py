"""Reconstruction picture for text MAEs: the encoder's masked input, its MLM fill-ins, and what the one-layer
decoder rebuilds from the [CLS] embedding (plus its masked context), for the methods that have a decoder."""
from __future__ import annotations

import textwrap

import torch

from mae_core.viz import pyplot, save_figure


def _words(tok, ids) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False).replace(" ##", "")


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
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
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
    fig.text(0.01, 1.04, f"top-1 over {len(scored_idx)} texts - " + "; ".join(parts), fontsize=8, va="top")
    y = 1.0
    for b in range(len(idx)):
        n = int(enc.attention_mask[b].sum())
        rows = [("original", enc.input_ids[b, 1:n - 1]), ("encoder input (masked)", masks["enc_in"][b, 1:n - 1]),
                ("encoder MLM fill-in", filled[b, 1:n - 1])]
        if rebuilt is not None:
            rows.append(("decoder from [CLS]", rebuilt[b, 1:n - 1]))
        for label, ids in rows:
            text = textwrap.shorten(_words(tok, ids), 190)
            fig.text(0.01, y, f"{label}:", fontsize=8, weight="bold", va="top")
            fig.text(0.17, y, text, fontsize=8, va="top", family="monospace")
            y -= 0.055 / max(1, len(idx) / 4)
        y -= 0.03 / max(1, len(idx) / 4)
    return save_figure(fig, path)


def visualize_text(model, dataset, path, num: int = 4, seed: int = 0):
    return save_text_reconstruction(model.cpu(), dataset, path, num=num, seed=seed)
