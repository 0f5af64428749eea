"""The commands every ``mae-<domain>`` has: flags -> typed configs -> the calls of :mod:`mae_core.workflows`."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

from .. import registry
from ..errors import ConfigError
from ..eval.probes import PROBES, ProbeConfig
from ..runconfig import resolve
from ..workflows import FinetuneConfig, finetune_config, run_finetune, run_pretrain, run_probe, run_reconstruct
from .flags import Parser, add_common_flags, add_dataclass_flags, add_run_config_flags, explicit_sections, \
    parse_run_command, pre_parse


def _dataclass_from_args(cls, args):
    """The command's own options as a typed config, with the ranges of its fields checked (one-line errors)."""
    import dataclasses

    from ..config import from_dict
    return from_dict(cls, {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)},
                     where="flags")


def cmd_pretrain(domain: str, argv: Sequence[str]) -> int:
    sel, ch = pre_parse(argv, domain)
    p = Parser(prog=f"mae-{domain} pretrain", allow_abbrev=False,
               description=f"Pretrain {ch.method.name}: {ch.method.description}. With no arguments it runs on the "
                           f"embedded dataset {ch.dataset.name!r} (no download) and writes a run directory.")
    add_common_flags(p, domain)
    g = p.add_argument_group("run directory")
    g.add_argument("--out", metavar="DIR", help="run directory (default: runs/<domain>-<method>-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    g.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP through torch's launcher)")
    mapping = add_run_config_flags(p, ch.method, ch.dataset)
    args = p.parse_args(argv)
    cfg = resolve(ch, sel, explicit_sections(args, mapping))  # bad options fail here, before any relaunch
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from ..train.distributed import relaunch
        return relaunch(domain, ["pretrain", *argv], args.nproc)
    run_pretrain(cfg, overwrite=args.overwrite, resume=args.resume)
    return 0


def probe_flags(p) -> None:
    g = p.add_argument_group("probe")
    defaults = ProbeConfig()
    g.add_argument("--probe", default=defaults.probe, help=f"comma-separated probes from: {', '.join(PROBES)}")
    g.add_argument("--probe-epochs", type=int, default=defaults.probe_epochs,
                   help="epochs of the linear / prototypical probe (default: 100; 90 with --recipe mae)")
    g.add_argument("--probe-lr", type=float, default=defaults.probe_lr,
                   help="learning rate of the linear / prototypical head (default: 0.01; 0.1 x batch / 256 with "
                        "--recipe mae)")
    g.add_argument("--recipe", default=defaults.recipe, choices=["adamw", "mae"],
                   help="how the linear probe trains: adamw (AdamW, cosine, the default) or mae (the MAE paper's "
                        "main_linprobe.py: LARS, momentum 0.9, no weight decay, 10 warm-up epochs)")
    g.add_argument("--probe-batch-size", type=int, default=defaults.probe_batch_size,
                   help="batch size for feature extraction")
    g.add_argument("--probe-seed", type=int, default=defaults.probe_seed, help="seed of the probe")
    g.add_argument("--k", type=int, default=defaults.k, help="neighbours of the kNN probe")
    g.add_argument("--knn-whiten", type=float, default=defaults.knn_whiten, metavar="SHRINK",
                   help="PCA-whiten features (train-set statistics) before the cosine kNN, with eigenvalue "
                        "shrinkage SHRINK x the largest; 0 = raw features (DINO protocol)")
    g.add_argument("--label-fraction", type=float, default=defaults.label_fraction,
                   help="fraction of training labels used")
    g.add_argument("--random-init", action="store_true", help="probe a randomly initialised encoder instead")


def cmd_probe(domain: str, argv: Sequence[str]) -> int:
    cfg, args = parse_run_command(domain, argv, f"mae-{domain} probe", probe_flags,
                                  "Frozen-feature evaluation of a pretrained run: linear probe (BatchNorm + linear, "
                                  "as in MAE) and weighted kNN on held-out data.",
                                  hide=("train", "model"))
    out = run_probe(cfg, _dataclass_from_args(ProbeConfig, args), args.run)
    print(json.dumps(out))
    return 0


