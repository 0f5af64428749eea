"""Trainer callbacks: objects passed as ``Trainer(..., callbacks=[...])``.

A callback defines any of these (all optional; the trainer calls those that exist, in list order):

- ``on_fit_start(trainer)``: once at the start of ``fit()``, before a checkpoint is resumed;
- ``on_step_end(trainer)``: after every optimizer step, once ``trainer.step`` counts it (so ``trainer.step >= 1``),
  before that step's metrics line and checkpoint; the weights are the updated ones and the gradients are cleared;
- ``state_dict() -> dict[str, Tensor]`` / ``load_state_dict(state)``: tensors saved in every training checkpoint
  (``train_state.safetensors``, keys ``callback.<index>.<name>``) and restored on resume.

``trainer.progress`` is ``step / total_steps``; the step that has just finished in ``on_step_end`` ran its forward
at ``(trainer.step - 1) / trainer.total_steps`` (:func:`step_progress`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers.ema import EMA

SCHEDULES = ("constant", "cosine")


def step_progress(trainer) -> float:
    """The training progress of the optimizer step that has just finished (the value its forward saw)."""
    return (trainer.step - 1) / trainer.total_steps


def ema_momentum(progress: float, momentum: float, schedule: str = "constant", final: float = 1.0) -> float:
    """``momentum`` throughout (``constant``), or the BYOL / DINO half-cosine from ``momentum`` at progress 0 to
    ``final`` at progress 1 (``cosine``)."""
    if schedule == "constant":
        return momentum
    if schedule == "cosine":
        return final - (final - momentum) * (math.cos(math.pi * progress) + 1.0) / 2.0
    raise ValueError(f"EMA momentum schedule must be one of {SCHEDULES}, got {schedule!r}")


class EMACallback:
    """Updates ``ema`` from ``source`` after every optimizer step.

    The momentum of step k (1-based, of K) is ``ema_momentum((k - 1) / K, momentum, schedule, final_momentum)``: the
    first update uses ``momentum``, as DINO's per-iteration schedule does. When ``ema`` is part of the trained model
    its weights travel in the model's checkpoints; otherwise this callback's ``state_dict`` carries them (and
    ``on_fit_start`` moves the EMA to the trainer's device).
    """

    def __init__(self, ema: EMA, source: nn.Module, momentum: float = 0.996, schedule: str = "constant",
                 final_momentum: float = 1.0):
        if schedule not in SCHEDULES:
            raise ValueError(f"EMA momentum schedule must be one of {SCHEDULES}, got {schedule!r}")
        for name, m in (("momentum", momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"EMACallback {name} must be in [0, 1], got {m}")
        self.ema, self.source = ema, source
        self.momentum, self.schedule, self.final_momentum = momentum, schedule, final_momentum
        self.in_model: bool | None = None  # known at on_fit_start
        self.last_momentum: float | None = None

    def momentum_at(self, progress: float) -> float:
        return ema_momentum(progress, self.momentum, self.schedule, self.final_momentum)

    def on_fit_start(self, trainer) -> None:
        self.in_model = any(m is self.ema for m in trainer.raw_model.modules())
        if not self.in_model:
            self.ema.to(trainer.device)

    def on_step_end(self, trainer) -> None:
        self.last_momentum = self.momentum_at(step_progress(trainer))
        self.ema.update(self.source, self.last_momentum)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.in_model:
            return {}  # saved with the model's weights
        return {k: v.detach() for k, v in self.ema.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            self.ema.load_state_dict(state)
