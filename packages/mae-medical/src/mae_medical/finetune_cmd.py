"""``mae-medical finetune``: mae-core's ``finetune`` command, with the chest X-ray recipe applied when the model is
the X-ray MAE (``xray-mae``).

For an ``xray-mae`` run (or ``--method xray-mae --scratch``) every option the command line does not give takes the
recipe's value (:data:`mae_medical.methods.xray_mae.RECIPE` / ``FINETUNE_TRAIN``): layer decay 0.55, drop path 0.2,
no label smoothing, the data's ``augment=finetune`` (crop 0.08-1, horizontal flip, RandAugment m6 mstd 0.5), AdamW
betas (0.9, 0.999), base lr 2.5e-4, 75 epochs with 5 of warm-up, min lr 1e-5, batch 128. Other methods get mae-core's
defaults, exactly as the core command.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

from mae_core.cli.commands import finetune_flags
from mae_core.config import from_dict
from mae_core.errors import ConfigError
from mae_core.registry import CommandSpec, register_command
from mae_core.workflows import FinetuneConfig, run_finetune

from .methods.xray_mae import FINETUNE_TRAIN, RECIPE

# FinetuneConfig fields the recipe sets (flag defaults become None so that a given flag can be told apart)
RECIPE_FLAGS = {"layer_decay": RECIPE["layer_decay"], "drop_path_rate": RECIPE["drop_path"],
                "label_smoothing": RECIPE["label_smoothing"], "pool": RECIPE["pool"]}


def _flags(p) -> None:
    finetune_flags(p)
    d = FinetuneConfig()
    for name in RECIPE_FLAGS:
        p.set_defaults(**{name: None})
    for action in p._actions:  # argparse has no public way to edit a help line
        if action.dest in RECIPE_FLAGS:
            action.help = (f"{action.help} (default: {getattr(d, action.dest)}; xray-mae: "
                           f"{RECIPE_FLAGS[action.dest]})")


def apply_xray_recipe(cfg, given: set[str]):
    """The run config with the recipe's fine-tuning data augmentation and optimisation, except the fields in
    ``given`` (``"section.field"`` names set on the command line)."""
    train = {k: v for k, v in FINETUNE_TRAIN.items() if f"train.{k}" not in given}
    if "train.lr" in given:  # an explicit absolute lr overrides the base lr anyway
        train.pop("lr", None)
    cfg.train = dataclasses.replace(cfg.train, **train)
    if hasattr(cfg.data, "augment") and "data.augment" not in given:
        cfg.data = dataclasses.replace(cfg.data, augment="finetune")
    return cfg


def finetune_options(args, recipe: bool) -> FinetuneConfig:
    d = FinetuneConfig()
    opts = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig) if hasattr(args, f.name)}
    for name, value in RECIPE_FLAGS.items():
        if opts.get(name) is None:
            opts[name] = value if recipe else getattr(d, name)
    return from_dict(FinetuneConfig, opts, where="flags")


def _run(args, cfg) -> int:
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from mae_core.train.distributed import relaunch
        if len(sys.argv) < 2 or sys.argv[1] != "finetune":
            raise ConfigError("--nproc: start multi-process fine-tuning from the mae-medical command line")
        return relaunch("medical", sys.argv[1:], args.nproc)
    recipe = cfg.method.name == "xray-mae"
    given = {dest.replace("__", ".", 1) for dest in vars(args) if "__" in dest}
    if recipe:
        cfg = apply_xray_recipe(cfg, given)
    summary = run_finetune(cfg, finetune_options(args, recipe), args.run, out=args.out, overwrite=args.overwrite)
    if "run_dir" in summary:
        print(json.dumps({k: v for k, v in summary.items() if k != "run_dir"}))
    return 0


register_command(CommandSpec(
    name="finetune", domain="medical", run_flags=True, add_arguments=_flags, run=_run,
    help="fine-tune a pretrained encoder with a classification head (xray-mae: the X-ray recipe's defaults)"))
