"""What to run, resolved once for the Python API and the CLI alike.

A run is a method, a dataset and three typed configs (model, data, train). They are layered:

    method defaults (its train defaults; on its embedded dataset also its default_dataset_train / _model)
    < the run's saved config (probe / fine-tune of a run)
    < preset < config file < explicit overrides (keywords in Python, flags on the command line)

Fine-tuning puts its own optimiser defaults (:data:`FINETUNE_TRAIN_DEFAULTS`) over the preset's train section.

:func:`resolve` does the layering and returns a :class:`RunConfig`; :func:`option_names` gives the one name of every
config field (``epochs``, ``mask_ratio``, ``data_seed`` when a name is taken by an earlier section), the same for a
keyword of :func:`mae_core.pretrain` and a ``--flag`` of the CLI. A renamed field's old name (``__aliases__`` of its
config class, :mod:`mae_core.config`) is still accepted in every layer, as a keyword and as a flag
(:func:`alias_option_names`), with a one-line deprecation note.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from . import registry
from .config import aliases, canonical, deprecation_note, from_dict, load_yaml, to_dict
from .errors import ConfigError

SECTIONS = ("train", "model", "data")
TOP_KEYS = ("method", "dataset", "preset", "model", "data", "train", "out")

# Fine-tuning trains with its own optimiser settings, not the pretraining ones (the reference main_finetune.py:
# AdamW with torch's default betas, blr 1e-3, 5 warm-up epochs, min lr 1e-6). A method refines them with
# ``MethodSpec.finetune_defaults``; a config file or a flag still wins. The warm-up is also capped at a tenth of the
# epochs (the reference's 5 of 50), so that a short fine-tuning run gets past its warm-up.
# A pretraining mask schedule (a method's train default, e.g. LMD's) does not apply: fine-tuning does not mask.
FINETUNE_TRAIN_DEFAULTS = {"betas": (0.9, 0.999), "base_lr": 1e-3, "warmup_epochs": 5.0, "min_lr": 1e-6,
                           "mask_schedule": "constant"}
FINETUNE_WARMUP_FRACTION = 0.1


def on_default_dataset(mspec: registry.MethodSpec, dspec: registry.DatasetSpec | None) -> bool:
    """Whether a run of ``mspec`` is on its default (embedded) dataset: the no-argument run's own recipe applies."""
    return dspec is not None and dspec.name == mspec.default_dataset


def method_train_defaults(mspec: registry.MethodSpec, dspec: registry.DatasetSpec) -> dict:
    """The train settings a pretraining run of ``mspec`` on ``dspec`` starts from: the method's ``train_defaults``,
    with its ``default_dataset_train`` over them on its default (embedded) dataset."""
    return {**mspec.train_defaults, **(mspec.default_dataset_train if on_default_dataset(mspec, dspec) else {})}


def method_model_defaults(mspec: registry.MethodSpec, dspec: registry.DatasetSpec) -> dict:
    """The model settings a run of ``mspec`` on ``dspec`` starts from, over its config class's defaults: the
    method's ``default_dataset_model`` on its default (embedded) dataset, nothing elsewhere."""
    return dict(mspec.default_dataset_model) if on_default_dataset(mspec, dspec) else {}


def finetune_train_defaults(mspec: registry.MethodSpec) -> dict:
    """The train settings a fine-tuning run of ``mspec`` starts from (over the method's pretraining defaults)."""
    return {**FINETUNE_TRAIN_DEFAULTS, **mspec.finetune_defaults}
# names that select what to run; a config field of the same name gets its section prefix
RESERVED = {"method", "dataset", "data", "preset", "config", "run", "out", "overwrite", "resume", "nproc"}


@dataclasses.dataclass
class RunConfig:
    """A resolved run: the method and dataset specs and their typed configs."""

    domain: str
    method: registry.MethodSpec
    dataset: registry.DatasetSpec
    preset: str | None
    model: Any
    data: Any
    train: Any
    out: str | None = None
    model_explicit: dict = dataclasses.field(default_factory=dict)  # model fields given explicitly (file / flags)

    def to_dict(self) -> dict:
        return {"domain": self.domain, "method": self.method.name, "dataset": self.dataset.name,
                "preset": self.preset, "model": to_dict(self.model), "data": to_dict(self.data),
                "train": to_dict(self.train)}


@dataclasses.dataclass
class Selection:
    """What the user named: method, dataset, preset, config file (path or mapping), data path, source run."""

    method: str | None = None
    dataset: str | None = None
    preset: str | None = None
    config: str | dict | None = None
    data: str | None = None
    run: str | None = None
    out: str | None = None
    resume: bool = False


@dataclasses.dataclass
class Chosen:
    """The specs picked by :func:`choose` and the config layers read on the way."""

    domain: str
    method: registry.MethodSpec
    dataset: registry.DatasetSpec
    preset: registry.PresetSpec | None
    file_cfg: dict
    run_cfg: dict
    where: str  # the config file's name, for error messages


