"""The input tensor of a single-tensor medical model: ``batch["image"]`` when present, otherwise the named
modalities stacked as channels (the embedded synthetic brains carry one key per modality)."""
from __future__ import annotations

import torch

from mae_core.errors import MaeError


def stacked_input(batch: dict, modalities: list[str], method: str) -> torch.Tensor:
    """(B, C, *S) float: ``batch["image"]``, or ``batch[m]`` (B, 1, *S) for each modality, concatenated in order."""
    if batch.get("image") is not None:
        return batch["image"].float()
    missing = [m for m in modalities if batch.get(m) is None]
    if missing or not modalities:
        raise MaeError(f"{method}: the batch has no 'image' and lacks modality "
                       f"{missing[0] if missing else '(none configured)'!r} (the model reads "
                       f"{', '.join(modalities) or 'image'})")
    return torch.cat([batch[m] for m in modalities], dim=1).float()
