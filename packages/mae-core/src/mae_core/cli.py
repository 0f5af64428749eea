"""CLI plumbing built once from the registry: every ``mae-<domain>`` gets ``pretrain``, ``probe``, ``finetune``,
``reconstruct`` and ``info`` with the same flags, config handling, progress and run directories, plus any extra
commands its package registers (``impute``, ``propagate``, ``stats``, ...).

Configuration is layered: method defaults < preset < ``--config file.yaml`` < flags given on the command line.
Every field of the method's model config, the dataset config and :class:`TrainConfig` is a flag with its help
string. User errors print one line ``error: ...`` and exit with status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from pathlib import Path
from typing import Any, Sequence

from . import registry
from .config import _strip_optional, from_dict, load_yaml, to_dict
from .errors import ConfigError, MaeError

SECTIONS = ("train", "model", "data")


# ---- flags from dataclasses -------------------------------------------------------------------------------------------
def _flag_type(tp):
    base, _ = _strip_optional(tp)
    origin = typing.get_origin(base)
    if base is bool:
        return "bool", None
    if origin in (list, tuple):
        args = typing.get_args(base)
        return "list", (args[0] if args else str)
    return "scalar", base


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, section: str, taken: set[str], title: str,
                        shown_defaults: dict | None = None):
    """Add ``--field-name`` flags (``--section-field-name`` when the name is already taken); returns the mapping
    dest -> (section, field)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    mapping = {}
    for f in dataclasses.fields(cls):
        if section == "data" and f.name == "path":
            continue  # --data PATH is a top-level flag
        name = f.name.replace("_", "-")
        flag = f"--{name}" if name not in taken else f"--{section}-{name}"
        taken.add(name)
        dest = f"{section}__{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        default = (shown_defaults or {}).get(f.name, default)
        help_ = f.metadata.get("help", "")
        help_ = f"{help_} (default: {default})" if help_ else f"(default: {default})"
        kind, item = _flag_type(hints[f.name])
        kw: dict[str, Any] = dict(dest=dest, default=argparse.SUPPRESS, help=help_)
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif kind == "list":
            group.add_argument(flag, nargs="+", metavar=item.__name__.upper() if hasattr(item, "__name__") else "V",
                               **kw)
        else:
            group.add_argument(flag, type=str, metavar=getattr(item, "__name__", "V").upper(), **kw)
        mapping[dest] = (section, f.name)
    return mapping


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        raise ConfigError(f"{self.prog}: {message}")