def finetune_flags(p, method=None) -> None:
    """The ``finetune`` command's own flags; their defaults (shown by ``--help``) are the method's
    ``finetune_options`` over FinetuneConfig's. A flag left out parses to None: :func:`finetune_config` fills it."""
    g = p.add_argument_group("fine-tuning")
    d = dataclasses.asdict(FinetuneConfig())
    d.update(getattr(method, "finetune_options", None) or {})

    def shown(name: str, text: str) -> str:
        return f"{text} (default: {d[name]})"

    g.add_argument("--scratch", action="store_true", help="train the same architecture from random init")
    g.add_argument("--layer-decay", type=float, metavar="FLOAT", help=shown("layer_decay", "layer-wise lr decay (1 = none)"))
    g.add_argument("--drop-path-rate", type=float, metavar="FLOAT", help=shown("drop_path_rate", "stochastic depth while fine-tuning"))
    g.add_argument("--label-smoothing", type=float, metavar="FLOAT", help=shown("label_smoothing", "label smoothing of the cross-entropy"))
    g.add_argument("--label-fraction", type=float, metavar="FLOAT", help=shown("label_fraction", "fraction of training labels used"))
    g.add_argument("--pool", metavar="STR", help=shown("pool", "features fed to the head: mean, cls or cls+mean"))
    g.add_argument("--distill-teacher", metavar="DIR", help=shown(
        "distill_teacher", "hard distillation with a distillation token from a fine-tuned classifier (a finetune "
        "output directory; 'default': the method's own; 'none': off)"))
    g.add_argument("--adversary", metavar="FIELD", help=shown(
        "adversary", "identity-adversarial training (FMAE-IAT): a linear head behind a gradient-reversal layer "
        "predicts this sample field (e.g. subject); its BCE loss is added ('none': off)"))
    g.add_argument("--adversary-lambda", type=float, metavar="FLOAT", help=shown(
        "adversary_lambda", "gradient-reversal strength (the encoder gets -lambda x the adversary's gradient)"))
    g.add_argument("--out", metavar="DIR", help="where to write the fine-tuning run")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    g.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP)")


def cmd_finetune(domain: str, argv: Sequence[str]) -> int:
    method = pre_parse(argv, domain)[1].method
    cfg, args = parse_run_command(domain, argv, f"mae-{domain} finetune", lambda p: finetune_flags(p, method),
                                  "Fine-tune a pretrained encoder (or one from scratch) with a linear head, "
                                  "layer-wise lr decay and drop path; reports test accuracy. Training flags not "
                                  "given take the fine-tuning defaults shown (AdamW betas 0.9, 0.999, own lr and "
                                  "warm-up, capped at a tenth of the epochs), not the pretraining ones.",
                                  base="finetune")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from ..train.distributed import relaunch
        return relaunch(domain, ["finetune", *argv], args.nproc)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
             if getattr(args, f.name, None) is not None}
    summary = run_finetune(cfg, finetune_config(cfg.method, given), args.run, out=args.out, overwrite=args.overwrite)
    if "run_dir" in summary:
        print(json.dumps({k: v for k, v in summary.items() if k != "run_dir"}))
    return 0


def cmd_reconstruct(domain: str, argv: Sequence[str]) -> int:
    def flags(p):
        g = p.add_argument_group("reconstruction picture")
        g.add_argument("--out", metavar="PNG", help="output picture (default: <run>/pictures/<name>-<time>.png, "
                                                    "<name> reconstruction, or what the method draws)")
        g.add_argument("--num", type=int, default=8, help="number of samples shown")
        g.add_argument("--split", default="test", choices=["train", "test"], help="which split to draw from")
        g.add_argument("--seed", type=int, default=0, help="seed of the mask")

    cfg, args = parse_run_command(domain, argv, f"mae-{domain} reconstruct", flags,
                                  "Draw original, masked input and reconstruction for a few samples of a "
                                  "pretrained run.", hide=("train", "model"))
    if not args.run:
        raise ConfigError("give --run DIR (a pretraining run)")
    path = run_reconstruct(cfg, args.run, args.out, args.num, args.split, args.seed)
    print(f"wrote {path}")
    return 0


def fewshot_flags(p) -> None:
    from ..eval.fewshot import FEWSHOT_CLASSIFIERS

    g = p.add_argument_group("few-shot")
    g.add_argument("--way", type=int, default=5, help="classes per episode (N)")
    g.add_argument("--shot", type=int, default=10, help="labelled support samples per class (K)")
    g.add_argument("--query", type=int, default=20, help="query samples per class (from the test split)")
    g.add_argument("--folds", type=int, default=10, help="random episodes averaged")
    g.add_argument("--classifier", default="svm", choices=FEWSHOT_CLASSIFIERS,
                   help="fitted on the support features: linear SVM (Point-BERT / Point-MAE protocol), logistic "
                        "regression, nearest prototype, or nearest prototype by cosine")
    g.add_argument("--svm-c", type=float, default=1.0, help="C of the linear SVM / logistic regression")
    g.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    g.add_argument("--probe-batch-size", type=int, default=128, help="batch size for feature extraction")
    g.add_argument("--random-init", action="store_true", help="evaluate a randomly initialised encoder instead")


