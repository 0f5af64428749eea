"""Starbucks (Zhuang et al., 2024): one model, many sizes. A fixed list of (layer, dimension) pairs, by default
(2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768) scaled to the model's depth and width.

* Pretraining (Starbucks masked autoencoding, the reference ``BertFor2DMaekMatryoshkaMaskedLM``): nested
  whole-word masks, encoder ``mask_ratio`` 0.2 inside decoder ``decoder_mask_ratio`` 0.4
  (:func:`~mae_text.masking.word_masks`), each input corrupted 80 / 10 / 10. For each pair (L, D), with ``h`` =
  layer L's states truncated to their first D features: the encoder MLM loss on ``h`` (masked tokens), and the MAE
  loss of a vanilla one-layer post-norm BERT self-attention decoder over ``[transform(h)[CLS]; embeddings of the
  decoder-masked input 1..L-1]`` (``transform`` = the MLM head's dense + GELU + LayerNorm), predicting the
  decoder-masked tokens only with the shared MLM head. Loss = mean over pairs of (MLM + MAE) / 2. A truncated
  state is zero-padded to the full width before the shared head, the same as using only the first D input columns
  of its dense weight (the reference slices that weight).
* Fine-tuning (:meth:`Starbucks.contrastive_loss`): the in-batch contrastive loss summed over every pair, plus
  ``kl_weight`` x KL(full model's score distribution || the pair's) for each smaller pair.
* Encoding at a pair (``pool="LxD"``, e.g. ``"2x32"``): the [CLS] output of layer L truncated to its first D dims
  (then L2-normalised when ``similarity`` is ``cos``, so each pair is scored by its own cosine).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mae_core.config import field
from mae_core.errors import ConfigError
from mae_core.models.mae import ModelOutput

from ..masking import corrupt, word_masks
from ..tokenizer import SPECIALS, Encoded
from .retromae import RetroMAE, RetroMAEConfig, duplicate_mask, info_nce

PAPER_PAIRS = ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))


@dataclass
class StarbucksConfig(RetroMAEConfig):
    mask_ratio: float = field(0.2, "fraction of the tokens masked in the encoder input (whole words, inside the "
                                   "decoder's mask)", ge=0, lt=1)
    decoder_mask_ratio: float = field(0.4, "fraction of the tokens masked in the decoder input (whole words)",
                                      ge=0, lt=1)
    pairs: list[str] = field([], "(layer)x(dim) pairs such as 2x32 4x64; empty = the paper's six pairs scaled to "
                                 "the model's depth and width")
    kl_weight: float = field(1.0, "fine-tuning: weight of the KL term toward the full model's scores")


def scaled_pairs(depth: int, dim: int, base=PAPER_PAIRS, base_depth: int = 12, base_dim: int = 768):
    """The paper's pairs mapped to a model of ``depth`` blocks and width ``dim`` (duplicates removed, order kept)."""
    out = []
    for layer, d in base:
        p = (min(depth, max(1, round(layer * depth / base_depth))), min(dim, max(1, round(d * dim / base_dim))))
        if p not in out:
            out.append(p)
    return out


def parse_pairs(items: list[str], depth: int, dim: int) -> list[tuple[int, int]]:
    pairs = []
    for s in items:
        try:
            layer, d = (int(x) for x in str(s).lower().replace(",", "x").split("x"))
        except ValueError:
            raise ConfigError(f"model.pairs: {s!r} is not LAYERxDIM (e.g. 2x32)") from None
        if not (1 <= layer <= depth and 1 <= d <= dim):
            raise ConfigError(f"model.pairs: {s!r} is outside the model (depth {depth}, width {dim})")
        pairs.append((layer, d))
    if not pairs:
        raise ConfigError("model.pairs is empty")
    return pairs


def pair_name(p: tuple[int, int]) -> str:
    return f"{p[0]}x{p[1]}"


def truncate(h: torch.Tensor, dim: int) -> torch.Tensor:
    """Keep the first ``dim`` features and zero the rest (same width, so the shared heads apply)."""
    if dim >= h.shape[-1]:
        return h
    return torch.cat([h[..., :dim], h.new_zeros(*h.shape[:-1], h.shape[-1] - dim)], dim=-1)


