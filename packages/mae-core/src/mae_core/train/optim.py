"""Parameter groups (no weight decay on biases, norms and tokens; layer-wise lr decay) and the lr schedule."""
from __future__ import annotations

import math
from typing import Callable

import torch


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    last = name.split(".")[-1]
    return param.ndim <= 1 or last.endswith("token") or last.endswith("tokens") or "pos_embed" in last


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float | None = None,
                 layer_id: Callable[[str], int] | None = None, num_layers: int | None = None) -> list[dict]:
    """AdamW groups. With ``layer_decay``: ``lr_scale = layer_decay ** (num_layers - layer_id(name))``, where layer
    0 is the embeddings, block i is layer i + 1 and the head is ``num_layers`` (scale 1). Biases, norms, tokens and
    position embeddings get no weight decay, unless the model sets ``decay_all_params = True`` (methods whose
    reference code decays every parameter)."""
    groups: dict[tuple, dict] = {}
    decay_all = bool(getattr(model, "decay_all_params", False))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if (not decay_all and no_weight_decay(name, p)) else weight_decay
        lid = layer_id(name) if (layer_decay is not None and layer_id is not None) else 0
        scale = layer_decay ** (num_layers - lid) if (layer_decay is not None and layer_id is not None) else 1.0
        key = (wd, lid)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": wd, "lr_scale": scale, "layer_id": lid}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def build_optimizer(groups: list[dict], lr: float, betas=(0.9, 0.95), name: str = "adamw") -> torch.optim.Optimizer:
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    # the fused (single-kernel) implementation: same update, less memory traffic than foreach
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for g in clean for p in g["params"])
    if name == "adamw":
        return torch.optim.AdamW(clean, lr=lr, betas=tuple(betas), fused=fused)
    if name == "adam":
        return torch.optim.Adam(clean, lr=lr, betas=tuple(betas), fused=fused)
    if name == "sgd":
        return torch.optim.SGD(clean, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}")


class LARS(torch.optim.Optimizer):
    """LARS (You et al., 2017) as the MAE linear probe uses it: SGD with momentum where the step of every weight
    matrix (``ndim > 1``) is first rescaled by ``trust_coefficient x ||w|| / ||g + weight_decay x w||`` (by 1 when
    either norm is 0); biases and other 1-d parameters take the plain momentum step without weight decay:
    ``mu = momentum x mu + step; w -= lr x mu``."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=g["weight_decay"])
                    wn, dn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    ratio = torch.where((wn > 0) & (dn > 0), g["trust_coefficient"] * wn / dn, torch.ones_like(wn))
                    d = d * ratio
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(g["momentum"]).add_(d)
                p.add_(state["mu"], alpha=-g["lr"])
        return loss


def cosine_lr(step: float, total_steps: float, warmup_steps: float, lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then half-cosine to ``min_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return lr * step / max(warmup_steps, 1e-12)
    if total_steps <= warmup_steps:
        return lr
    t = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """The MAE scaling rule: lr = base_lr x effective batch / 256."""
    return base_lr * effective_batch / 256
