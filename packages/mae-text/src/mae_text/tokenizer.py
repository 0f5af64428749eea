"""WordPiece tokenizer trained locally with Hugging Face ``tokenizers`` (no download), BERT conventions:
lower-cased, accents stripped, CJK characters split, punctuation split, ``[CLS] text [SEP]``.

A trained tokenizer travels with the model as its JSON string (``config.tokenizer_json``), so a run directory is
self-contained. Text in any script and emoji never crash it: characters it has never seen become ``[UNK]``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from mae_core.errors import DataError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIALS = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4 in this order


def _post_process(tok) -> None:
    from tokenizers import processors
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))])


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2):
    """Train a BERT-style WordPiece tokenizer on ``texts``; returns a ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIALS, limit_alphabet=1000, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIALS):
        raise DataError("the corpus has no text to train a tokenizer on")
    _post_process(tok)
    return tok


def load_tokenizer(path: str | Path):
    """A local ``tokenizer.json`` (must contain the BERT special tokens)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise DataError(f"{path}: not a readable tokenizer.json ({str(e).splitlines()[0][:80]})") from None
    return check_tokenizer(tok, str(path))


def check_tokenizer(tok, where: str):
    missing = [s for s in SPECIALS if tok.token_to_id(s) is None]
    if missing:
        raise DataError(f"{where}: the tokenizer lacks the special tokens {missing}")
    if tok.post_processor is None:
        _post_process(tok)
    tok.no_padding()
    tok.no_truncation()
    return tok


def tokenizer_from_json(text: str):
    from tokenizers import Tokenizer
    return check_tokenizer(Tokenizer.from_str(text), "config.tokenizer_json")


def fingerprint(texts: Sequence[str], vocab_size: int) -> str:
    h = hashlib.sha1(str(vocab_size).encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class Encoded:
    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) bool, True = real token
    special: torch.Tensor  # (B, L) bool, True = [CLS] / [SEP] / [PAD]
    word_ids: torch.Tensor  # (B, L) long, word index within the text, -1 for special tokens and padding
    truncated: int  # how many texts were cut to max_len


def encode_texts(tok, texts: Sequence[str], max_len: int) -> Encoded:
    """Batch-encode ``[CLS] text [SEP]``, truncated to ``max_len`` and padded to the longest text in the batch."""
    texts = [t if isinstance(t, str) else str(t) for t in texts]
    tok.enable_truncation(max_length=max_len)
    try:
        encs = tok.encode_batch(texts)
    finally:
        tok.no_truncation()
    length = max(len(e.ids) for e in encs)
    b = len(encs)
    ids = torch.zeros(b, length, dtype=torch.long)
    att = torch.zeros(b, length, dtype=torch.bool)
    special = torch.ones(b, length, dtype=torch.bool)
    words = torch.full((b, length), -1, dtype=torch.long)
    truncated = 0
    for i, e in enumerate(encs):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        att[i, :n] = True
        special[i, :n] = torch.tensor(e.special_tokens_mask, dtype=torch.bool)
        words[i, :n] = torch.tensor([-1 if w is None else w for w in e.word_ids])
        truncated += bool(e.overflowing)
    words[special] = -1
    return Encoded(ids, att, special, words, truncated)


def count_truncated(tok, texts: Sequence[str], max_len: int, batch: int = 2048) -> int:
    """How many of ``texts`` are longer than ``max_len`` tokens (with [CLS] and [SEP])."""
    n = 0
    for i in range(0, len(texts), batch):
        for e in tok.encode_batch(list(texts[i:i + batch])):
            n += len(e.ids) > max_len
    return n
