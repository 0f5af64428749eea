"""RetroMAE (Xiao et al., EMNLP 2022): a BERT-style encoder trained with whole-word MLM at 0.3, plus a one-layer
decoder that must rebuild the whole text from the [CLS] embedding and a heavily masked (0.5) copy of the input under
*enhanced decoding*:

* query stream  ``h1 = [CLS] embedding + position embedding of each slot``;
* key / value (content) stream ``h2 = [[CLS] embedding, embeddings of the *original* tokens 1..L-1 (with
  positions)]``: the decoder's input is not corrupted; the 0.5 decoder masking acts only through
* a position-specific attention mask (B x L x L, :func:`~mae_text.masking.retromae_decoder_visibility`): row i
  sees the positions left visible by one whole-word mask at ``decoder_mask_ratio`` drawn as the reference collator
  does, never itself; [CLS] and [SEP] are always visible;
* the decoder is one post-norm BERT layer (:class:`~mae_text.methods.layers.PostNormLayer`);
* every token except [CLS] / [SEP] / padding is reconstructed with the MLM head shared with the encoder.

The encoder's whole-word mask is sampled the reference way too (:func:`~mae_text.masking.word_masks`).

``loss = encoder MLM + decoder reconstruction``. The sentence embedding is the [CLS] output of the encoder.
Fine-tuning for retrieval is :meth:`RetroMAE.contrastive_loss` (in-batch negatives; scores = inner products of
the embeddings, L2-normalised when ``similarity`` is ``cos``, divided by a temperature).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_core.config import field
from mae_core.errors import ConfigError, DataError
from mae_core.layers.blocks import init_weights
from mae_core.models.mae import MaskedAutoencoder, ModelOutput, TransformerEncoder

from ..masking import corrupt, retromae_decoder_visibility, whole_word_mask
from ..tokenizer import CLS, MASK, SPECIALS, Encoded, encode_texts, tokenizer_from_json
from .layers import PostNormLayer


SIMILARITIES = ("dot", "cos")


@dataclass
class RetroMAEConfig:
    tokenizer_json: str = field("", "the WordPiece tokenizer (JSON); set from the data: trained on the corpus or "
                                    "read from --tokenizer, and saved with the run")
    vocab_size: int = field(6000, "vocabulary size of the WordPiece tokenizer trained on the corpus")
    max_len: int = field(64, "tokens per text including [CLS] and [SEP]; longer texts are truncated (and counted)")
    embed_dim: int = field(128, "encoder width")
    depth: int = field(4, "encoder blocks")
    num_heads: int = field(4, "attention heads (encoder and decoder)")
    mlp_ratio: float = field(4.0, "MLP hidden size / width")
    drop_path: float = field(0.0, "stochastic depth of the encoder")
    mask_ratio: float = field(0.3, "fraction of the tokens masked in the encoder input (whole words)", ge=0, lt=1)
    decoder_mask_ratio: float = field(0.5, "fraction of the tokens each decoder row may not attend to (whole "
                                           "words, through the attention mask only)", ge=0, lt=1)
    similarity: str = field("dot", "retrieval score: dot = inner product of the embeddings; cos = inner product of "
                                   "L2-normalised embeddings (encode() returns unit vectors). `mae-text finetune "
                                   "--similarity` sets it (default cos) and it is saved with the fine-tuned run",
                            choices=SIMILARITIES)


class MLMHead(nn.Module):
    """BERT's prediction head: dense + GELU + LayerNorm, then the (tied) token embedding matrix + a bias."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def transform(self, h: torch.Tensor) -> torch.Tensor:
        """BERT's ``BertPredictionHeadTransform``: LayerNorm(GELU(dense(h)))."""
        return self.norm(F.gelu(self.dense(h)))

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(h), embedding, self.bias)


