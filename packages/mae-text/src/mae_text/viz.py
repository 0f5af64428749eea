"""Reconstruction picture for text MAEs: the encoder's masked input, its MLM fill-ins, and what the one-layer
decoder rebuilds from the [CLS] embedding (plus its masked context), for the methods that have a decoder."""
from __future__ import annotations

import textwrap

import torch

from mae_core.viz import pyplot, save_figure


def _words(tok, ids) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False).replace(" ##", "")


@torch.no_grad()
def save_text_reconstruction(model, dataset, path, num: int = 4, seed: int = 0):
    model.eval()
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