def cmd_fewshot(domain: str, argv: Sequence[str]) -> int:
    import time

    from ..eval.fewshot import few_shot_eval
    from ..eval.probes import cached_features, require_labels
    from ..rundir import RunDir
    from ..train import resolve_device
    from ..workflows import prepare_eval

    cfg, args = parse_run_command(domain, argv, f"mae-{domain} fewshot", fewshot_flags,
                                  "N-way K-shot classification on frozen features over repeated random episodes "
                                  "(support from the train split, queries from the test split).",
                                  hide=("train", "model"))
    train_set, test_set, model = prepare_eval(cfg, args.run, args.random_init, args.seed)
    require_labels(train_set, model)
    device = resolve_device(cfg.train.device)
    model.to(device)
    t0 = time.time()
    cache: dict = {}
    xtr, ytr = cached_features(model, train_set, cache, "train", device, args.probe_batch_size)
    xte, yte = cached_features(model, test_set, cache, "test", device, args.probe_batch_size)
    try:
        res = few_shot_eval(xtr, ytr, way=args.way, shot=args.shot, query=args.query, folds=args.folds,
                            seed=args.seed, classifier=args.classifier, c=args.svm_c, test_features=xte,
                            test_labels=yte)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    res = dict(res)
    res["time_s"] = round(time.time() - t0, 2)
    res["random_init"] = bool(args.random_init)
    print(f"{args.way}-way {args.shot}-shot ({args.classifier}): {res['acc']:.2f} +- {res['std']:.2f} % over "
          f"{args.folds} folds (chance {100 / args.way:.1f} %)")
    if args.run:
        tag = f"fewshot_{args.way}way_{args.shot}shot" + ("" if args.classifier == "svm" else f"_{args.classifier}") \
            + ("_random_init" if args.random_init else "")
        RunDir(args.run, create=False).write_summary({tag: res})
    print(json.dumps(res))
    return 0


def cmd_info(domain: str, argv: Sequence[str]) -> int:
    p = Parser(prog=f"mae-{domain} info", description="List the registered methods, datasets, presets and commands.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    ms, ds, ps = registry.methods(domain), registry.datasets(domain), registry.presets(domain)
    if args.json:
        print(json.dumps({"methods": [{"name": m.name, "description": m.description, "paper": m.paper} for m in ms],
                          "datasets": [{"name": d.name, "description": d.description} for d in ds],
                          "presets": [{"name": q.name, "method": q.method, "description": q.description} for q in ps]},
                         indent=1))
        return 0
    print(f"mae-{domain}: methods")
    for m in ms:
        print(f"  {m.name:<16} {m.description}" + (f"  [{m.paper}]" if m.paper else ""))
    print("datasets")
    for d in ds:
        print(f"  {d.name:<16} {d.description}")
    if ps:
        print("presets")
        for q in ps:
            print(f"  {q.name:<16} ({q.method}) {q.description}")
    extra = registry.commands(domain)
    if extra:
        print("extra commands")
        for c in extra:
            print(f"  {c.name:<16} {c.help}")
    return 0


def run_domain_command(domain: str, prog: str, spec: registry.CommandSpec, argv: Sequence[str]) -> int:
    """A command a domain registered: plain (its own flags) or, with ``run_flags``, run-based (every probe-style
    flag, resolved into a RunConfig passed to ``spec.run(args, cfg)``)."""
    if spec.run_flags:
        cfg, args = parse_run_command(domain, argv, f"{prog} {spec.name}", spec.add_arguments, spec.help)
        return spec.run(args, cfg) or 0
    p = Parser(prog=f"{prog} {spec.name}", description=spec.help, allow_abbrev=False)
    spec.add_arguments(p)
    return spec.run(p.parse_args(argv)) or 0


CORE_COMMANDS = {
    "pretrain": (cmd_pretrain, "pretrain a masked autoencoder (no arguments: embedded default data)"),
    "probe": (cmd_probe, "linear probe and kNN on frozen features of a run"),
    "finetune": (cmd_finetune, "fine-tune a pretrained encoder with a classification head"),
    "reconstruct": (cmd_reconstruct, "draw reconstructions of a pretrained run"),
    "fewshot": (cmd_fewshot, "N-way K-shot accuracy on frozen features over repeated episodes"),
    "info": (cmd_info, "list methods, datasets and presets"),
}

__all__ = ["CORE_COMMANDS", "add_dataclass_flags", "cmd_fewshot", "cmd_finetune", "cmd_info", "cmd_pretrain", "cmd_probe",
           "cmd_reconstruct", "finetune_flags", "probe_flags", "run_domain_command"]