class Starbucks(RetroMAE):
    method_name = "starbucks"

    def build_extra(self) -> None:
        cfg = self.config
        self.pairs = (parse_pairs(cfg.pairs, cfg.depth, cfg.embed_dim) if cfg.pairs
                      else scaled_pairs(cfg.depth, cfg.embed_dim))
        self.full = (cfg.depth, cfg.embed_dim)
        if cfg.mask_ratio > cfg.decoder_mask_ratio:
            raise ConfigError(f"model.mask_ratio {cfg.mask_ratio} must not exceed model.decoder_mask_ratio "
                              f"{cfg.decoder_mask_ratio} (the encoder mask lies inside the decoder's)")

    def draw_masks(self, enc: Encoded, generator=None) -> dict:
        """Nested masks (encoder inside decoder) and both corrupted inputs, from ``generator``."""
        cfg = self.config
        enc_mask, dec_mask = (m[:, 0] for m in word_masks(enc.word_ids, enc.attention_mask,
                                                           [cfg.mask_ratio, cfg.decoder_mask_ratio], 1, generator))
        enc_in = corrupt(enc.input_ids, enc_mask, self.mask_id, cfg.vocab_size, len(SPECIALS), generator)
        dec_in = corrupt(enc.input_ids, dec_mask, self.mask_id, cfg.vocab_size, len(SPECIALS), generator)
        return {"enc_mask": enc_mask, "enc_in": enc_in, "dec_mask": dec_mask, "dec_in": dec_in}

    def decode(self, cls: torch.Tensor, enc: Encoded, masks: dict) -> torch.Tensor:
        """The one-layer self-attention decoder over [transform(cls); embeddings of the decoder input]."""
        x = self.embed(masks["dec_in"])
        x = torch.cat([self.mlm_head.transform(cls)[:, None], x[:, 1:]], dim=1)
        return self.decoder(x, attn_mask=enc.attention_mask[:, None, None, :])

    def decoder_loss(self, cls: torch.Tensor, enc: Encoded, masks: dict) -> torch.Tensor:
        """MAE loss on the decoder-masked tokens only."""
        return self.mlm_loss(self.decode(cls, enc, masks), enc.input_ids, masks["dec_mask"])

    def pair_states(self, hidden: list[torch.Tensor], pair: tuple[int, int]) -> torch.Tensor:
        return truncate(self.layer_states(hidden, pair[0]), pair[1])

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        enc = self.tokenize_text(batch)
        masks = self.draw_masks(enc, generator)
        _, hidden = self.run_encoder(masks["enc_in"], enc.attention_mask, return_hidden=True)
        losses, metrics = [], {}
        for pair in self.pairs:
            h = self.pair_states(hidden, pair)
            mlm = self.mlm_loss(h, enc.input_ids, masks["enc_mask"])
            rec = self.decoder_loss(h[:, 0], enc, masks)
            losses.append((mlm + rec) / 2)
            metrics[f"loss_{pair_name(pair)}"] = float(((mlm + rec) / 2).detach())
        loss = torch.stack(losses).mean()
        return ModelOutput(loss=loss, mask=masks["enc_mask"].float(), metrics=metrics)

    def resolve_pair(self, pool: str | None) -> tuple[int, int]:
        if pool in (None, "cls", "full"):
            return self.full
        layer, d = parse_pairs([pool], self.config.depth, self.config.embed_dim)[0]
        return layer, d

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """[CLS] of layer L truncated to D dims for ``pool="LxD"``; the full model for None / "cls"."""
        if pool == "mean":
            return super().encode(batch, pool)
        layer, d = self.resolve_pair(pool)
        enc = self.tokenize_text(batch)
        _, hidden = self.run_encoder(enc.input_ids, enc.attention_mask, return_hidden=True)
        return self.finish(self.layer_states(hidden, layer)[:, 0, :d])

    def encode_pairs(self, batch: dict, pairs=None) -> dict[tuple[int, int], torch.Tensor]:
        """Every pair's embedding from one encoder pass."""
        enc = self.tokenize_text(batch)
        _, hidden = self.run_encoder(enc.input_ids, enc.attention_mask, return_hidden=True)
        return {p: self.finish(self.layer_states(hidden, p[0])[:, 0, :p[1]]) for p in (pairs or self.pairs)}

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.embed_dim if pool == "mean" else self.resolve_pair(pool)[1]

    def contrastive_loss(self, queries, passages, temperature: float = 1.0, **kw):
        """Sum over pairs of the in-batch contrastive loss + kl_weight x KL(full || pair)."""
        pairs = list(self.pairs) + ([self.full] if self.full not in self.pairs else [])
        q = self.encode_pairs({"text": queries}, pairs)
        p = self.encode_pairs({"text": passages}, pairs)
        dup = duplicate_mask(passages, q[self.full].device)
        full_scores = (self.score(q[self.full], p[self.full]) / temperature).float().masked_fill(dup, float("-inf"))
        target = F.softmax(full_scores.detach(), dim=-1)
        total, metrics = 0.0, {}
        kl_w = kw.get("kl_weight", self.config.kl_weight)
        for pair in pairs:
            s = self.score(q[pair], p[pair]) / temperature
            ce, acc = info_nce(s, passages)
            total = total + ce
            if pair != self.full and kl_w:
                logp = F.log_softmax(s.float().masked_fill(dup, float("-inf")), dim=-1)
                kl = (target * (torch.log(target.clamp(min=1e-12)) - logp.clamp(min=-1e4))).sum(-1).mean()
                total = total + kl_w * kl
            metrics[f"acc_{pair_name(pair)}"] = acc
        return total, metrics
