"""A frozen teacher: a pretrained encoder that a student reads features (and attention maps) from.

``FrozenTeacher(model)`` wraps a model whose encoder is a :class:`~mae_core.models.TransformerEncoder` (a
:class:`~mae_core.models.MaskedAutoencoder`, anything with such an ``.encoder``, or the encoder itself):

- it is always in eval mode and never has gradients: its parameters have ``requires_grad=False``, its forward runs
  under ``torch.no_grad()``, and ``train()`` (which the student's ``train()`` / ``Trainer.fit()`` calls on every
  child) leaves the wrapped model in eval mode;
- its weights stay out of the student: the wrapped model is kept in the wrapper's ``__dict__``, not in
  ``_modules``, so the student's ``state_dict()``, ``parameters()``, ``modules()``, ``apply()`` (weight
  initialisation), the optimizer's parameter groups, training checkpoints and ``save_pretrained`` never see it.
  ``_apply`` is overridden so that it still follows the student's ``.to(device)``, ``.to(dtype)``, ``.cuda()``,
  ``.half()`` moves. This was preferred over filtering state-dict keys: every PyTorch traversal (state dicts,
  parameter lists, DDP's parameter registration, ``named_modules``) skips it without each having to be patched;
- it records where it came from (``source``, an absolute path) and the sha256 of its weights file (``sha256``), for
  the student's config to store; ``FrozenTeacher.from_path(path, expected_hash)`` or
  ``FrozenTeacher.from_config(config)`` reloads it and refuses, in one line, a missing path or a changed file.

``teacher(batch_or_tokens, layers=[...], attention=[...])`` returns a :class:`TeacherOutput`: a batch dict goes
through the model's ``tokenize`` / ``embed_tokens`` (all tokens, no masking); a (B, L, D) tensor is taken as
embedded tokens (``pos`` optional). Do not deep-copy a student that holds a teacher (an EMA of the whole student,
say): the copy would hold a second teacher.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .checkpoint import CONFIG, WEIGHTS, from_pretrained, load_foreign, load_model_state
from .errors import MaeError
from .layers.blocks import cls_attention
from .models.mae import TransformerEncoder


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks); a one-line ``MaeError`` if the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise MaeError(f"{path}: teacher weights file not found")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TeacherOutput:
    """What a :class:`FrozenTeacher` returns (all without gradients).

    ``last``: the encoder output after its final norm (B, prefix + L, D); ``features``: the raw outputs of the
    requested blocks, in the order requested (before the final norm unless ``norm=True``); ``attentions``: the
    attention probabilities (B, heads, prefix + L, prefix + L) of the requested blocks; ``cls_attention``: row 0 of
    each without the prefix columns (B, heads, L), empty when the encoder has no prefix token.
    """

    last: torch.Tensor
    features: list[torch.Tensor]
    attentions: list[torch.Tensor]
    cls_attention: list[torch.Tensor]
    num_prefix_tokens: int


def _find_encoder(model: nn.Module) -> TransformerEncoder | None:
    if isinstance(model, TransformerEncoder):
        return model
    enc = getattr(model, "encoder", None)
    return enc if isinstance(enc, TransformerEncoder) else None


class FrozenTeacher(nn.Module):
    """A frozen, eval-mode wrapper around ``model`` that the student's weights never include (module docstring)."""

    def __init__(self, model: nn.Module, source: str | os.PathLike | None = None, sha256: str | None = None,
                 encoder: TransformerEncoder | None = None):
        super().__init__()
        model.requires_grad_(False)
        model.eval()
        object.__setattr__(self, "_frozen_model", model)  # not a registered child: see the module docstring
        object.__setattr__(self, "_frozen_encoder", encoder if encoder is not None else _find_encoder(model))
        self.source = str(source) if source is not None else None
        self.sha256 = sha256
        self.training = False

    # ---- the wrapped model -------------------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self._frozen_model

    @property
    def encoder(self) -> TransformerEncoder:
        """The wrapped ViT encoder (features, attention maps); a teacher of another kind (a convolutional
        autoencoder, say) is used through :attr:`model` and has none."""
        if self._frozen_encoder is None:
            raise MaeError(f"FrozenTeacher: {type(self.model).__name__} is not a TransformerEncoder and has no "
                           "TransformerEncoder `.encoder`; pass encoder=... explicitly, or call teacher.model")
        return self._frozen_encoder

    @property
    def num_prefix_tokens(self) -> int:
        return self.encoder.num_prefix_tokens

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Stays in eval mode whatever ``mode`` is (the student's ``train()`` calls this)."""
        self.training = False
        self.model.eval()
        return self

    def _apply(self, fn, recurse: bool = True):
        # .to() / .cuda() / .half() / .float() of the student reach the wrapped model through here
        super()._apply(fn, recurse)
        if recurse:
            self.model._apply(fn)
        return self

    def record(self, field: str = "teacher") -> dict[str, Any]:
        """``{field: source, field + "_sha256": sha256}``: what a student's config stores to reload the teacher."""
        return {field: self.source, f"{field}_sha256": self.sha256}

    def extra_repr(self) -> str:
        digest = f"{self.sha256[:12]}..." if self.sha256 else None
        return f"model={type(self.model).__name__}, source={self.source!r}, sha256={digest}"

    # ---- features ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, inputs: dict | torch.Tensor, layers: Sequence[int] | None = None,
                attention: Sequence[int] | None = None, pos: torch.Tensor | None = None,
                norm: bool = False) -> TeacherOutput:
        """Features of ``inputs`` (a batch dict, or embedded tokens (B, L, D) with optional ``pos``).

        ``layers``: block indices (negative from the end) whose outputs to return; ``attention``: block indices
        whose attention maps to return (explicit attention in those blocks only); ``norm``: apply the encoder's final
        norm to each returned block output.
        """
        if self.model.training:  # someone called teacher.model.train() directly
            self.model.eval()
        if isinstance(inputs, dict):
            if not hasattr(self.model, "tokenize"):
                raise MaeError(f"FrozenTeacher: {type(self.model).__name__} has no tokenize(); pass embedded tokens")
            tokens, tok_pos = self.model.tokenize(inputs)
            x = self.model.embed_tokens(tokens) if hasattr(self.model, "embed_tokens") else tokens
            pos = tok_pos if pos is None else pos
        else:
            x = inputs
        out = self.encoder(x, pos, taps=list(layers) if layers is not None else None,
                           attn_blocks=list(attention) if attention is not None else None)
        out = out if isinstance(out, tuple) else (out,)
        last, rest = out[0], list(out[1:])
        feats = rest.pop(0) if layers is not None else []
        attns = rest.pop(0) if attention is not None else []
        if norm:
            feats = [self.encoder.norm(f) for f in feats]
        p = self.num_prefix_tokens
        cls = [cls_attention(a, p) for a in attns] if p else []
        return TeacherOutput(last=last, features=feats, attentions=attns, cls_attention=cls, num_prefix_tokens=p)

    # ---- loading -----------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, expected_hash: str | None = None) -> "FrozenTeacher":
        """From a finished run directory or a ``save_pretrained`` directory (``config.json`` +
        ``model.safetensors``), rebuilt with :func:`mae_core.checkpoint.from_pretrained`."""
        directory = Path(directory)
        if not directory.is_dir():
            raise MaeError(f"{directory}: teacher directory not found")
        digest = _check_hash(directory / WEIGHTS, expected_hash)
        return cls(from_pretrained(directory), source=directory.resolve(), sha256=digest)

    @classmethod
    def from_foreign(cls, path: str | os.PathLike, model: nn.Module, expected_hash: str | None = None,
                     strict: bool = True, key_map=None, encoder: TransformerEncoder | None = None) -> "FrozenTeacher":
        """From a foreign ``.pth`` / ``.bin`` / ``.safetensors`` state dict (opened by the safe loader
        :func:`mae_core.checkpoint.load_foreign`) loaded into ``model``, which the caller builds. ``key_map(state)
        -> state`` renames keys first (e.g. a converter from :mod:`mae_core.interop`)."""
        path = Path(path)
        digest = _check_hash(path, expected_hash)
        state = load_foreign(path)
        if key_map is not None:
            state = key_map(state)
        load_model_state(model, state, source=str(path), strict=strict)
        return cls(model, source=path.resolve(), sha256=digest, encoder=encoder)

    @classmethod
    def from_path(cls, path: str | os.PathLike, expected_hash: str | None = None, model: nn.Module | None = None,
                  **foreign_kw) -> "FrozenTeacher":
        """Reload a teacher from its recorded path: a directory (:meth:`from_pretrained`), a ``model.safetensors``
        next to its ``config.json``, or, with ``model``, a foreign checkpoint (:meth:`from_foreign`). A missing path
        or a sha256 other than ``expected_hash`` is a one-line ``MaeError``."""
        path = Path(path)
        if not path.exists():
            raise MaeError(f"{path}: teacher checkpoint not found")
        if model is not None:
            return cls.from_foreign(path, model, expected_hash=expected_hash, **foreign_kw)
        if path.is_dir():
            return cls.from_pretrained(path, expected_hash)
        if path.name == WEIGHTS and (path.parent / CONFIG).exists():
            return cls.from_pretrained(path.parent, expected_hash)
        raise MaeError(f"{path}: not a run or save_pretrained directory; a foreign checkpoint needs the model to load "
                       "it into (FrozenTeacher.from_path(path, model=...))")

    @classmethod
    def from_config(cls, config: Any, field: str = "teacher", model: nn.Module | None = None,
                    **foreign_kw) -> "FrozenTeacher | None":
        """The teacher named by ``config.<field>`` (None when that is empty), checked against
        ``config.<field>_sha256`` when set; an empty hash field is filled with the loaded teacher's hash, so that the
        config the student saves pins the teacher."""
        path = getattr(config, field, None)
        if not path:
            return None
        hash_field = f"{field}_sha256"
        teacher = cls.from_path(path, getattr(config, hash_field, None), model=model, **foreign_kw)
        if hasattr(config, hash_field) and not getattr(config, hash_field):
            setattr(config, hash_field, teacher.sha256)
        return teacher


