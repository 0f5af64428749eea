"""Prototypical probing of a frozen encoder (Bird-MAE, Rauch et al. 2025, after AudioProtoPNet / ProtoPNet).

Works on any model with ``token_grid(batch) -> ((B, L, D) patch tokens without prefix tokens, grid)`` whose grid
has two axes (image rows x columns, spectrogram time x frequency, ...):

1. the last layer's patch tokens are arranged on the grid and upsampled x2 bilinearly;
2. every class owns J learnable prototypes (20 by default); the similarity of a prototype to a location is
   ReLU(cosine similarity), and a prototype's score is its maximum over the locations;
3. the logit of class c is ``sum_j ReLU(w_cj) * score_cj + b_c`` over the class's own prototypes (w starts at 1,
   b at -2), so class weights are non-negative;
4. the loss is cross-entropy (single-label) or the asymmetric loss (multi-label) plus an orthogonality penalty that
   pushes each class's normalised prototypes apart: ``sum_c ||P_c P_c^T - I||_F^2``;
5. prototypes and the last layer (w, b) have separate learning rates.

The probe is registered as ``prototypical`` for every domain's ``probe`` command.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..errors import MaeError


class PrototypicalHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, num_prototypes: int = 20, upsample: int = 2,
                 weight_init: float = 1.0, bias_init: float = -2.0):
        super().__init__()
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.upsample = upsample
        self.prototypes = nn.Parameter(torch.randn(num_classes, num_prototypes, dim) / math.sqrt(dim))
        self.weight = nn.Parameter(torch.full((num_classes, num_prototypes), float(weight_init)))
        self.bias = nn.Parameter(torch.full((num_classes,), float(bias_init)))

    def feature_map(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        """(B, L, D) tokens -> (B, D, up * g0, up * g1) upsampled feature map."""
        b, length, d = tokens.shape
        grid = tuple(grid)
        if len(grid) != 2 or grid[0] * grid[1] != length:
            raise MaeError(f"prototypical probe needs a 2-axis token grid matching {length} tokens, got {grid}")
        x = tokens.transpose(1, 2).reshape(b, d, *grid)
        if self.upsample and self.upsample != 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return x

    def similarity(self, tokens: torch.Tensor, grid) -> torch.Tensor:
        """ReLU(cosine) of every prototype to every location: (B, C, J, H, W)."""
        fmap = F.normalize(self.feature_map(tokens, grid), dim=1)
        protos = F.normalize(self.prototypes, dim=-1)
        sim = torch.einsum("bdhw,cjd->bcjhw", fmap, protos)
        return F.relu(sim)

    def forward(self, tokens: torch.Tensor, grid, return_maps: bool = False):
        maps = self.similarity(tokens, grid)
        scores = maps.flatten(3).amax(-1)  # (B, C, J) max over locations
        logits = (F.relu(self.weight)[None] * scores).sum(-1) + self.bias
        return (logits, maps) if return_maps else logits

    def orthogonality(self) -> torch.Tensor:
        """sum over classes of ||P_c P_c^T - I||_F^2 with P_c the class's L2-normalised prototypes (J, D)."""
        p = F.normalize(self.prototypes, dim=-1)
        gram = p @ p.transpose(1, 2)
        eye = torch.eye(self.num_prototypes, device=p.device, dtype=p.dtype)
        return ((gram - eye) ** 2).sum()


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 4.0, gamma_pos: float = 1.0,
                    clip: float = 0.05, eps: float = 1e-8) -> torch.Tensor:
    """Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021), mean over samples."""
    p = torch.sigmoid(logits)
    y = targets.float()
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p  # probability shifting of the negatives
    loss_pos = y * (1 - p) ** gamma_pos * torch.log(p.clamp(min=eps))
    loss_neg = (1 - y) * p_neg ** gamma_neg * torch.log((1 - p_neg).clamp(min=eps))
    return -(loss_pos + loss_neg).sum(-1).mean()


@torch.no_grad()
def extract_token_grids(model, dataset, batch_size: int = 64, device="cpu", collate_fn=None, progress: bool = False,
                        label_key: str = "label"):
    """Frozen last-layer patch tokens of a whole data set: ((N, L, D) float32 on CPU, ``batch[label_key]``, grid)."""
    from ..data.utils import collate_dicts
    from ..train.trainer import move_to

    if not hasattr(model, "token_grid"):
        raise MaeError(f"{type(model).__name__} has no token_grid(); the prototypical probe needs patch tokens")
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or collate_dicts)
    if progress:
        from tqdm.auto import tqdm
        loader = tqdm(loader, desc="tokens", unit="batch", leave=False)
    toks, labels, grid = [], [], None
    for batch in loader:
        batch = move_to(batch, device)
        t, grid = model.token_grid(batch)
        toks.append(t.float().cpu())
        labels.append(batch[label_key].cpu())
    return torch.cat(toks), torch.cat(labels), tuple(grid)