def _default_method(domain: str) -> str:
    registry.autoload(domain)
    ms = registry.methods(domain)
    if not ms:
        raise ConfigError(f"no methods registered for domain {domain!r}")
    marked = [m for m in ms if m.default]
    return (marked or ms)[0].name


def choose(sel: Selection, domain: str | None = None) -> Chosen:
    """Pick the method, dataset and preset specs and read the config file / saved run config."""
    file_cfg: dict = {}
    where = "flags"
    if isinstance(sel.config, dict):
        file_cfg, where = dict(sel.config), "config"
    elif sel.config:
        file_cfg, where = load_yaml(sel.config), str(sel.config)
    saved = os.path.join(sel.out, "config.yaml") if sel.out else None
    if sel.resume and saved and not sel.config and os.path.exists(saved):
        # continuing a run: its resolved config is the base, explicit overrides still win
        file_cfg = {k: v for k, v in load_yaml(saved).items() if k != "domain"}
        where = saved
    run_cfg: dict = {}
    if sel.run:
        from .rundir import RunDir
        run_cfg = RunDir(sel.run, create=False).read_config()
    domain = domain or run_cfg.get("domain")
    preset = sel.preset or file_cfg.get("preset") or None
    pspec = registry.get_preset(preset, domain) if preset else None
    method = sel.method or file_cfg.get("method") or (pspec.method if pspec else None) or run_cfg.get("method")
    if not method:
        method = _default_method(domain or "core")
    mspec = registry.get_method(method, domain)
    domain = mspec.domain
    dataset = sel.dataset or file_cfg.get("dataset") or (pspec.overrides.get("dataset") if pspec else None)
    if not dataset and sel.data:
        takes = [d for d in registry.datasets(domain) if d.takes_path]
        if not takes:
            raise ConfigError(f"--data given but no dataset of domain {domain!r} reads a path")
        fits = [d for d in takes if (d.accepts(sel.data) if d.accepts else os.path.isdir(sel.data))]
        dataset = (fits or takes)[0].name
    dataset = dataset or run_cfg.get("dataset") or mspec.default_dataset
    if not dataset:
        raise ConfigError(f"method {method!r} has no default dataset; give --dataset or --data")
    dspec = registry.get_dataset(dataset, domain)
    return Chosen(domain, mspec, dspec, pspec, file_cfg, run_cfg, where)


def option_names(mspec: registry.MethodSpec, dspec: registry.DatasetSpec, taken: set[str] | None = None
                 ) -> dict[str, tuple[str, str]]:
    """``{name: (section, field)}`` for every field of TrainConfig, the model config and the data config, in that
    order; a name already taken gets its section as a prefix (``data_seed``). ``data.path`` is ``data=`` itself."""
    from .train import TrainConfig

    taken = set(RESERVED if taken is None else taken)
    out = {}
    for section, cls in (("train", TrainConfig), ("model", mspec.config_cls), ("data", dspec.config_cls)):
        for f in dataclasses.fields(cls):
            if section == "data" and f.name == "path":
                continue
            name = f.name if f.name not in taken else f"{section}_{f.name}"
            taken.add(f.name)
            out[name] = (section, f.name)
    return out


def section_classes(mspec: registry.MethodSpec, dspec: registry.DatasetSpec) -> dict[str, type]:
    from .train import TrainConfig

    return {"train": TrainConfig, "model": mspec.config_cls, "data": dspec.config_cls}


def alias_option_names(mspec: registry.MethodSpec, dspec: registry.DatasetSpec, taken: set[str] | None = None
                       ) -> dict[str, tuple[str, str, str]]:
    """``{old option name: (section, new field, old field)}`` for the deprecated field names (``__aliases__``); an
    old name that is already taken (by a field or an earlier alias) gets its section as a prefix."""
    taken = set(RESERVED if taken is None else taken)
    names = option_names(mspec, dspec, taken)
    taken |= set(names) | {f for _, f in names.values()}
    out = {}
    for section, cls in section_classes(mspec, dspec).items():
        for old, new in aliases(cls).items():
            name = old if old not in taken else f"{section}_{old}"
            taken.add(old)
            out[name] = (section, new, old)
    return out