def _deep_update(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


# ---- config resolution --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Resolved:
    domain: str
    method: registry.MethodSpec
    dataset: registry.DatasetSpec
    preset: str | None
    model: Any
    data: Any
    train: Any
    out: str | None
    args: argparse.Namespace
    model_flags: dict = dataclasses.field(default_factory=dict)  # model fields given explicitly (flags / file)

    def to_dict(self) -> dict:
        return {"domain": self.domain, "method": self.method.name, "dataset": self.dataset.name,
                "preset": self.preset, "model": to_dict(self.model), "data": to_dict(self.data),
                "train": to_dict(self.train)}


def _default_method(domain: str) -> str:
    ms = registry.methods(domain)
    if not ms:
        raise ConfigError(f"no methods registered for domain {domain!r}")
    return ms[0].name


def _pre_parse(argv, domain):
    pre = _Parser(add_help=False, allow_abbrev=False)
    pre.add_argument("--method")
    pre.add_argument("--dataset")
    pre.add_argument("--preset")
    pre.add_argument("--config")
    pre.add_argument("--data")
    pre.add_argument("--run")
    pre.add_argument("--out")
    pre.add_argument("--resume", action="store_true")
    known, _ = pre.parse_known_args(argv)
    file_cfg = load_yaml(known.config) if known.config else {}
    if known.resume and known.out and not known.config and os.path.exists(os.path.join(known.out, "config.yaml")):
        # continuing a run: its resolved config is the base, flags still override
        file_cfg = {k: v for k, v in load_yaml(os.path.join(known.out, "config.yaml")).items() if k != "domain"}
        known.config = os.path.join(known.out, "config.yaml")
    run_cfg = {}
    if known.run:
        from .rundir import RunDir
        run_cfg = RunDir(known.run, create=False).read_config()
    preset = known.preset or file_cfg.get("preset") or None
    pspec = registry.get_preset(preset, domain) if preset else None
    method = known.method or file_cfg.get("method") or (pspec.method if pspec else None) or run_cfg.get("method") \
        or _default_method(domain)
    mspec = registry.get_method(method, domain)
    dataset = known.dataset or file_cfg.get("dataset") or (pspec.overrides.get("dataset") if pspec else None)
    if not dataset and known.data:
        takes = [d for d in registry.datasets(domain) if d.takes_path]
        if not takes:
            raise ConfigError(f"--data given but no dataset of domain {domain!r} reads a path")
        fits = [d for d in takes if (d.accepts(known.data) if d.accepts else os.path.isdir(known.data))]
        dataset = (fits or takes)[0].name
    dataset = dataset or run_cfg.get("dataset") or mspec.default_dataset
    if not dataset:
        raise ConfigError(f"method {method!r} has no default dataset; give --dataset or --data")
    dspec = registry.get_dataset(dataset, domain)
    return known, file_cfg, run_cfg, pspec, mspec, dspec


def add_common_flags(p: argparse.ArgumentParser, domain: str, with_run: bool = False, run_required: bool = False):
    g = p.add_argument_group("what to run")
    g.add_argument("--method", help="method name (see `info`); default: " + (
        registry.methods(domain)[0].name if registry.methods(domain) else "none"))
    g.add_argument("--dataset", help="dataset name (see `info`); --data PATH picks the folder dataset")
    g.add_argument("--data", metavar="PATH", help="folder (or file) with your own data")
    g.add_argument("--preset", help="named preset of hyper-parameters (see `info`)")
    g.add_argument("--config", metavar="YAML", help="config file (sections: method, dataset, model, data, train); "
                                                   "flags given on the command line override it")
    if with_run:
        g.add_argument("--run", metavar="DIR", required=run_required, help="run directory of a pretraining run")


def build_section_flags(p, mspec, dspec):
    from .train import TrainConfig
    taken = {"method", "dataset", "data", "preset", "config", "run", "out", "overwrite", "resume", "nproc"}
    taken |= {o[2:] for o in p._option_string_actions if o.startswith("--")}
    mapping = {}
    mapping.update(add_dataclass_flags(p, TrainConfig, "train", taken, "training (TrainConfig)",
                                       shown_defaults=mspec.train_defaults))
    mapping.update(add_dataclass_flags(p, mspec.config_cls, "model", taken, f"model: {mspec.name}"))
    mapping.update(add_dataclass_flags(p, dspec.config_cls, "data", taken, f"data: {dspec.name}"))
    return mapping


def resolve(args, mapping, known, file_cfg, run_cfg, pspec, mspec, dspec, domain, base: str = "method") -> Resolved:
    """Layer the config: defaults < run's saved config (probe / finetune) < preset < file < flags."""
    from .train import TrainConfig

    layered: dict = {"model": {}, "data": {}, "train": dict(mspec.train_defaults)}
    if run_cfg and base == "run":
        for s in ("model", "data"):
            if run_cfg.get("dataset") == dspec.name or s == "model":
                layered[s].update(run_cfg.get(s, {}) or {})
    if pspec:
        for s in SECTIONS:
            layered[s].update(pspec.overrides.get(s, {}))
    unknown_top = set(file_cfg) - {"method", "dataset", "preset", "model", "data", "train", "out"}
    if unknown_top:
        raise ConfigError(f"{known.config}: unknown key {sorted(unknown_top)[0]!r} "
                          "(known: method, dataset, preset, model, data, train, out)")
    for s in SECTIONS:
        sect = file_cfg.get(s) or {}
        if not isinstance(sect, dict):
            raise ConfigError(f"{known.config}: section {s!r} must be a mapping")
        layered[s].update(sect)
    for dest, (s, name) in mapping.items():
        if hasattr(args, dest):
            layered[s][name] = getattr(args, dest)
    if known.data:
        layered["data"]["path"] = known.data
    where = known.config or "flags"
    explicit = dict(file_cfg.get("model") or {})
    explicit.update({name: getattr(args, dest) for dest, (s, name) in mapping.items()
                     if s == "model" and hasattr(args, dest)})
    train = from_dict(TrainConfig, layered["train"], f"{where}: train")
    data = from_dict(dspec.config_cls, layered["data"], f"{where}: data")
    model = from_dict(mspec.config_cls, layered["model"], f"{where}: model")
    return Resolved(domain, mspec, dspec, pspec.name if pspec else None, model, data, train,
                    getattr(args, "out", None) or file_cfg.get("out"), args, explicit)


# ---- commands --------------------------------------------------------------------------------------------------------------
def _dataset_collate(ds):
    from .data.utils import collate_dicts
    return getattr(ds, "collate_fn", None) or collate_dicts


def _teardown_distributed() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_model_accepts(model, ds, source: str, data_name: str) -> None:
    """Run one sample through ``model.encode`` so that a data / weights mismatch (channels, sizes) is a one-line
    error naming both, before any output is written."""
    import torch
    try:
        with torch.no_grad():
            model.eval()
            model.encode(_dataset_collate(ds)([ds[0]]))
    except MaeError as e:
        raise MaeError(f"{source} does not accept the data in {data_name}: {e}") from None
    except RuntimeError as e:
        raise MaeError(f"{source} does not accept the data in {data_name}: {str(e).splitlines()[0][:160]}") from None


def _build_dataset(r: Resolved, split: str):
    ds = r.dataset.build(r.data, split)
    if len(ds) == 0:
        raise MaeError(f"{getattr(r.data, 'path', None) or r.dataset.name}: the {split} split has no samples")
    return ds


def _adapt(r: Resolved, ds):
    hook = getattr(r.method, "adapt", None)
    if hook is not None:
        r.model = hook(r.model, r.data, ds)
    return r.model


def _num_classes(ds) -> int:
    if hasattr(ds, "num_classes"):
        return int(ds.num_classes)
    from .data.utils import dataset_labels
    return int(dataset_labels(ds).max()) + 1


def _launch_distributed(domain: str, argv: Sequence[str], nproc: int) -> int:
    """Re-run this command under torch's elastic launcher with ``nproc`` processes on this machine."""
    from torch.distributed.run import main as torchrun

    rest = []
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "mae_core.launch", domain, *rest])
    return 0