def _metrics(logits, y, multilabel, extra=None):
    from .linear import accuracy, mean_auc
    res = {"auc": mean_auc(torch.sigmoid(logits), y)} if multilabel else {"acc": accuracy(logits, y.long())}
    if extra is not None:
        res.update(extra(torch.sigmoid(logits) if multilabel else logits.softmax(-1), y))
    return res


def prototypical_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                       grid, num_classes: int, num_prototypes: int = 20, epochs: int = 30, proto_lr: float = 0.05,
                       head_lr: float = 0.01, ortho_weight: float = 0.1, weight_decay: float = 1e-4,
                       batch_size: int = 64, seed: int = 0, multilabel: bool = False, device="cpu",
                       return_head: bool = False, head_cls: type = None, multilabel_loss=None, extra_metrics=None):
    """Train a :class:`PrototypicalHead` on frozen token grids (N, L, D); report test accuracy (or mean AUC).

    A method's own variant plugs in here: ``head_cls(dim, num_classes, num_prototypes)`` (a PrototypicalHead
    subclass: other initialisation or orthogonality term), ``multilabel_loss(logits, targets)`` (default
    :func:`asymmetric_loss`) and ``extra_metrics(scores, labels) -> dict`` (scores are probabilities) for more
    numbers in the report."""
    g = torch.Generator().manual_seed(seed)
    head_cls = head_cls or PrototypicalHead
    multilabel_loss = multilabel_loss or asymmetric_loss
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = head_cls(x_train.shape[-1], num_classes, num_prototypes).to(device)
    opt = torch.optim.AdamW([
        {"params": [head.prototypes], "lr": proto_lr, "weight_decay": 0.0},
        {"params": [head.weight, head.bias], "lr": head_lr, "weight_decay": weight_decay},
    ])
    n = len(x_train)
    steps = max(1, epochs * math.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history = []
    head.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            logits = head(xb, grid)
            cls = multilabel_loss(logits, yb) if multilabel else F.cross_entropy(logits, yb.long())
            loss = cls + ortho_weight * head.orthogonality()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        history.append(tot / n)
    head.eval()

    def predict(x):
        with torch.no_grad():
            return torch.cat([head(x[i:i + 256].to(device), grid).cpu() for i in range(0, len(x), 256)])

    res = _metrics(predict(x_test), y_test, multilabel, extra_metrics)
    res.update({f"train_{k}": v for k, v in _metrics(predict(x_train), y_train, multilabel, extra_metrics).items()})
    res["loss_first_epoch"], res["loss_last_epoch"] = history[0], history[-1]
    return (res, head) if return_head else res


def probe_prototypical(model, train_set, test_set, args, cache) -> dict:
    """The ``prototypical`` probe of the CLI (``fn(model, train_set, test_set, args, cache)``)."""
    device = getattr(args, "device", None) or "cpu"
    bs = min(getattr(args, "probe_batch_size", 64), 64)
    collate = getattr(train_set, "collate_fn", None)
    if "tokens_train" not in cache:
        cache["tokens_train"] = extract_token_grids(model, train_set, bs, device, collate, progress=True)
        cache["tokens_test"] = extract_token_grids(model, test_set, bs, device, collate, progress=True)
    xtr, ytr, grid = cache["tokens_train"]
    xte, yte, _ = cache["tokens_test"]
    multilabel = ytr.ndim == 2
    nc = ytr.shape[1] if multilabel else int(getattr(train_set, "num_classes", int(max(ytr.max(), yte.max())) + 1))
    res, head = prototypical_probe(
        xtr, ytr, xte, yte, grid, nc, num_prototypes=getattr(args, "num_prototypes", 20),
        epochs=getattr(args, "probe_epochs", None) or 100, proto_lr=getattr(args, "proto_lr", 0.05),
        head_lr=getattr(args, "probe_lr", None) or 0.01, seed=getattr(args, "probe_seed", 0), multilabel=multilabel,
        device=device, return_head=True)
    cache["prototypical_head"] = head
    return res