def route(ch: Chosen, overrides: dict) -> dict[str, dict]:
    """Sort keyword overrides into sections by :func:`option_names` (deprecated names by
    :func:`alias_option_names`); an unknown keyword is a ConfigError."""
    names = option_names(ch.method, ch.dataset)
    olds = alias_option_names(ch.method, ch.dataset)
    classes = section_classes(ch.method, ch.dataset)
    out: dict[str, dict] = {s: {} for s in SECTIONS}
    for k, v in overrides.items():
        if k in olds and k not in names:
            section, new, old = olds[k]
            new_opt = next((n for n, sf in names.items() if sf == (section, new)), new)
            if new_opt in overrides:
                raise ConfigError(f"options {k!r} and {new_opt!r} both given ({k} is the deprecated name of "
                                  f"{new_opt}); give only {new_opt}")
            deprecation_note(classes[section], old, f"option {k}", new_opt)
            out[section][new] = v
            continue
        if k not in names:
            raise ConfigError(f"unknown option {k!r} for method {ch.method.name!r} on dataset {ch.dataset.name!r}; "
                              f"known: {', '.join(sorted(names))}")
        section, fname = names[k]
        out[section][fname] = v
    return out


def resolve(ch: Chosen, sel: Selection, explicit: dict[str, dict] | None = None, base: str = "method") -> RunConfig:
    """Layer the configs: defaults < the run's saved config (``base="run"`` or ``"finetune"``) < preset < file <
    ``explicit``. ``base="finetune"`` also puts :func:`finetune_train_defaults` over the preset's train section."""
    from .train import TrainConfig

    explicit = explicit or {}
    mspec, dspec, pspec, file_cfg, run_cfg = ch.method, ch.dataset, ch.preset, ch.file_cfg, ch.run_cfg
    classes = section_classes(mspec, dspec)

    def layer(s: str, values: dict | None, where: str) -> dict:  # deprecated names -> new names, layer by layer
        return canonical(classes[s], values, f"{where}: {s}")

    train_defaults = method_train_defaults(mspec, dspec)
    layered: dict = {"model": layer("model", method_model_defaults(mspec, dspec), mspec.name), "data": {},
                     "train": layer("train", train_defaults, mspec.name)}
    if run_cfg and base in ("run", "finetune"):
        for s in ("model", "data"):
            if run_cfg.get("dataset") == dspec.name or s == "model":
                layered[s].update(layer(s, run_cfg.get(s, {}), "saved run config"))
    if pspec:
        for s in SECTIONS:
            layered[s].update(layer(s, pspec.overrides.get(s, {}), f"preset {pspec.name}"))
    if base == "finetune":
        layered["train"].update(layer("train", finetune_train_defaults(mspec), f"{mspec.name} fine-tuning"))
        data_fields = {f.name for f in dataclasses.fields(dspec.config_cls)}
        layered["data"].update({k: v for k, v in mspec.finetune_data.items() if k in data_fields})
    unknown_top = set(file_cfg) - set(TOP_KEYS)
    if unknown_top:
        raise ConfigError(f"{ch.where}: unknown key {sorted(unknown_top)[0]!r} (known: {', '.join(TOP_KEYS)})")
    file_sections = {}
    for s in SECTIONS:
        sect = file_cfg.get(s) or {}
        if not isinstance(sect, dict):
            raise ConfigError(f"{ch.where}: section {s!r} must be a mapping")
        file_sections[s] = layer(s, sect, ch.where)
        layered[s].update(file_sections[s])
    explicit = {s: layer(s, explicit.get(s), "options") for s in SECTIONS}
    for s in SECTIONS:
        layered[s].update(explicit[s])
    if sel.data:
        layered["data"]["path"] = sel.data
    model_explicit = dict(file_sections["model"])
    model_explicit.update(explicit["model"])
    train = from_dict(TrainConfig, layered["train"], f"{ch.where}: train")
    if base == "finetune" and "warmup_epochs" not in {**file_sections["train"], **explicit["train"]}:
        train.warmup_epochs = min(train.warmup_epochs, FINETUNE_WARMUP_FRACTION * train.epochs)
    data = from_dict(dspec.config_cls, layered["data"], f"{ch.where}: data")
    model = from_dict(mspec.config_cls, layered["model"], f"{ch.where}: model")
    return RunConfig(ch.domain, mspec, dspec, pspec.name if pspec else None, model, data, train,
                     sel.out or file_cfg.get("out"), model_explicit)


def resolve_run_config(method: str | None = None, *, domain: str | None = None, base: str = "method",
                       overrides: dict | None = None, sections: dict[str, dict] | None = None,
                       **selection) -> RunConfig:
    """:func:`choose` + :func:`route` + :func:`resolve` in one call (the Python API's path).

    ``selection``: the :class:`Selection` fields (dataset, preset, config, data, run, out, resume);
    ``overrides``: keyword options by their :func:`option_names`; ``sections``: ``{"model": {...}, ...}``."""
    sel = Selection(method=method, **selection)
    ch = choose(sel, domain)
    explicit = route(ch, overrides or {})
    for s, vals in (sections or {}).items():
        if s not in SECTIONS:
            raise ConfigError(f"unknown config section {s!r} (known: {', '.join(SECTIONS)})")
        explicit[s].update(vals or {})
    return resolve(ch, sel, explicit, base=base)
