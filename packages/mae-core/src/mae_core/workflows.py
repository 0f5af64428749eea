"""Pretrain, probe and fine-tune as calls: what ``mae-<domain> pretrain | probe | finetune`` run.

    run = mae_core.pretrain("image-mae", epochs=5, out="runs/y")   # options by name, as the CLI's flags
    mae_core.probe(run, kind="linear")                              # the CLI's probes
    mae_core.finetune(run, epochs=10, layer_decay=0.75)

Each takes typed configs underneath (:class:`RunConfig`, :class:`ProbeConfig`, :class:`FinetuneConfig`);
the keyword forms route every option to its section with :func:`mae_core.runconfig.option_names`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import Run, build_split, from_pretrained, load_run
from .config import field, from_dict
from .errors import ConfigError, MaeError
from .eval.probes import PROBES, ProbeConfig, dataset_collate, num_classes, require_labels
from .runconfig import RunConfig, resolve_run_config


@dataclass
class FinetuneConfig:
    """Options of a fine-tuning run (the ``finetune`` command's flags, with the same names)."""

    scratch: bool = field(False, "train the same architecture from random init")
    layer_decay: float = field(0.75, "layer-wise lr decay (1 = none)", gt=0, le=1)
    drop_path_rate: float = field(0.1, "stochastic depth while fine-tuning", ge=0, lt=1)
    label_smoothing: float = field(0.1, "label smoothing of the cross-entropy", ge=0, lt=1)
    label_fraction: float = field(1.0, "fraction of training labels used", gt=0, le=1)
    pool: str = field("mean", "features fed to the head: mean, cls or cls+mean (and what the method offers)")
    distill_teacher: str = field("", "hard distillation (DeiT, G2SD's specific stage): a fine-tuned classifier (a "
                                     "finetune output directory) whose argmax trains a distillation token; loss "
                                     "(CE on labels + CE on the teacher's argmax) / 2, test logits the mean of both "
                                     "heads; 'default': the method's own teacher; empty or 'none': off")
    adversary: str = field("", "identity-adversarial training (FMAE-IAT): a linear head behind a gradient-reversal "
                               "layer predicts this sample field (e.g. subject) from the pooled features; its BCE "
                               "loss is added to the task loss; empty or 'none': off")
    adversary_lambda: float = field(1.0, "gradient-reversal strength: the adversary's gradient reaches the encoder "
                                         "times -lambda (FMAE-IAT: 2 on BP4D, 1 on BP4D+, 0.5 on DISFA)", ge=0)

    @property
    def distills(self) -> bool:
        return self.distill_teacher not in ("", "none")

    @property
    def adversarial(self) -> bool:
        return self.adversary not in ("", "none")


def _split_options(cls, options: dict) -> tuple[Any, dict]:
    names = {f.name for f in dataclasses.fields(cls)}
    mine = {k: v for k, v in options.items() if k in names}
    return from_dict(cls, mine, where=cls.__name__), {k: v for k, v in options.items() if k not in names}


def _teardown_distributed(clean: bool) -> None:
    """Leave the process group. After a clean run every rank meets at a barrier and gives gloo's worker threads a
    moment (GIL released) to drop the last collective's tensors: the process group's destructor joins those threads
    while holding the GIL, and a thread still freeing a Python-owned tensor would wait for it forever."""
    import time

    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
            time.sleep(0.05)
        dist.destroy_process_group()


# ---- pretrain ------------------------------------------------------------------------------------------------------
def pretrain(method: str | None = None, *, data: str | None = None, dataset: str | None = None,
             preset: str | None = None, config: str | dict | None = None, out: str | None = None,
             overwrite: bool = False, resume: bool = False, domain: str | None = None, model: dict | None = None,
             data_config: dict | None = None, train: dict | None = None, **options) -> Run:
    """Pretrain ``method`` (default: the domain's first method) and return the loaded :class:`Run`.

    ``data``: a folder or file of your own (picks the dataset that reads it); ``dataset`` / ``preset`` / ``config``
    (YAML path or mapping) as on the command line; ``options``: any train / model / data field by its flag name
    (``epochs=5``, ``mask_ratio=0.9``); ``model`` / ``data_config`` / ``train``: whole sections as dicts."""
    cfg = resolve_run_config(method, domain=domain, data=data, dataset=dataset, preset=preset, config=config,
                             out=out, resume=resume, overrides=options,
                             sections={"model": model or {}, "data": data_config or {}, "train": train or {}})
    path = run_pretrain(cfg, overwrite=overwrite, resume=resume)
    return load_run(path)


def run_pretrain(cfg: RunConfig, overwrite: bool = False, resume: bool = False) -> Path:
    """Train ``cfg`` into its run directory; returns the directory (every process; only rank 0 writes)."""
    from .api import adapt_config
    from .checkpoint import save_pretrained
    from .registry import build_model
    from .rundir import RunDir, default_run_path
    from .train import Trainer, resolve_device, seed_everything
    from .train.distributed import init_distributed, world_info

    if resume and not cfg.out:
        raise ConfigError("--resume needs --out DIR (the run directory to continue)")
    seed_everything(cfg.train.seed)  # model initialisation is part of the seeded run
    train_set = build_split(cfg, "train")
    cfg.model = adapt_config(cfg.method, cfg.model, train_set, cfg.data, cfg.dataset.name)
    model = build_model(cfg.method.name, cfg.model, cfg.domain)
    rank = world_info()[0]
    out = Path(cfg.out) if cfg.out else default_run_path(cfg.domain, cfg.method.name)
    owner = None  # rank 0's handle: it holds the run's lock and the replaced run until the new one stands
    if rank == 0:
        owner = RunDir(out, overwrite=overwrite, resume=resume, keep_replaced=True).lock()
    if world_info()[1] > 1:
        import torch.distributed as dist
        init_distributed(resolve_device(cfg.train.device))
        dist.barrier()
    run = RunDir(out, create=False)
    clean = False
    try:
        trainer = Trainer(model, train_set, cfg.train, run_dir=run, collate_fn=dataset_collate(train_set),
                          run_config=cfg.to_dict())
        resume_from = None
        if resume:
            resume_from = run.latest_checkpoint()
            if resume_from is None:
                raise MaeError(f"{out}: no checkpoint to resume from (the run stopped before its first "
                               "checkpoint: start it again without --resume, with --overwrite)")
            if rank == 0:
                print(f"resuming from {resume_from}")
                # the lines logged after the checkpoint are logged again: keep the log equal to an uninterrupted one
                owner.truncate_metrics(int(resume_from.name.split("-")[1]))
        elif rank == 0:
            owner.write_config(cfg.to_dict())
        if rank == 0:
            print(f"run directory: {out}  ({cfg.method.name} on {cfg.dataset.name}, {trainer.total_steps} steps)",
                  flush=True)
        summary = trainer.fit(resume_from)
        clean = True
    except BaseException:
        # a fresh run that failed (or was interrupted) before its first checkpoint leaves nothing behind, and the
        # run it was to replace comes back
        if rank == 0:
            if not resume and run.latest_checkpoint() is None:
                owner.abandon()
            else:
                owner.finish_replacement()
                owner.unlock()  # the lock's file is closed now, not at garbage collection
        raise
    finally:
        _teardown_distributed(clean)
    if rank != 0:
        return out
    owner.finish_replacement()
    try:
        save_pretrained(trainer.raw_model, out, extra={"run_config": cfg.to_dict()})
        pictures = []
        if cfg.method.visualize is not None:
            try:
                test_set = build_split(cfg, "test")
            except MaeError:
                test_set = train_set
            pic = cfg.method.visualize(trainer.raw_model.cpu(), test_set, run.pictures / f"{cfg.method.picture}.png")
            if pic:
                pictures.append(str(pic))
        summary.update({"method": cfg.method.name, "dataset": cfg.dataset.name, "pictures": pictures,
                        "num_parameters": sum(p.numel() for p in model.parameters())})
        run.write_summary(summary)
    finally:
        owner.unlock()
    print(pretrain_report(out, summary, cfg.domain))
    return out


def pretrain_report(out: Path, summary: dict, domain: str) -> str:
    """The few lines a person reads at the end of a run (everything else is in ``summary.json``)."""
    lines = [f"done: {summary['steps']} steps ({summary['epochs']} epochs) in {summary['train_time_s']:.1f} s, "
             f"final loss {summary['final_loss']:.4f}",
             f"  weights  {out / 'model.safetensors'}"]
    lines += [f"  picture  {p}" for p in summary.get("pictures", [])]
    lines += [f"  summary  {out / 'summary.json'}", f"next: mae-{domain} probe --run {out}"]
    return "\n".join(lines)


# ---- evaluation ----------------------------------------------------------------------------------------------------
def prepare_eval(cfg: RunConfig, run: str | os.PathLike | None, fresh: bool, seed: int):
    """Seed, build the train / test splits and the model (the run's weights through :func:`load_run`, or freshly
    initialised with ``fresh``), and check that the model accepts the data. Returns (train, test, model)."""
    from .api import adapt_config
    from .registry import build_model
    from .train import seed_everything

    if not run and not fresh:
        raise ConfigError("give --run DIR (a pretraining run), or --random-init / --scratch for a fresh model")
    seed_everything(seed)
    train_set = build_split(cfg, "train")
    test_set = build_split(cfg, "test")
    if run and not fresh:
        model = from_pretrained(run, config_overrides=cfg.model_explicit)
    else:
        cfg.model = adapt_config(cfg.method, cfg.model, train_set, cfg.data, cfg.dataset.name)
        model = build_model(cfg.method.name, cfg.model, cfg.domain)
    check_model_accepts(model, train_set, f"{run or 'the model'}/model.safetensors",
                        getattr(cfg.data, "path", None) or cfg.dataset.name)
    return train_set, test_set, model


def check_model_accepts(model, ds, source: str, data_name: str) -> None:
    """Run one sample through ``model.encode`` so that a data / weights mismatch (channels, sizes) is a one-line
    error naming both, before any output is written."""
    import torch
    try:
        with torch.no_grad():
            model.eval()
            model.encode(dataset_collate(ds)([ds[0]]))
    except MaeError as e:
        raise MaeError(f"{source} does not accept the data in {data_name}: {e}") from None
    except RuntimeError as e:
        raise MaeError(f"{source} does not accept the data in {data_name}: {str(e).splitlines()[0][:160]}") from None


def _eval_config(run, method, options: dict, cls, base: str = "run") -> tuple[RunConfig, Any, str | None]:
    own, rest = _split_options(cls, options)
    path = str(run.path if isinstance(run, Run) else run) if run is not None else None
    sel = {k: rest.pop(k) for k in ("data", "dataset", "preset", "config", "domain") if k in rest}
    cfg = resolve_run_config(method, run=path, base=base, overrides=rest, **sel)
    return cfg, own, path


def probe(run: Run | str | os.PathLike | None = None, kind: str | list[str] = "linear,knn", *,
          method: str | None = None, **options) -> dict:
    """Frozen-feature probes of a run (``kind``: names in ``PROBES``), as ``mae-<domain> probe``. ``options``:
    :class:`ProbeConfig` fields, ``data`` / ``dataset`` to probe on other data, and run config options by name.
    Without a run, ``random_init=True`` probes a fresh ``method``. Returns ``{probe: metrics, ...}``."""
    options["probe"] = ",".join(kind) if isinstance(kind, (list, tuple)) else kind
    cfg, pc, path = _eval_config(run, method, options, ProbeConfig)
    return run_probe(cfg, pc, path)


def run_probe(cfg: RunConfig, pc: ProbeConfig, run: str | None) -> dict:
    from .data.utils import subset_fraction
    from .rundir import RunDir
    from .train import resolve_device

    names = pc.names()
    train_set, test_set, model = prepare_eval(cfg, run, pc.random_init, pc.probe_seed)
    require_labels(train_set, model)
    pc.device = resolve_device(cfg.train.device)
    model.to(pc.device)
    train_set = subset_fraction(train_set, pc.label_fraction, seed=pc.probe_seed)
    cache: dict = {}
    results = {}
    nc = num_classes(train_set)
    for n in names:
        t0 = time.time()
        res = dict(PROBES[n](model, train_set, test_set, pc, cache))
        res["time_s"] = round(time.time() - t0, 2)
        results[n] = res
        main = res.get("acc", res.get("auc"))
        if main is not None:
            print(f"{n:>14}: {main:.4f}" + (f"   (chance {1 / nc:.4f})" if "acc" in res else ""))
    out = {**results, "chance": 1.0 / nc, "label_fraction": pc.label_fraction, "random_init": bool(pc.random_init)}
    if run:
        tag = "probe_random_init" if pc.random_init else "probe"
        RunDir(run, create=False).write_summary({tag: out})
    return out


def finetune(run: Run | str | os.PathLike | None = None, *, method: str | None = None, out: str | None = None,
             overwrite: bool = False, **options) -> dict:
    """Fine-tune a run's encoder with a classification head (layer-wise lr decay, drop path), as
    ``mae-<domain> finetune``; ``scratch=True`` trains the same architecture from random init. ``options``:
    :class:`FinetuneConfig` fields and train / data options by name; train options not given start from
    :func:`mae_core.runconfig.finetune_train_defaults` (AdamW betas (0.9, 0.999), base lr 1e-3, 5 warm-up epochs
    capped at a tenth of the epochs). Returns the summary (test accuracy, ...)."""
    own = {k: options.pop(k) for k in [f.name for f in dataclasses.fields(FinetuneConfig)] if k in options}
    cfg, _, path = _eval_config(run, method, options, FinetuneConfig, base="finetune")
    return run_finetune(cfg, finetune_config(cfg.method, own), path, out=out, overwrite=overwrite)


def finetune_config(mspec, given: dict) -> FinetuneConfig:
    """The fine-tuning options: FinetuneConfig's defaults < the method's ``finetune_options`` < ``given``."""
    return from_dict(FinetuneConfig, {**mspec.finetune_options, **given}, where="finetune options")


def finetune_teacher(cfg: RunConfig, fc: FinetuneConfig, run: str | None):
    """The frozen classifier teacher of ``fc.distill_teacher``: a finetune output directory, or with 'default' the one
    the method's ``MethodSpec.finetune_teacher(cfg, fc, run)`` returns (G2SD: T-FT, trained and cached)."""
    from .eval.finetune import load_classifier
    from .teacher import FrozenTeacher, file_sha256

    path = fc.distill_teacher
    if path == "default":
        if cfg.method.finetune_teacher is None:
            raise ConfigError(f"--distill-teacher default: method {cfg.method.name!r} has no fine-tuning teacher of "
                              "its own (give a finetune output directory)")
        path = str(cfg.method.finetune_teacher(cfg, fc, run))
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(f"--distill-teacher: {path}: directory not found")
    clf = load_classifier(directory)
    return FrozenTeacher(clf, source=directory.resolve(), sha256=file_sha256(directory / "model.safetensors"),
                         encoder=clf.backbone.encoder)


def adversary_num_classes(ds, key: str) -> int:
    """Number of classes of the ``--adversary`` field: 1 + its largest value over the training samples (a dataset
    may give the whole column as ``ds.columns[key]``). A missing or non-integer field is a one-line error."""
    from .data.utils import label_column

    if len(ds) and key not in ds[0]:
        raise ConfigError(f"--adversary {key}: the samples of {type(ds).__name__} have no field {key!r} (they have: "
                          f"{', '.join(ds[0])})")
    col = label_column(ds, key)
    if col.is_floating_point() or col.ndim != 1 or (len(col) and int(col.min()) < 0):
        raise ConfigError(f"--adversary {key}: the field must be one non-negative integer class per sample")
    return int(col.max()) + 1 if len(col) else 0


def run_finetune(cfg: RunConfig, fc: FinetuneConfig, run: str | None, out: str | None = None,
                 overwrite: bool = False) -> dict:
    from safetensors.torch import save_file

    from .checkpoint import atomic_write, save_pretrained
    from .data.utils import subset_fraction
    from .eval import finetune as train_classifier
    from .eval.finetune import HEAD_WEIGHTS, classifier_head_state
    from .rundir import RunDir, default_run_path
    from .train.distributed import world_info

    # the teacher first (a default one may be trained now): prepare_eval then seeds, so the student's start does not
    # depend on whether the teacher was cached
    teacher = finetune_teacher(cfg, fc, run) if fc.distills else None
    train_set, test_set, model = prepare_eval(cfg, run, fc.scratch, cfg.train.seed)
    require_labels(train_set, model)
    nc = num_classes(train_set)
    train_set = subset_fraction(train_set, fc.label_fraction, seed=cfg.train.seed)
    multilabel = getattr(train_set, "multilabel", False)
    adversary_classes = adversary_num_classes(train_set, fc.adversary) if fc.adversarial else 0
    dest = Path(out) if out else (Path(run) / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}" if run
                                  else default_run_path(cfg.domain, cfg.method.name + "-scratch"))
    rank = world_info()[0]
    rdir = RunDir(dest, overwrite=overwrite, keep_replaced=True).lock() if rank == 0 else RunDir(dest, create=False)
    record = cfg.to_dict()
    record["finetune"] = dataclasses.asdict(fc)
    if teacher is not None:
        record["finetune"].update(distill_teacher=teacher.source, distill_teacher_sha256=teacher.sha256)
    clean = False
    try:
        if rank == 0:
            rdir.write_config(record)
        clf, summary = train_classifier(model, train_set, test_set, nc, cfg.train, layer_decay=fc.layer_decay,
                                        drop_path=fc.drop_path_rate, pool=fc.pool, multilabel=multilabel,
                                        label_smoothing=fc.label_smoothing, run_dir=rdir,
                                        collate_fn=dataset_collate(train_set), distill_token=teacher is not None,
                                        teacher=teacher, adversary_key=fc.adversary if fc.adversarial else "",
                                        adversary_classes=adversary_classes, adversary_lambda=fc.adversary_lambda)
        clean = True
    except BaseException:
        if rank == 0:  # nothing half-made is left (e.g. a finetune-*/config.yaml inside the source run)
            if rdir.latest_checkpoint() is None:
                rdir.abandon()
            else:
                rdir.finish_replacement()
                rdir.unlock()
        raise
    finally:
        _teardown_distributed(clean)
    if rank != 0:
        return summary
    rdir.finish_replacement()
    try:
        save_pretrained(clf.backbone, dest, extra={"run_config": record, "num_classes": nc, "multilabel": multilabel})
        head = classifier_head_state(clf)  # head, fc_norm (and distillation token + head)
        atomic_write(dest / HEAD_WEIGHTS, lambda tmp: save_file(head, tmp))
        rdir.write_summary(summary)
    finally:
        rdir.unlock()
    print(f"run directory: {dest}")
    summary = dict(summary)
    summary["run_dir"] = str(dest)
    return summary


def reconstruct(run: Run | str | os.PathLike, out: str | None = None, num: int = 8, split: str = "test",
                seed: int = 0, **options) -> str:
    """Draw original, masked input and reconstruction for ``num`` samples of a run; returns the picture's path."""
    path = str(run.path if isinstance(run, Run) else run)
    cfg = resolve_run_config(run=path, base="run", overrides=options)
    return run_reconstruct(cfg, path, out, num, split, seed)


def run_reconstruct(cfg: RunConfig, run: str, out: str | None, num: int, split: str, seed: int) -> str:
    if cfg.method.visualize is None:
        raise ConfigError(f"method {cfg.method.name!r} has no reconstruction picture")
    model = from_pretrained(run)
    ds = build_split(cfg, split)
    out = out or str(Path(run) / "pictures" / f"{cfg.method.picture}-{time.strftime('%Y%m%d-%H%M%S')}.png")
    return cfg.method.visualize(model, ds, out, num=num, seed=seed)