def cmd_pretrain(domain: str, argv: Sequence[str]) -> int:
    known, file_cfg, run_cfg, pspec, mspec, dspec = _pre_parse(argv, domain)
    p = _Parser(prog=f"mae-{domain} pretrain", allow_abbrev=False,
                description=f"Pretrain {mspec.name}: {mspec.description}. With no arguments it runs on the "
                            f"embedded dataset {dspec.name!r} (no download) and writes a run directory.")
    add_common_flags(p, domain)
    g = p.add_argument_group("run directory")
    g.add_argument("--out", metavar="DIR", help="run directory (default: runs/<domain>-<method>-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    g.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP through torch's launcher)")
    mapping = build_section_flags(p, mspec, dspec)
    args = p.parse_args(argv)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_distributed(domain, ["pretrain", *argv], args.nproc)
    r = resolve(args, mapping, known, file_cfg, run_cfg, pspec, mspec, dspec, domain)
    return run_pretrain(r)


def run_pretrain(r: Resolved) -> int:
    from .checkpoint import save_pretrained
    from .registry import build_model
    from .rundir import RunDir, default_run_path
    from .train import Trainer
    from .train.distributed import world_info

    args = r.args
    if args.resume and not r.out:
        raise ConfigError("--resume needs --out DIR (the run directory to continue)")
    from .train import seed_everything
    seed_everything(r.train.seed)  # model initialisation is part of the seeded run
    train_set = _build_dataset(r, "train")
    _adapt(r, train_set)
    model = build_model(r.method.name, r.model)
    rank = world_info()[0]
    out = Path(r.out) if r.out else default_run_path(r.domain, r.method.name)
    if rank == 0:
        run = RunDir(out, overwrite=args.overwrite, resume=args.resume)
        if not args.resume:
            run.write_config(r.to_dict())
    if world_info()[1] > 1:
        import torch.distributed as dist
        from .train.distributed import init_distributed
        from .train import resolve_device
        init_distributed(resolve_device(r.train.device))
        dist.barrier()
    run = RunDir(out, create=False)
    try:
        trainer = Trainer(model, train_set, r.train, run_dir=run, collate_fn=_dataset_collate(train_set),
                          run_config=r.to_dict())
        resume_from = None
        if args.resume:
            resume_from = run.latest_checkpoint()
            if resume_from is None:
                raise MaeError(f"{out}: no checkpoint to resume from")
            if rank == 0:
                print(f"resuming from {resume_from}")
        summary = trainer.fit(resume_from)
    except MaeError:
        # a fresh run that failed before its first checkpoint leaves nothing behind
        if rank == 0 and not args.resume and run.latest_checkpoint() is None:
            import shutil
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        _teardown_distributed()
    if rank != 0:
        return 0
    save_pretrained(trainer.raw_model, out, extra={"run_config": r.to_dict()})
    pictures = []
    if r.method.visualize is not None:
        try:
            test_set = _build_dataset(r, "test")
        except MaeError:
            test_set = train_set
        pic = r.method.visualize(trainer.raw_model.cpu(), test_set, run.pictures / "reconstruction.png")
        if pic:
            pictures.append(str(pic))
    summary.update({"method": r.method.name, "dataset": r.dataset.name, "pictures": pictures,
                    "num_parameters": sum(p.numel() for p in model.parameters())})
    run.write_summary(summary)
    print(f"run directory: {out}")
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}, indent=1))
    return 0


