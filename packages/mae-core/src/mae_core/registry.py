"""A registry, not a switch statement: methods, datasets, presets and extra CLI commands register under
``(domain, name)``. The public API (:mod:`mae_core.api`) and the CLI of every domain are built from it.

Domain packages are found through the ``mae.domains`` entry-point group: each package declares, in its
``pyproject.toml``, ``[project.entry-points."mae.domains"] <domain> = "<module>"``; importing that module registers
its parts. The core names no domain: it imports whatever is installed.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError

ENTRY_POINT_GROUP = "mae.domains"


@dataclass
class MethodSpec:
    name: str
    domain: str
    config_cls: type
    model_cls: Callable[[Any], Any]  # built as model_cls(config)
    description: str = ""
    default_dataset: str | None = None
    paper: str = ""
    visualize: Callable | None = None  # visualize(model, dataset, path, num=, seed=) -> writes a picture
    picture: str = "reconstruction"  # file name (without .png) of that picture in the run's pictures/ folder
    train_defaults: dict = field(default_factory=dict)  # overrides of TrainConfig for this method
    # overrides of TrainConfig on top of train_defaults when the data is the method's default (embedded) dataset:
    # the recipe of the no-argument run, which a user's own data does not inherit
    default_dataset_train: dict = field(default_factory=dict)
    # overrides of the model config there too (same rule: the no-argument run's model; a user's data, create_model
    # and a preset start from the config class's defaults)
    default_dataset_model: dict = field(default_factory=dict)
    # fine-tuning this method: overrides of TrainConfig (over mae_core.runconfig.FINETUNE_TRAIN_DEFAULTS), of
    # FinetuneConfig (layer_decay, drop_path_rate, ...) and of the data config (fields the dataset has, e.g. a
    # fine-tuning augmentation); flags, keywords and config files still win
    finetune_defaults: dict = field(default_factory=dict)
    finetune_options: dict = field(default_factory=dict)
    finetune_data: dict = field(default_factory=dict)
    # finetune_teacher(run_config, finetune_config, run_dir) -> directory of a fine-tuned classifier: the teacher
    # that ``--distill-teacher default`` (hard distillation with a distillation token) uses; None: the method has none
    finetune_teacher: Callable | None = None
    # adapt(model_config, data_config, dataset) -> model_config: make the model follow the data (input size,
    # channels, vocabulary...). Applied by create_model whenever a model is built for data, on every path.
    adapt: Callable | None = None
    # {"model": {...}, "data": {...}}: overrides of the model config and of the default dataset's config that make
    # both tiny; tests/test_contract.py builds every registered method this way
    tiny: dict = field(default_factory=dict)
    # the domain's default method (what ``pretrain`` runs with no --method); registration order does not decide it,
    # since a test or a user may import a method module before its domain's entry module
    default: bool = False


@dataclass
class DatasetSpec:
    name: str
    domain: str
    config_cls: type
    build: Callable  # build(config, split: "train" | "test") -> torch Dataset of dict samples
    description: str = ""
    takes_path: bool = False  # chosen automatically when the user passes --data PATH
    accepts: Callable | None = None  # accepts(path) -> bool: which --data paths this dataset reads (default: dirs)


@dataclass
class PresetSpec:
    name: str
    domain: str
    method: str
    overrides: dict  # {"model": {...}, "data": {...}, "train": {...}, "dataset": name}
    description: str = ""


@dataclass
class CommandSpec:
    name: str
    domain: str
    help: str
    add_arguments: Callable  # add_arguments(parser)
    run: Callable  # run(args) -> int | None; with run_flags: run(args, run_config) -> int | None
    # run_flags: the parser also gets --run and every method / dataset / train flag (as `probe` does); the CLI
    # resolves them into a RunConfig (mae_core.runconfig) that ``run`` receives as its second argument
    run_flags: bool = False


METHODS: dict[tuple[str, str], MethodSpec] = {}
DATASETS: dict[tuple[str, str], DatasetSpec] = {}
PRESETS: dict[tuple[str, str], PresetSpec] = {}
COMMANDS: dict[tuple[str, str], CommandSpec] = {}


def _same_definition(a, b) -> bool:
    """Two specs are the same registration when they name the same callables (a module imported twice)."""
    def key(s):
        fn = getattr(s, "model_cls", None) or getattr(s, "build", None) or getattr(s, "run", None)
        return (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))
    return type(a) is type(b) and key(a) == key(b) and key(a) != (None, None)


def _register(table: dict, spec, kind: str):
    key = (spec.domain, spec.name)
    if key in table and table[key] is not spec and not _same_definition(table[key], spec):
        raise ConfigError(f"{kind} {spec.name!r} is already registered in domain {spec.domain!r}")
    table[key] = spec
    return spec


def register_method(spec: MethodSpec) -> MethodSpec:
    return _register(METHODS, spec, "method")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return _register(DATASETS, spec, "dataset")


def register_preset(spec: PresetSpec) -> PresetSpec:
    return _register(PRESETS, spec, "preset")


def register_command(spec: CommandSpec) -> CommandSpec:
    return _register(COMMANDS, spec, "command")


# ---- discovery -----------------------------------------------------------------------------------------------------
def domain_entry_points() -> dict[str, str]:
    """``{domain: module}`` of every installed package that declares a ``mae.domains`` entry point."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


