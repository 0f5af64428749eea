"""A registry, not a switch statement: methods, datasets, presets and extra CLI commands register under a name
and a domain. The CLI of every domain is built from it (see :mod:`mae_core.cli`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError


@dataclass
class MethodSpec:
    name: str
    domain: str
    config_cls: type
    model_cls: Callable[[Any], Any]  # built as model_cls(config)
    description: str = ""
    default_dataset: str | None = None
    paper: str = ""
    visualize: Callable | None = None  # visualize(model, batch, path, **kw) -> writes a picture
    train_defaults: dict = field(default_factory=dict)  # overrides of TrainConfig for this method


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
    run: Callable  # run(args) -> int | None


METHODS: dict[str, MethodSpec] = {}
DATASETS: dict[str, DatasetSpec] = {}
PRESETS: dict[str, PresetSpec] = {}
COMMANDS: dict[tuple[str, str], CommandSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    METHODS[spec.name] = spec
    return spec


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


def register_preset(spec: PresetSpec) -> PresetSpec:
    PRESETS[spec.name] = spec
    return spec


def register_command(spec: CommandSpec) -> CommandSpec:
    COMMANDS[(spec.domain, spec.name)] = spec
    return spec


DOMAIN_MODULES = {"core": "mae_core.image", "medical": "mae_medical", "3d": "mae_3d", "video": "mae_video",
                  "graph": "mae_graph", "audio": "mae_audio", "text": "mae_text"}


def autoload(domain: str | None = None) -> None:
    """Import the domain packages (which register on import) so a saved model of any installed domain loads."""
    import importlib

    for d, mod in DOMAIN_MODULES.items():
        if domain is not None and d != domain:
            continue
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def _get(table: dict, name: str, kind: str, domain: str | None):
    if name not in table:
        autoload(domain)
    if name not in table:
        names = sorted(k for k, v in table.items() if domain is None or v.domain == domain)
        raise ConfigError(f"unknown {kind} {name!r}; choose from: {', '.join(names) or '(none registered)'}")
    return table[name]


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


def build_model(method: str, config: Any = None):
    """Instantiate a registered method from its config dataclass, or a dict of its fields."""
    from .config import from_dict

    spec = get_method(method)
    if config is None or isinstance(config, dict):
        config = from_dict(spec.config_cls, config, where="model")
    model = spec.model_cls(config)
    model.method_name = spec.name
    return model
