"""M3AE's picture: per pair, the image, its 75 % masked copy and the MIM reconstruction (per-patch normalisation
undone with the true patch statistics, visible patches pasted back), beside the report, its whole-word masked copy
and the MLM fill-ins, and the ITM probability of the true pair and of a pair with another image."""
from __future__ import annotations

import textwrap

import torch

from mae_core.data.utils import collate_dicts
from mae_core.layers import patchify, unpatchify
from mae_core.losses import normalize_patches
from mae_core.viz import pyplot, save_figure


def _words(tok, ids) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=False).replace(" ##", "")


@torch.no_grad()
def visualize_m3ae(model, dataset, path, num: int = 4, seed: int = 0):
    model = model.cpu().eval()
    cfg = model.config
    idx = torch.linspace(0, len(dataset) - 1, min(num, len(dataset))).long().tolist()
    labels = getattr(dataset, "labels", None)
    if labels is not None and len(labels.unique()) > 1:  # one pair of each finding first
        firsts = [int((labels == v).nonzero()[0]) for v in labels.unique()]
        idx = (firsts + [i for i in idx if i not in firsts])[:len(idx)]
    batch = collate_dicts([dataset[i] for i in idx])
    out = model(batch, generator=torch.Generator().manual_seed(seed))
    images = batch["image"]
    patches = patchify(images, cfg.patch_size)
    recon = masked = None
    if out.pred is not None:
        _, (mean, scale) = normalize_patches(patches, return_stats=True)
        pred = out.pred * scale + mean if cfg.norm_pix_loss else out.pred
        m = out.mask[..., None]
        recon = unpatchify(pred * m + patches * (1 - m), cfg.patch_size, model.grid, cfg.in_chans)
        masked = unpatchify(patches * (1 - m) - m, cfg.patch_size, model.grid, cfg.in_chans)
    match = torch.sigmoid(model.itm_scores(batch))
    other = dict(batch, image=images.roll(1, 0), key=None)
    mismatch = torch.sigmoid(model.itm_scores(other)) if len(idx) > 1 else None
    tok = model.tokenizer
    enc = model.text.tokenize_text(batch)
    fills = None
    if "mlm_mask" in out.extra:
        pred_ids = model.text.mlm_logits(out.extra["mlm_text"]).argmax(-1)
        fills = torch.where(out.extra["mlm_mask"], pred_ids, enc.input_ids)
    plt = pyplot()
    fig, axes = plt.subplots(len(idx), 4, figsize=(13, 2.2 * len(idx)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 5]})
    show = lambda a, x: a.imshow(x[0] if x.shape[0] == 1 else x.permute(1, 2, 0) * 0.5 + 0.5,  # noqa: E731
                                 cmap="gray", vmin=-1, vmax=1)
    for r in range(len(idx)):
        for c, (title, x) in enumerate((("image", images), ("masked 75 %", masked), ("MIM reconstruction", recon))):
            a = axes[r, c]
            a.axis("off")
            if x is not None:
                show(a, x[r].clamp(-1, 1))
                a.set_title(title, fontsize=8)
        n = int(enc.attention_mask[r].sum())
        lines = [("report", _words(tok, enc.input_ids[r, 1:n - 1]))]
        if fills is not None:
            mask_r = out.extra["mlm_mask"][r, 1:n - 1]
            marked = [f"[{_words(tok, [t])}]" if mk else _words(tok, [t])
                      for t, mk in zip(fills[r, 1:n - 1], mask_r)]
            lines += [("MLM input", _words(tok, out.extra["mlm_input"][r, 1:n - 1])),
                      ("MLM fill-in [ ]", " ".join(marked))]
        itm = f"ITM p(match): true pair {float(match[r]):.2f}"
        if mismatch is not None:
            itm += f", with the image of row {(r - 1) % len(idx) + 1}: {float(mismatch[r]):.2f}"
        lines.append(("", itm))
        a = axes[r, 3]
        a.axis("off")
        a.text(0, 0.95, "\n".join(f"{k + ':' if k else ''} {textwrap.shorten(v, 110)}" for k, v in lines),
               fontsize=8, va="top", family="monospace", transform=a.transAxes)
    fig.suptitle(f"M3AE: {', '.join(f'{k} {v:.3f}' for k, v in out.metrics.items())}", fontsize=9)
    return save_figure(fig, path)