def load_run_args(domain, argv, prog, extra_flags, description):
    """Parse a run-based command line (``--run`` plus every method / dataset / train flag, layered over the run's
    saved config) with ``extra_flags(parser)`` added; returns ``(Resolved, args)``. Domain commands use it too."""
    known, file_cfg, run_cfg, pspec, mspec, dspec = _pre_parse(argv, domain)
    p = _Parser(prog=prog, allow_abbrev=False, description=description)
    add_common_flags(p, domain, with_run=True, run_required=False)
    extra_flags(p)
    mapping = build_section_flags(p, mspec, dspec)
    args = p.parse_args(argv)
    r = resolve(args, mapping, known, file_cfg, run_cfg, pspec, mspec, dspec, domain, base="run")
    return r, args


def load_run_model(run_dir: str, overrides: dict | None = None):
    """The run's saved model; model fields given explicitly on the command line (e.g. fine-tuning options stored
    in the model config) override the saved ones."""
    from .checkpoint import from_pretrained
    return from_pretrained(run_dir, config_overrides=overrides)


PROBES: dict[str, Any] = {}


def register_probe(name: str, fn) -> None:
    """``fn(model, train_set, test_set, args, cache) -> dict of metrics``; cache holds frozen features."""
    PROBES[name] = fn


def cached_features(model, ds, cache, key, device, batch_size):
    """Frozen features of ``ds`` computed once per probe run (``cache[key]``)."""
    from .eval import extract_features
    if key not in cache:
        cache[key] = extract_features(model, ds, batch_size=batch_size, device=device,
                                      collate_fn=getattr(ds, "collate_fn", None) or _collate(), progress=True)
    return cache[key]



