"""DupMAE (RetroMAE v2, Liu et al., 2023): RetroMAE plus a bag-of-words objective on the ordinary tokens, so that the
encoder's token outputs carry a second, lexical representation.

* BoW: the encoder's MLM logits are max-pooled over the ordinary (non-special, non-padding) positions into one
  vocabulary-sized vector, trained with cross-entropy against the uniform distribution over the input's unique
  tokens, weight 0.1, added to RetroMAE's encoder MLM + decoder losses.
* Representation: the [CLS] output reduced by a linear layer, concatenated with the top-k entries of that vocabulary
  vector (kept in place, the rest zero, negative values clipped at 0); scored by inner product.
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


def bow_vector(logits: torch.Tensor, ordinary: torch.Tensor) -> torch.Tensor:
    """(B, L, V) logits, (B, L) ordinary-token mask -> (B, V) max over the ordinary positions."""
    neg = torch.finfo(logits.dtype).min
    return logits.masked_fill(~ordinary[..., None], neg).max(dim=1).values


def bow_target(input_ids: torch.Tensor, ordinary: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) uniform distribution over the unique ordinary tokens of each input."""
    b = input_ids.shape[0]
    idx = torch.where(ordinary, input_ids, torch.full_like(input_ids, vocab_size))
    t = torch.zeros(b, vocab_size + 1, device=input_ids.device).scatter_(1, idx, 1.0)[:, :vocab_size]
    return t / t.sum(1, keepdim=True).clamp(min=1.0)


def bow_loss(logits: torch.Tensor, input_ids: torch.Tensor, ordinary: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between softmax(max-pooled logits) and the uniform bag of words; texts without ordinary
    tokens are left out."""
    keep = ordinary.any(1)
    if not keep.any():
        return logits.sum() * 0.0
    vec = bow_vector(logits[keep].float(), ordinary[keep])
    target = bow_target(input_ids[keep], ordinary[keep], logits.shape[-1])
    return -(target * F.log_softmax(vec, dim=-1)).sum(1).mean()


class DupMAE(RetroMAE):
    method_name = "dupmae"
    pool = "dup"

    def build_extra(self) -> None:
        cfg = self.config
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
        bow = bow_loss(logits, enc.input_ids, ordinary)
        rec = self.decoder_loss(h[:, 0], enc, masks)
        loss = mlm + rec + self.config.bow_weight * bow
        return ModelOutput(loss=loss, mask=m.float(), metrics={"mlm": float(mlm.detach()), "dec": float(rec.detach()),
                                                               "bow": float(bow.detach())})

    def lexical(self, h: torch.Tensor, ordinary: torch.Tensor) -> torch.Tensor:
        """(B, V) top-k of the max-pooled vocabulary vector, in place, clipped at 0."""
        vec = bow_vector(self.mlm_logits(h), ordinary)
        k = min(self.config.topk, vec.shape[-1])
        top = vec.topk(k, dim=-1)
        return torch.zeros_like(vec).scatter_(-1, top.indices, top.values.clamp(min=0))

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
            return dense
        lex = self.lexical(h, enc.attention_mask & ~enc.special)
        if pool == "lexical":
            return lex
        if pool == "dup":
            return torch.cat([dense, lex], dim=-1)
        raise ConfigError(f"unknown pool {pool!r} for dupmae (dup, dense, lexical, cls or mean)")

    def feature_dim(self, pool: str | None = None) -> int:
        pool = pool or self.pool
        return {"dup": self.reduce_dim + self.config.vocab_size, "dense": self.reduce_dim,
                "lexical": self.config.vocab_size}.get(pool, self.config.embed_dim)
