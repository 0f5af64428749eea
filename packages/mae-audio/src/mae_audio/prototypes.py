"""``mae-audio prototypes``: train Bird-MAE's prototypical probe (:mod:`.bird_probe`, the reference recipe) on a
run's frozen encoder and draw where the prototypes fire on a few test clips (one PNG per clip)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from mae_core.api import load_run
from mae_core.errors import ConfigError
from mae_core.eval.prototypical import extract_token_grids
from mae_core.rundir import RunDir

from .bird_probe import bird_mae_probe
from .viz import save_prototype_map


def add_prototype_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="run directory of a pretraining run")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the prototypical probe")
    p.add_argument("--prototypes", type=int, default=20, help="prototypes per class")
    p.add_argument("--proto-lr", type=float, default=0.05, help="learning rate of the prototypes")
    p.add_argument("--head-lr", type=float, default=0.01, help="learning rate of the last layer (w, b)")
    p.add_argument("--num", type=int, default=2, help="test clips drawn")
    p.add_argument("--out", metavar="DIR", help="where the pictures go (default: <run>/pictures)")


def run_prototypes(args) -> int:
    loaded = load_run(args.run)
    if loaded.config is None:
        raise ConfigError(f"{args.run}: no config.yaml, so the run's dataset is unknown")
    run = RunDir(args.run, create=False)
    train, test = loaded.dataset("train"), loaded.dataset("test")
    model = loaded.model
    xtr, ytr, grid = extract_token_grids(model, train, 64, progress=True)
    xte, yte, _ = extract_token_grids(model, test, 64, progress=True)
    multilabel = ytr.ndim == 2
    nc = ytr.shape[1] if multilabel else train.num_classes
    res, head = bird_mae_probe(xtr, ytr, xte, yte, grid, nc, num_prototypes=args.prototypes, epochs=args.epochs,
                                   proto_lr=args.proto_lr, head_lr=args.head_lr, multilabel=multilabel,
                                   return_head=True)
    out = Path(args.out) if args.out else run.pictures
    paths = []
    for i in torch.linspace(0, len(test) - 1, min(args.num, len(test))).long().tolist():
        paths.append(str(save_prototype_map(model, head, test[i], out / f"prototypes-{i}.png",
                                            classes=getattr(test, "classes", None))))
    res["pictures"] = paths
    print(json.dumps(res))
    return 0