def _collate():
    from .data.utils import collate_dicts
    return collate_dicts


def _probe_linear(model, train_set, test_set, args, cache):
    from .eval import linear_probe
    xtr, ytr = cached_features(model, train_set, cache, "train", args.device_obj, args.probe_batch_size)
    xte, yte = cached_features(model, test_set, cache, "test", args.device_obj, args.probe_batch_size)
    multilabel = ytr.ndim == 2
    return linear_probe(xtr, ytr, xte, yte, num_classes=None if multilabel else _num_classes(train_set),
                        epochs=args.probe_epochs, lr=args.probe_lr, multilabel=multilabel, seed=args.probe_seed)


def _probe_knn(model, train_set, test_set, args, cache):
    from .eval import knn_classify
    xtr, ytr = cached_features(model, train_set, cache, "train", args.device_obj, args.probe_batch_size)
    xte, yte = cached_features(model, test_set, cache, "test", args.device_obj, args.probe_batch_size)
    if ytr.ndim == 2:
        return {}
    return knn_classify(xtr, ytr, xte, yte, k=args.k, num_classes=_num_classes(train_set),
                        whiten=getattr(args, "knn_whiten", 0.0))


def _probe_prototypical(model, train_set, test_set, args, cache):
    from .eval.prototypical import probe_prototypical
    return probe_prototypical(model, train_set, test_set, args, cache)


register_probe("linear", _probe_linear)
register_probe("knn", _probe_knn)
register_probe("prototypical", _probe_prototypical)


def datasets_and_model(r: Resolved, run: str | None, fresh: bool, seed: int):
    """Seed, build the train / test splits and the model (from the run's weights, or freshly initialised), and
    check that the model accepts the data."""
    from .registry import build_model
    from .train import seed_everything

    if not run and not fresh:
        raise ConfigError("give --run DIR (a pretraining run), or --random-init / --scratch for a fresh model")
    seed_everything(seed)
    train_set = _build_dataset(r, "train")
    test_set = _build_dataset(r, "test")
    if run and not fresh:
        model = load_run_model(run, r.model_flags)
    else:
        _adapt(r, train_set)
        model = build_model(r.method.name, r.model)
    check_model_accepts(model, train_set, f"{run or 'the model'}/model.safetensors",
                        getattr(r.data, "path", None) or r.dataset.name)
    return train_set, test_set, model


def cmd_probe(domain: str, argv: Sequence[str]) -> int:
    def flags(p):
        g = p.add_argument_group("probe")
        g.add_argument("--probe", default="linear,knn", help=f"comma-separated probes from: {', '.join(PROBES)}")
        g.add_argument("--probe-epochs", type=int, default=100, help="epochs of the linear / prototypical probe")
        g.add_argument("--probe-lr", type=float, default=1e-2, help="learning rate of the linear probe")
        g.add_argument("--probe-batch-size", type=int, default=256, help="batch size for feature extraction")
        g.add_argument("--probe-seed", type=int, default=0, help="seed of the probe")
        g.add_argument("--k", type=int, default=20, help="neighbours of the kNN probe")
        g.add_argument("--knn-whiten", type=float, default=0.01, metavar="SHRINK",
                       help="PCA-whiten features (train-set statistics) before the cosine kNN, with eigenvalue "
                            "shrinkage SHRINK x the largest; 0 = raw features (DINO protocol)")
        g.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training labels used")
        g.add_argument("--random-init", action="store_true", help="probe a randomly initialised encoder instead")

    r, args = load_run_args(domain, argv, f"mae-{domain} probe", flags,
                        "Frozen-feature evaluation of a pretrained run: linear probe (BatchNorm + linear, as in MAE) "
                        "and weighted kNN on held-out data.")
    return run_probe(r, args)