_LOADED: set[str] = set()


def autoload(domain: str | None = None) -> None:
    """Import the installed domain packages (they register on import); only ``domain`` when given."""
    import importlib

    for d, mod in domain_entry_points().items():
        if (domain is not None and d != domain) or d in _LOADED:
            continue
        try:
            importlib.import_module(mod)
        except ImportError as e:  # a domain whose own dependencies are missing: the others still work
            import warnings
            warnings.warn(f"domain {d!r} ({mod}) could not be imported: {e}", stacklevel=2)
        _LOADED.add(d)


def domains() -> list[str]:
    return sorted(domain_entry_points())


# ---- lookup ----------------------------------------------------------------------------------------------------------
def _find(table: dict, name: str, domain: str | None) -> list:
    return [s for (d, n), s in table.items() if n == name and (domain is None or d == domain)]


def _get(table: dict, name: str, kind: str, domain: str | None):
    found = _find(table, name, domain)
    if not found:
        autoload(domain)
        found = _find(table, name, domain)
    if len(found) > 1:
        where = ", ".join(sorted(s.domain for s in found))
        raise ConfigError(f"{kind} {name!r} exists in several domains ({where}); say which with domain=")
    if not found:
        names = sorted(n for (d, n) in table if domain is None or d == domain)
        raise ConfigError(f"unknown {kind} {name!r}; choose from: {', '.join(names) or '(none registered)'}")
    return found[0]


def get_method(name: str, domain: str | None = None) -> MethodSpec:
    return _get(METHODS, name, "method", domain)


def get_dataset(name: str, domain: str | None = None) -> DatasetSpec:
    return _get(DATASETS, name, "dataset", domain)


def get_preset(name: str, domain: str | None = None) -> PresetSpec:
    return _get(PRESETS, name, "preset", domain)


def methods(domain: str | None = None) -> list[MethodSpec]:
    return [m for m in METHODS.values() if domain is None or m.domain == domain]


def datasets(domain: str | None = None) -> list[DatasetSpec]:
    return [d for d in DATASETS.values() if domain is None or d.domain == domain]


def presets(domain: str | None = None) -> list[PresetSpec]:
    return [p for p in PRESETS.values() if domain is None or p.domain == domain]


def commands(domain: str) -> list[CommandSpec]:
    return [c for (d, _), c in COMMANDS.items() if d == domain]


def method_names(pattern: str = "*", domain: str | None = None) -> list[str]:
    """Registered method names matching a shell-style ``pattern`` (every installed domain is imported first)."""
    autoload(domain)
    return sorted(m.name for m in methods(domain) if fnmatch.fnmatchcase(m.name, pattern))


def build_model(method: str, config: Any = None, domain: str | None = None):
    """Instantiate a registered method from its config dataclass, or a dict of its fields, as given (no
    ``adapt``: :func:`mae_core.api.create_model` is the call that makes a model for data)."""
    from .config import from_dict

    spec = get_method(method, domain)
    if config is None or isinstance(config, dict):
        config = from_dict(spec.config_cls, config, where=f"{spec.name}: model")
    model = spec.model_cls(config)
    model.method_name = spec.name
    return model