# ---- teachers the library trains itself, once per data and recipe -----------------------------------------------------
def teacher_cache() -> Path:
    """Where default teachers are cached: ``$MAE_TEACHER_CACHE``, default ``runs/teachers``."""
    return Path(os.environ.get("MAE_TEACHER_CACHE", "runs/teachers"))


class preserve_rng:
    """Save and restore the Python / NumPy / torch RNG states around a block (teacher training), so that the
    student's initialisation does not depend on whether its teacher was cached."""

    def __enter__(self):
        import random

        import numpy as np
        self.states = random.getstate(), np.random.get_state(), torch.get_rng_state()

    def __exit__(self, *exc):
        import random

        import numpy as np
        random.setstate(self.states[0])
        np.random.set_state(self.states[1])
        torch.set_rng_state(self.states[2])


def data_name(data_cfg) -> str:
    """The registered dataset whose config class ``data_cfg`` is (a ``ConfigError`` when none is)."""
    from . import registry
    from .errors import ConfigError

    names = [d.name for d in registry.datasets() if isinstance(data_cfg, d.config_cls)]
    if not names:
        raise ConfigError("--teacher: no default teacher for this data (give --teacher RUN_DIR)")
    return names[0]


def cached_dir(prefix: str, name: str, recipe: Any, what: str, build, done: Sequence[str] = (WEIGHTS, "summary.json"),
               how: str = "") -> Path:
    """``<teacher_cache>/<prefix>-<name>-<hash of recipe>``, built by ``build(out)`` with the RNG states kept
    (:class:`preserve_rng`) unless every file of ``done`` is already there. Prints which; two processes asking at
    once build it once (a file lock). ``what`` names it and ``how`` describes the build in the message."""
    import json

    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()
    out = (teacher_cache() / f"{prefix}-{name}-{key[:10]}").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:  # two runs at once: the second waits, then reuses
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): no waiting
            pass
        if all((out / f).exists() for f in done):
            print(f"teacher: cached {what} {out}", flush=True)
            return out
        print(f"teacher: training the default {what} ({how}) into {out}", flush=True)
        with preserve_rng():
            build(out)
    return out


def cached_pretrain(method: str, data_cfg, options: dict, prefix: str, what: str) -> Path:
    """The run directory of ``method`` pretrained with ``options`` (keywords of :func:`mae_core.pretrain`) on the
    data of ``data_cfg``, through :func:`cached_dir`, keyed by the dataset, its config and the options."""
    from .config import to_dict
    from .workflows import pretrain

    name, data = data_name(data_cfg), to_dict(data_cfg)

    def build(out: Path) -> None:
        pretrain(method, dataset=name, data_config=data, out=str(out), overwrite=True, progress=False, **options)
    return cached_dir(prefix, name, [name, data, options], what, build,
                      how=f"{method}, {options.get('epochs')} epochs on {name}")


def _check_hash(weights: Path, expected: str | None) -> str:
    digest = file_sha256(weights)
    if expected and digest != expected.lower():
        raise MaeError(f"{weights}: sha256 {digest[:16]}... differs from the recorded teacher hash "
                       f"{expected[:16]}... (the teacher's weights changed since the student was configured)")
    return digest