def run_probe(r: Resolved, args) -> int:
    from .data.utils import subset_fraction
    from .rundir import RunDir
    from .train import resolve_device

    train_set, test_set, model = datasets_and_model(r, args.run, args.random_init, args.probe_seed)
    args.device_obj = resolve_device(r.train.device)
    model.to(args.device_obj)
    train_set = subset_fraction(train_set, args.label_fraction, seed=args.probe_seed)
    names = [n.strip() for n in args.probe.split(",") if n.strip()]
    for n in names:
        if n not in PROBES:
            raise ConfigError(f"unknown probe {n!r}; choose from {', '.join(PROBES)}")
    cache: dict = {}
    results = {}
    nc = _num_classes(train_set)
    for n in names:
        t0 = time.time()
        res = PROBES[n](model, train_set, test_set, args, cache)
        res = {k: v for k, v in res.items()}
        res["time_s"] = round(time.time() - t0, 2)
        results[n] = res
        main = res.get("acc", res.get("auc"))
        if main is not None:
            print(f"{n:>14}: {main:.4f}" + (f"   (chance {1 / nc:.4f})" if "acc" in res else ""))
    out = {**results, "chance": 1.0 / nc, "label_fraction": args.label_fraction,
           "random_init": bool(args.random_init)}
    if args.run:
        tag = "probe_random_init" if args.random_init else "probe"
        RunDir(args.run, create=False).write_summary({tag: out})
    print(json.dumps(out))
    return 0


def cmd_finetune(domain: str, argv: Sequence[str]) -> int:
    def flags(p):
        g = p.add_argument_group("fine-tuning")
        g.add_argument("--scratch", action="store_true", help="train the same architecture from random init")
        g.add_argument("--layer-decay", type=float, default=0.75, help="layer-wise lr decay (1 = none)")
        g.add_argument("--drop-path-rate", type=float, default=0.1, help="stochastic depth while fine-tuning")
        g.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the cross-entropy")
        g.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training labels used")
        g.add_argument("--pool", default="mean", help="features fed to the head: mean, cls or cls+mean")
        g.add_argument("--out", metavar="DIR", help="where to write the fine-tuning run")
        g.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
        g.add_argument("--nproc", type=int, default=1, help="processes on this machine (DDP)")

    r, args = load_run_args(domain, argv, f"mae-{domain} finetune", flags,
                        "Fine-tune a pretrained encoder (or one from scratch) with a linear head, layer-wise lr "
                        "decay and drop path; reports test accuracy.")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_distributed(domain, ["finetune", *argv], args.nproc)
    return run_finetune(r, args)


def run_finetune(r: Resolved, args) -> int:
    from .checkpoint import save_pretrained
    from .data.utils import subset_fraction
    from .eval import finetune
    from .rundir import RunDir, default_run_path
    from .train.distributed import world_info

    train_set, test_set, model = datasets_and_model(r, args.run, args.scratch, r.train.seed)
    nc = _num_classes(train_set)
    train_set = subset_fraction(train_set, args.label_fraction, seed=r.train.seed)
    multilabel = getattr(train_set, "multilabel", False)
    out = Path(args.out) if args.out else (Path(args.run) / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
                                           if args.run else default_run_path(r.domain, r.method.name + "-scratch"))
    run = RunDir(out, overwrite=args.overwrite) if world_info()[0] == 0 else RunDir(out, create=False)
    cfg = r.to_dict()
    cfg["finetune"] = {k: getattr(args, k) for k in ("scratch", "layer_decay", "drop_path_rate", "label_smoothing",
                                                     "label_fraction", "pool")}
    if world_info()[0] == 0:
        run.write_config(cfg)
    clf, summary = finetune(model, train_set, test_set, nc, r.train, layer_decay=args.layer_decay,
                            drop_path=args.drop_path_rate, pool=args.pool, multilabel=multilabel,
                            label_smoothing=args.label_smoothing, run_dir=run,
                            collate_fn=_dataset_collate(train_set))
    _teardown_distributed()
    if world_info()[0] != 0:
        return 0
    save_pretrained(clf.backbone, out, extra={"run_config": cfg, "num_classes": nc})
    from .checkpoint import atomic_write
    from safetensors.torch import save_file
    head = {f"head.{k}": v.detach().contiguous().cpu() for k, v in clf.head.state_dict().items()}
    head.update({f"fc_norm.{k}": v.detach().contiguous().cpu() for k, v in clf.fc_norm.state_dict().items()})
    atomic_write(out / "head.safetensors", lambda tmp: save_file(head, tmp))
    run.write_summary(summary)
    print(f"run directory: {out}")
    print(json.dumps(summary))
    return 0


