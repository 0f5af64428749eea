"""DupMAE (RetroMAE v2, Liu et al., 2023): RetroMAE plus a bag-of-words objective on the ordinary tokens, so that the
encoder's token outputs carry a second, lexical representation.

* BoW (as the reference ``DupMAECollator`` / ``DupMAEForPretraining``): the encoder's MLM logits are max-pooled
  over every real position after [CLS] ([SEP] included) into one vocabulary-sized vector ``r``; the target gives
  each distinct token t of the text weight ``1 / n``, n = the text's token count with repeats (the reference
  *assigns* ``weight[t] = 1 / n`` per occurrence, so a repeated token still gets 1 / n and the target sums to
  distinct / n); loss ``-sum_t target_t log softmax(r)_t``, weight 0.1, added to RetroMAE's encoder MLM + decoder
  losses. The decoder's query stream is ``LayerNorm([CLS] + position)`` (the reference passes it through BERT's
  embedding layer; RetroMAE adds the two without the norm).
* Representation: the [CLS] output reduced by a linear layer, concatenated with the top-k entries (kept in place,
  the rest zero) of the lexical vector ``w_v = max_i phi(z_iv)`` over the ordinary tokens i, where ``z_i`` are the
  MLM-head (LPU) logits of token i; scored by inner product.
  ``phi`` (``lexical_weighting``): ``relu`` is the paper's ReLU activation; ``log1p`` (default) is ``log(1 + ReLU)``,
  the log-saturated term weight of SPLADE-max (Formal et al., 2021) for the same max-pooled MLM-head vocabulary
  vectors. Why the default saturates: after a short pretraining the MLM head predicts the corpus' frequent tokens at
  every position, so the ReLU vector is nearly the same for every text (cosine ~1 between texts) and is 2-4x longer
  than the reduced [CLS]. Its inner products then dominate the score and, because they carry almost no
  text-specific signal, the contrastive fine-tuning stalls at chance (SciFact: nDCG@10 0.000). The log saturation
  bounds each term weight's size and gradient (1 / (1 + z)), so the [CLS] part and the text-specific part of the
  lexical vector can learn; it changes nothing when the head is confident only about the text's own tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.errors import ConfigError
from mae_core.models.mae import ModelOutput

from .retromae import RetroMAE, RetroMAEConfig


@dataclass
class DupMAEConfig(RetroMAEConfig):
    bow_weight: float = field(0.1, "weight of the bag-of-words loss")
    reduce_dim: int = field(0, "size of the linearly reduced [CLS] part of the representation (0 = embed_dim / 2)")
    topk: int = field(256, "vocabulary entries kept in the lexical part of the representation")
    lexical_weighting: str = field("log1p", "term weight of the lexical part: log1p = log(1 + ReLU(logit)) "
                                            "(SPLADE's saturation), relu = ReLU(logit) (the paper's activation)")


WEIGHTINGS = ("log1p", "relu")


def term_weights(vec: torch.Tensor, weighting: str = "log1p") -> torch.Tensor:
    """Non-negative term weights of max-pooled vocabulary logits: ReLU, or log(1 + ReLU)."""
    if weighting == "relu":
        return torch.relu(vec)
    if weighting == "log1p":
        return torch.log1p(torch.relu(vec))
    raise ConfigError(f"model.lexical_weighting must be one of {', '.join(WEIGHTINGS)}, not {weighting!r}")


def bow_vector(logits: torch.Tensor, ordinary: torch.Tensor) -> torch.Tensor:
    """(B, L, V) logits, (B, L) ordinary-token mask -> (B, V) max over the ordinary positions."""
    neg = torch.finfo(logits.dtype).min
    return logits.masked_fill(~ordinary[..., None], neg).max(dim=1).values


def bow_target(input_ids: torch.Tensor, ordinary: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V): ``1 / n`` at every token of the text's ordinary tokens, n = their count with repeats (assigned, not
    summed: a repeated token gets 1 / n once), 0 elsewhere."""
    b = input_ids.shape[0]
    n = ordinary.sum(1, keepdim=True).clamp(min=1).float()
    idx = torch.where(ordinary, input_ids, torch.full_like(input_ids, vocab_size))
    t = torch.zeros(b, vocab_size + 1, device=input_ids.device)
    t.scatter_(1, idx, (1.0 / n).expand_as(idx).contiguous())
    return t[:, :vocab_size] * ordinary.any(1, keepdim=True)