class RetroMAE(MaskedAutoencoder):
    mask_schedule_refused = "whole-word masking reads the config's mask ratios"
    method_name = "retromae"
    pool = "cls"
    has_decoder = True

    def __init__(self, cfg: RetroMAEConfig):
        nn.Module.__init__(self)
        if cfg.embed_dim % cfg.num_heads:
            raise ConfigError(f"model.embed_dim {cfg.embed_dim} is not divisible by model.num_heads {cfg.num_heads}")
        if cfg.max_len < 3:
            raise ConfigError("model.max_len must be at least 3 ([CLS] token [SEP])")
        self.config = cfg
        self.mask_ratio = cfg.mask_ratio
        self._tok = None
        d = cfg.embed_dim
        self.tok_embed = nn.Embedding(cfg.vocab_size, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_len, d))
        self.embed_norm = nn.LayerNorm(d)
        self.encoder = TransformerEncoder(d, cfg.depth, cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                                          drop_path=cfg.drop_path, num_prefix_tokens=0)
        self.mlm_head = MLMHead(d, cfg.vocab_size)
        if self.has_decoder:
            self.decoder = PostNormLayer(d, cfg.num_heads, mlp_ratio=cfg.mlp_ratio)
        self.build_extra()
        self.apply(init_weights)
        nn.init.normal_(self.tok_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def build_extra(self) -> None:
        """Hook for subclasses that add modules (initialised with the rest)."""

    # ---- tokenizer -----------------------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tok is None:
            if not self.config.tokenizer_json:
                raise ConfigError("this model has no tokenizer (model.tokenizer_json is empty): train it through "
                                  "`mae-text pretrain` or give --tokenizer tokenizer.json")
            self._tok = tokenizer_from_json(self.config.tokenizer_json)
            if self._tok.get_vocab_size() > self.config.vocab_size:
                raise ConfigError(f"the tokenizer has {self._tok.get_vocab_size()} tokens but model.vocab_size is "
                                  f"{self.config.vocab_size}")
            self.mask_id = self._tok.token_to_id(MASK)
            self.cls_id = self._tok.token_to_id(CLS)
        return self._tok

    def tokenize_text(self, batch: dict) -> Encoded:
        """The batch's texts (``batch["text"]``) as token ids on the model's device."""
        texts = batch.get("text")
        if texts is None:
            raise DataError(f"a text batch needs the key 'text' (got {sorted(batch)})")
        if isinstance(texts, str):
            texts = [texts]
        enc = encode_texts(self.tokenizer, list(texts), self.config.max_len)
        dev = self.pos_embed.device
        return Encoded(enc.input_ids.to(dev), enc.attention_mask.to(dev), enc.special.to(dev), enc.word_ids.to(dev),
                       enc.truncated)

    # ---- building blocks -------------------------------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_norm(self.tok_embed(ids) + self.pos_embed[:, : ids.shape[1]])

    def run_encoder(self, ids: torch.Tensor, attention_mask: torch.Tensor, return_hidden: bool = False):
        """(B, L) ids -> normed (B, L, D) (and every block's raw output when ``return_hidden``)."""
        attn = attention_mask[:, None, None, :]
        return self.encoder(self.embed(ids), attn_mask=attn, return_hidden=return_hidden)

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlm_head(h, self.tok_embed.weight)

    def layer_states(self, hidden: list[torch.Tensor], layer: int) -> torch.Tensor:
        """Normed output of block ``layer`` (1-based), i.e. the encoder output had it stopped there."""
        return self.encoder.norm(hidden[layer - 1])

    def draw_masks(self, enc: Encoded, generator=None) -> dict:
        """Encoder input (reference whole-word mask at ``mask_ratio``, 80 / 10 / 10 corruption) and the
        enhanced-decoding attention mask (``dec_attn``, B x L x L), all from ``generator``."""
        cfg = self.config
        enc_mask = whole_word_mask(enc.word_ids, enc.attention_mask, cfg.mask_ratio, generator)
        enc_in = corrupt(enc.input_ids, enc_mask, self.mask_id, cfg.vocab_size, len(SPECIALS), generator)
        masks = {"enc_mask": enc_mask, "enc_in": enc_in}
        if self.has_decoder:
            masks["dec_attn"] = retromae_decoder_visibility(enc.word_ids, enc.attention_mask, cfg.decoder_mask_ratio,
                                                            generator)
        return masks

    def mlm_loss(self, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not mask.any():
            return h.sum() * 0.0
        return F.cross_entropy(self.mlm_logits(h[mask]).float(), targets[mask])

    def decoder_query(self, cls: torch.Tensor, length: int) -> torch.Tensor:
        """RetroMAE's query stream: the [CLS] embedding plus each slot's position embedding."""
        return cls[:, None] + self.pos_embed[:, :length]

    def decode(self, cls: torch.Tensor, enc: Encoded, masks: dict) -> torch.Tensor:
        """Enhanced decoding (B, L, D): queries from ``cls`` (B, D), keys / values = [cls, embeddings of the
        original tokens], each row restricted by ``masks["dec_attn"]``."""
        length = enc.input_ids.shape[1]
        kv = torch.cat([cls[:, None], self.embed(enc.input_ids)[:, 1:]], dim=1)
        return self.decoder(self.decoder_query(cls, length), kv, attn_mask=masks["dec_attn"][:, None])

    def decoder_loss(self, cls: torch.Tensor, enc: Encoded, masks: dict) -> torch.Tensor:
        """Rebuild every ordinary token (not [CLS] / [SEP] / padding) from the enhanced decoder's output."""
        targets = enc.attention_mask & ~enc.special
        return self.mlm_loss(self.decode(cls, enc, masks), enc.input_ids, targets)

    # ---- the model contract ------------------------------------------------------------------------------------------------
    def forward(self, batch: dict, generator=None) -> ModelOutput:
        enc = self.tokenize_text(batch)
        masks = self.draw_masks(enc, generator)
        h = self.run_encoder(masks["enc_in"], enc.attention_mask)
        mlm = self.mlm_loss(h, enc.input_ids, masks["enc_mask"])
        rec = self.decoder_loss(h[:, 0], enc, masks)
        loss = mlm + rec
        return ModelOutput(loss=loss, mask=masks["enc_mask"].float(),
                           metrics={"mlm": float(mlm.detach()), "dec": float(rec.detach())})

    def forward_features(self, batch: dict) -> torch.Tensor:
        enc = self.tokenize_text(batch)
        return self.run_encoder(enc.input_ids, enc.attention_mask)

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """Sentence embedding: the [CLS] output (``pool`` "cls"), or the mean of the real tokens ("mean")."""
        pool = pool or self.pool
        enc = self.tokenize_text(batch)
        h = self.run_encoder(enc.input_ids, enc.attention_mask)
        if pool == "cls":
            return self.finish(h[:, 0])
        if pool == "mean":
            m = enc.attention_mask.unsqueeze(-1).to(h.dtype)
            return self.finish((h * m).sum(1) / m.sum(1).clamp(min=1))
        raise ConfigError(f"unknown pool {pool!r} for {self.method_name} (cls or mean)")

    def finish(self, emb: torch.Tensor) -> torch.Tensor:
        """The embedding as scored: L2-normalised when ``config.similarity`` is ``cos``, else unchanged."""
        if getattr(self.config, "similarity", "dot") == "cos":
            return F.normalize(emb, dim=-1)
        return emb

    def feature_dim(self, pool: str | None = None) -> int:
        return self.config.embed_dim

    def score(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Relevance scores of every query against every passage: the inner product of the encoded vectors (the
        cosine when ``config.similarity`` is ``cos``: :meth:`encode` has normalised them)."""
        return q @ p.T

    def contrastive_loss(self, queries: list[str], passages: list[str], temperature: float = 1.0,
                         **kw) -> tuple[torch.Tensor, dict]:
        """In-batch-negative contrastive loss of (query, relevant passage) pairs; duplicates are not negatives."""
        pool = kw.get("pool")
        q = self.encode({"text": queries}, pool=pool)
        p = self.encode({"text": passages}, pool=pool)
        loss, acc = info_nce(self.score(q, p) / temperature, passages)
        return loss, {"acc": acc}

    def layer_id(self, name: str) -> int:
        depth = self.encoder.depth
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith(("tok_embed", "pos_embed", "embed_norm")):
            return 0
        return depth + 1


def duplicate_mask(passages: list[str], device) -> torch.Tensor:
    """(B, B) True where passage j is the same text as passage i but j != i (a false negative)."""
    ids = {}
    idx = torch.tensor([ids.setdefault(p, len(ids)) for p in passages], device=device)
    same = idx[:, None] == idx[None, :]
    return same & ~torch.eye(len(passages), dtype=torch.bool, device=device)


def info_nce(scores: torch.Tensor, passages: list[str]) -> tuple[torch.Tensor, float]:
    """Cross-entropy of each query's positive (the diagonal) against the other passages of the batch."""
    scores = scores.float().masked_fill(duplicate_mask(passages, scores.device), float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    loss = F.cross_entropy(scores, labels)
    return loss, float((scores.argmax(1) == labels).float().mean())


def replace_config(cfg, **kw):
    return dataclasses.replace(cfg, **kw)
