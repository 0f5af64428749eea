"""The model contract: what every registered method's model offers the trainer, the probes, fine-tuning and the
checkpoints. :class:`MAEModel` states it as a ``typing.Protocol``; :func:`check_contract` verifies it on a built
model and a batch, with a message that names the method (the cross-package contract test runs it on every
registered method).

A method that subclasses :class:`~mae_core.models.MaskedAutoencoder` gets all of it; a method that does not (a GNN,
say) inherits :class:`PretrainedMixin` and implements the five methods itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .errors import MaeError

CONTRACT_METHODS = ("forward", "encode", "feature_dim", "num_layers", "layer_id", "save_pretrained")


@runtime_checkable
class MAEModel(Protocol):
    """The interface of a registered method's model (an ``nn.Module``)."""

    method_name: str  # the registry name, set by create_model
    config: Any  # the method's config dataclass, saved by save_pretrained

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> Any:
        """One pretraining step's loss: a :class:`~mae_core.models.ModelOutput` with a finite scalar ``loss``; all
        randomness (masks, views) drawn from ``generator`` so the same generator gives the same loss."""

    def encode(self, batch: dict, pool: str | None = None) -> torch.Tensor:
        """(B, feature_dim()) frozen features of the unmasked input, for probes and retrieval."""

    def feature_dim(self, pool: str | None = None) -> int:
        """The width of :meth:`encode`'s output."""

    def num_layers(self) -> int:
        """Layer count for layer-wise lr decay (embeddings 0 ... the last block ``num_layers() - 1``)."""

    def layer_id(self, name: str) -> int:
        """Layer of parameter ``name`` for layer-wise lr decay."""

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json``, which :func:`mae_core.from_pretrained` reads."""


class PretrainedMixin:
    """``model.save_pretrained(dir)`` for every model class (the counterpart is ``mae_core.from_pretrained``)."""

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        from .checkpoint import save_pretrained
        return save_pretrained(self, directory, extra=extra)


def check_contract(model, batch: dict, name: str | None = None, tmpdir: str | os.PathLike | None = None) -> dict:
    """Check ``model`` against :class:`MAEModel` on ``batch``; raise ``MaeError`` naming the method on the first
    failure. Checks: every contract method exists; forward gives a finite scalar loss; the same generator gives the
    same loss; ``encode`` gives (B, feature_dim()) finite features; with ``tmpdir``, a save / load round trip gives
    the same ``encode`` output. Returns a few measured values (loss, feature shape)."""
    name = name or getattr(model, "method_name", type(model).__name__)
    missing = [m for m in CONTRACT_METHODS if not callable(getattr(model, m, None))]
    if missing:
        raise MaeError(f"method {name!r} breaks the model contract: no {', '.join(missing)}")
    if not hasattr(model, "config"):
        raise MaeError(f"method {name!r} breaks the model contract: no config attribute")
    model.train()
    out = model(batch, generator=torch.Generator().manual_seed(0))
    loss = getattr(out, "loss", None)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not torch.isfinite(loss):
        raise MaeError(f"method {name!r}: forward must return a finite scalar loss, got {loss!r}")
    again = model(batch, generator=torch.Generator().manual_seed(0)).loss
    if not torch.allclose(loss.detach(), again.detach(), rtol=1e-5, atol=1e-6):
        raise MaeError(f"method {name!r}: the same generator gave losses {float(loss.detach()):.6f} and {float(again.detach()):.6f}")
    model.eval()
    with torch.no_grad():
        feats = model.encode(batch)
    if feats.ndim != 2 or feats.shape[1] != model.feature_dim():
        raise MaeError(f"method {name!r}: encode gave shape {tuple(feats.shape)}, expected "
                       f"(N, {model.feature_dim()}) (feature_dim())")
    if not torch.isfinite(feats).all():
        raise MaeError(f"method {name!r}: encode gave non-finite features")
    if not 0 < model.num_layers():
        raise MaeError(f"method {name!r}: num_layers() must be positive")
    for pname, _ in model.named_parameters():
        lid = model.layer_id(pname)
        if not 0 <= lid <= model.num_layers():
            raise MaeError(f"method {name!r}: layer_id({pname!r}) = {lid} is outside [0, {model.num_layers()}]")
    if tmpdir is not None:
        from .checkpoint import from_pretrained
        model.save_pretrained(Path(tmpdir) / name)
        back = from_pretrained(Path(tmpdir) / name).eval()
        with torch.no_grad():
            feats2 = back.encode(batch)
        if not torch.allclose(feats, feats2, rtol=1e-5, atol=1e-6):
            raise MaeError(f"method {name!r}: encode differs after save_pretrained / from_pretrained "
                           f"(max diff {float((feats - feats2).abs().max()):.3g})")
    return {"loss": float(loss.detach()), "feature_shape": tuple(feats.shape)}