def bow_pool_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The positions the BoW vector is pooled over: every real token but [CLS] (so [SEP] is included)."""
    pool = attention_mask.clone()
    pool[:, 0] = False
    return pool


def bow_loss(logits: torch.Tensor, input_ids: torch.Tensor, ordinary: torch.Tensor,
             pool: torch.Tensor | None = None) -> torch.Tensor:
    """``-sum_t target_t log softmax(max-pooled logits)_t`` averaged over the texts; ``pool`` (default
    ``ordinary``) = the positions max-pooled; texts without ordinary tokens are left out."""
    pool = ordinary if pool is None else pool
    keep = ordinary.any(1) & pool.any(1)
    if not keep.any():
        return logits.sum() * 0.0
    vec = bow_vector(logits[keep].float(), pool[keep])
    target = bow_target(input_ids[keep], ordinary[keep], logits.shape[-1])
    return -(target * F.log_softmax(vec, dim=-1)).sum(1).mean()


class DupMAE(RetroMAE):
    method_name = "dupmae"
    ddp_find_unused_parameters = True  # `reduce` serves encode only: pretraining gives it no gradient
    pool = "dup"

    def build_extra(self) -> None:
        cfg = self.config
        if cfg.lexical_weighting not in WEIGHTINGS:
            raise ConfigError(f"model.lexical_weighting must be one of {', '.join(WEIGHTINGS)}, "
                              f"not {cfg.lexical_weighting!r}")
        self.reduce = nn.Linear(cfg.embed_dim, self.reduce_dim)

    @property
    def reduce_dim(self) -> int:
        return self.config.reduce_dim or max(1, self.config.embed_dim // 2)

    def forward(self, batch: dict, generator=None) -> ModelOutput:
        enc = self.tokenize_text(batch)
        masks = self.draw_masks(enc, generator)
        h = self.run_encoder(masks["enc_in"], enc.attention_mask)
        logits = self.mlm_logits(h)  # (B, L, V): the MLM loss and the bag of words share them
        m = masks["enc_mask"]
        mlm = F.cross_entropy(logits[m].float(), enc.input_ids[m]) if m.any() else logits.sum() * 0.0
        ordinary = enc.attention_mask & ~enc.special
        bow = bow_loss(logits, enc.input_ids, ordinary, bow_pool_mask(enc.attention_mask))
        rec = self.decoder_loss(h[:, 0], enc, masks)
        loss = mlm + rec + self.config.bow_weight * bow
        return ModelOutput(loss=loss, mask=m.float(), metrics={"mlm": float(mlm.detach()), "dec": float(rec.detach()),
                                                               "bow": float(bow.detach())})

    def decoder_query(self, cls: torch.Tensor, length: int) -> torch.Tensor:
        """DupMAE's query stream: BERT's embedding layer applied to [CLS]: LayerNorm([CLS] + position)."""
        return self.embed_norm(cls[:, None] + self.pos_embed[:, :length])

    def lexical(self, h: torch.Tensor, ordinary: torch.Tensor) -> torch.Tensor:
        """(B, V): the top-k term weights ``max_i phi(z_iv)`` (phi and max commute: phi is monotone), in place,
        the other entries 0. A text without ordinary tokens gets the zero vector."""
        vec = term_weights(bow_vector(self.mlm_logits(h), ordinary), self.config.lexical_weighting)
        vec = vec * ordinary.any(1, keepdim=True)
        k = min(self.config.topk, vec.shape[-1])
        top = vec.topk(k, dim=-1)
        return torch.zeros_like(vec).scatter_(-1, top.indices, top.values)

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """``dup`` (default): [reduce(CLS), top-k vocabulary vector]; ``cls`` / ``mean``: RetroMAE's; ``lexical`` /
        ``dense``: either half alone."""
        pool = pool or self.pool
        if pool in ("cls", "mean"):
            return super().encode(batch, pool)
        enc = self.tokenize_text(batch)
        h = self.run_encoder(enc.input_ids, enc.attention_mask)
        dense = self.reduce(h[:, 0])
        if pool == "dense":
            return self.finish(dense)
        lex = self.lexical(h, enc.attention_mask & ~enc.special)
        if pool == "lexical":
            return self.finish(lex)
        if pool == "dup":
            return self.finish(torch.cat([dense, lex], dim=-1))
        raise ConfigError(f"unknown pool {pool!r} for dupmae (dup, dense, lexical, cls or mean)")

    def feature_dim(self, pool: str | None = None) -> int:
        pool = pool or self.pool
        return {"dup": self.reduce_dim + self.config.vocab_size, "dense": self.reduce_dim,
                "lexical": self.config.vocab_size}.get(pool, self.config.embed_dim)