def cmd_reconstruct(domain: str, argv: Sequence[str]) -> int:
    def flags(p):
        g = p.add_argument_group("reconstruction picture")
        g.add_argument("--out", metavar="PNG", help="output picture (default: <run>/pictures/reconstruction-<time>.png)")
        g.add_argument("--num", type=int, default=8, help="number of samples shown")
        g.add_argument("--split", default="test", choices=["train", "test"], help="which split to draw from")
        g.add_argument("--seed", type=int, default=0, help="seed of the mask")

    r, args = load_run_args(domain, argv, f"mae-{domain} reconstruct", flags,
                        "Draw original, masked input and reconstruction for a few samples of a pretrained run.")
    if not args.run:
        raise ConfigError("give --run DIR (a pretraining run)")
    if r.method.visualize is None:
        raise ConfigError(f"method {r.method.name!r} has no reconstruction picture")
    model = load_run_model(args.run)
    ds = _build_dataset(r, args.split)
    out = args.out or str(Path(args.run) / "pictures" / f"reconstruction-{time.strftime('%Y%m%d-%H%M%S')}.png")
    path = r.method.visualize(model, ds, out, num=args.num, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_info(domain: str, argv: Sequence[str]) -> int:
    p = _Parser(prog=f"mae-{domain} info", description="List the registered methods, datasets, presets and commands.")
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


CORE_COMMANDS = {
    "pretrain": (cmd_pretrain, "pretrain a masked autoencoder (no arguments: embedded default data)"),
    "probe": (cmd_probe, "linear probe and kNN on frozen features of a run"),
    "finetune": (cmd_finetune, "fine-tune a pretrained encoder with a classification head"),
    "reconstruct": (cmd_reconstruct, "draw reconstructions of a pretrained run"),
    "info": (cmd_info, "list methods, datasets and presets"),
}


def run_cli(domain: str, argv: Sequence[str] | None = None, prog: str | None = None,
            description: str | None = None) -> int:
    """Entry point shared by every ``mae-<domain>`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"mae-{domain}"
    extra = {c.name: c for c in registry.commands(domain)}
    if not argv or argv[0] in ("-h", "--help"):
        lines = [description or f"{prog}: masked-autoencoder pretraining for {domain}", "", "commands:"]
        for name, (_, h) in CORE_COMMANDS.items():
            lines.append(f"  {name:<12} {extra[name].help if name in extra else h}")
        for name, c in extra.items():
            if name not in CORE_COMMANDS:
                lines.append(f"  {name:<12} {c.help}")
        lines += ["", f"`{prog} COMMAND --help` explains every option of a command."]
        print("\n".join(lines))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd in CORE_COMMANDS and cmd not in extra:  # a domain may register its own version of a core command
            return CORE_COMMANDS[cmd][0](domain, rest) or 0
        if cmd in extra:
            c = extra[cmd]
            p = _Parser(prog=f"{prog} {cmd}", description=c.help, allow_abbrev=False)
            c.add_arguments(p)
            return c.run(p.parse_args(rest)) or 0
        raise ConfigError(f"unknown command {cmd!r}; choose from: {', '.join(dict.fromkeys([*CORE_COMMANDS, *extra]))}")
    except MaeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    from . import image  # noqa: F401  (registers the image domain)
    return run_cli("core", argv, prog="mae-core",
                   description="mae-core: the shared masked-autoencoder engine; its own domain is images.")


if __name__ == "__main__":
    sys.exit(main())
