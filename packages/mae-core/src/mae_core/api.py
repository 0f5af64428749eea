"""The public Python API: make a registered model, a dataset, load a run.

    import mae_core
    mae_core.list_models("point-*")                      # registered methods of every installed domain
    model = mae_core.create_model("image-mae", depth=4)  # config overrides as keywords; the method's adapt applied
    run = mae_core.load_run("runs/x")                    # model + resolved config + datasets of a run
    feats = run.model.encode(batch)

Training and evaluation (:func:`pretrain`, :func:`probe`, :func:`finetune`) live in :mod:`mae_core.workflows`; the
``mae-<domain>`` CLIs are a thin layer over both modules.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import registry
from .config import from_dict
from .errors import ConfigError, MaeError
from .runconfig import RunConfig, resolve_run_config


def list_models(pattern: str = "*", domain: str | None = None) -> list[str]:
    """Names of the registered methods matching a shell-style ``pattern`` (``"point-*"``), every installed domain."""
    return registry.method_names(pattern, domain)


def list_datasets(pattern: str = "*", domain: str | None = None) -> list[str]:
    import fnmatch
    registry.autoload(domain)
    return sorted(d.name for d in registry.datasets(domain) if fnmatch.fnmatchcase(d.name, pattern))


class _LazyDataset:
    """Stands for a dataset that is built only if an ``adapt`` function looks at it."""

    def __init__(self, build):
        self._build, self._ds = build, None

    def _get(self):
        if self._ds is None:
            self._ds = self._build()
        return self._ds

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def __getitem__(self, i):
        return self._get()[i]

    def __len__(self):
        return len(self._get())


def _data_config(dspec: registry.DatasetSpec, data_config: Any):
    if data_config is None or isinstance(data_config, dict):
        return from_dict(dspec.config_cls, data_config, where=f"{dspec.name}: data")
    return data_config


def adapt_config(spec: registry.MethodSpec, model_config: Any, dataset: Any = None, data_config: Any = None,
                 dataset_name: str | None = None):
    """Apply the method's ``adapt`` (the model follows the data). ``dataset``: a built dataset; otherwise the
    named (or the method's default) dataset, built only if ``adapt`` reads it."""
    if spec.adapt is None:
        return model_config
    name = dataset_name or spec.default_dataset
    own = getattr(dataset, "config", None)
    if data_config is None and own is not None and dataset_name is None:
        # a built dataset carries its own config: adapt to that one (and to its registered dataset)
        match = [d for d in registry.datasets(spec.domain) if isinstance(own, d.config_cls)]
        if match:
            name, data_config = match[0].name, own
    if dataset is None and name is None:
        return model_config
    dspec = registry.get_dataset(name, spec.domain) if name else None
    if data_config is None or isinstance(data_config, dict):
        if dspec is None:
            raise ConfigError(f"{spec.name}: a data config needs a dataset name")
        data_config = _data_config(dspec, data_config)
    if dataset is None:
        dataset = _LazyDataset(lambda: dspec.build(data_config, "train"))
    return spec.adapt(model_config, data_config, dataset)


def create_model(name: str, *, domain: str | None = None, dataset: Any = None, data_config: Any = None,
                 adapt: bool = True, **overrides):
    """A registered method, built from its config with ``overrides`` (fields of its config dataclass).

    The method's ``adapt`` makes the model follow the data, as the CLI does: ``dataset`` is a built dataset or a
    registered dataset name (default: the method's embedded dataset), ``data_config`` its config (dataclass or
    dict). A field given in ``overrides`` keeps its value (``img_size=16`` builds a 16-pixel model even though the
    embedded data is 32 px); ``adapt=False`` builds exactly the config given.
    """
    import dataclasses

    from .config import canonical

    spec = registry.get_method(name, domain)
    config = from_dict(spec.config_cls, overrides, where=f"{spec.name}: model")
    if adapt:
        dataset_name = dataset if isinstance(dataset, str) else None
        built = None if isinstance(dataset, str) else dataset
        adapted = adapt_config(spec, config, built, data_config, dataset_name)
        given = set(canonical(spec.config_cls, overrides)) & {f.name for f in dataclasses.fields(config)}
        config = dataclasses.replace(adapted, **{k: getattr(config, k) for k in given})
    return registry.build_model(spec.name, config, spec.domain)


def create_dataset(name: str, split: str = "train", *, domain: str | None = None, config: Any = None,
                   **overrides):
    """A registered dataset's ``split`` ("train" or "test"); ``config`` (dataclass or dict) and/or keyword fields."""
    spec = registry.get_dataset(name, domain)
    if config is not None and not isinstance(config, dict):
        if overrides:
            import dataclasses
            config = dataclasses.replace(config, **overrides)
    else:
        config = from_dict(spec.config_cls, {**(config or {}), **overrides}, where=f"{spec.name}: data")
    ds = spec.build(config, split)
    if len(ds) == 0:
        raise MaeError(f"{getattr(config, 'path', None) or spec.name}: the {split} split has no samples")
    return ds


def build_split(cfg: RunConfig, split: str):
    """The ``split`` of a resolved run's dataset, refusing an empty one."""
    ds = cfg.dataset.build(cfg.data, split)
    if len(ds) == 0:
        raise MaeError(f"{getattr(cfg.data, 'path', None) or cfg.dataset.name}: the {split} split has no samples")
    return ds


def save_pretrained(model, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """``model.safetensors`` + ``config.json`` (method name and model config): what :func:`from_pretrained` reads."""
    from .checkpoint import save_pretrained as save
    return save(model, directory, extra=extra)


def from_pretrained(directory: str | os.PathLike, config_overrides: dict | None = None):
    """Rebuild a registered model from a ``save_pretrained`` or run directory (its saved config, no ``adapt``)."""
    from .checkpoint import from_pretrained as load
    return load(directory, config_overrides=config_overrides)


@dataclass
class Run:
    """A pretraining run directory, loaded: its model (with the trained weights), resolved config and summary."""

    path: Path
    model: Any
    config: RunConfig | None
    summary: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return getattr(self.model, "method_name", "")

    def dataset(self, split: str = "train", **overrides):
        """The run's dataset (its saved data config, with keyword overrides) for ``split``."""
        if self.config is None:
            raise ConfigError(f"{self.path}: no config.yaml, so the run's dataset is unknown")
        data = self.config.data
        if overrides:
            import dataclasses
            data = dataclasses.replace(data, **overrides)
        return self.config.dataset.build(data, split)

    def encode(self, batch, pool: str | None = None):
        import torch
        self.model.eval()
        with torch.no_grad():
            return self.model.encode(batch, pool) if pool else self.model.encode(batch)


def load_run(path: str | os.PathLike, model_overrides: dict | None = None, weights: bool = True,
             **overrides) -> Run:
    """Load a run directory (or a ``save_pretrained`` directory): the model with its weights, the resolved run config
    (method, dataset, model / data / train configs; ``overrides`` by option name, as for :func:`pretrain`) and the
    summary. ``model_overrides``: model fields that replace the saved ones (e.g. fine-tuning options);
    ``weights=False``: the run's architecture freshly initialised (a from-scratch baseline of the same model)."""
    import json

    from .checkpoint import read_config

    path = Path(path)
    if not path.is_dir():
        raise MaeError(f"{path}: run directory not found")
    cfg = None
    if (path / "config.yaml").exists():
        cfg = resolve_run_config(run=str(path), base="run", overrides=overrides)
    elif overrides:
        raise ConfigError(f"{path}: no config.yaml (a save_pretrained directory), so options {sorted(overrides)} "
                          "cannot apply")
    saved = read_config(path)
    if weights:
        model = from_pretrained(path, config_overrides=model_overrides)
    else:
        from .config import canonical
        cls = registry.get_method(saved["method"]).config_cls
        model = registry.build_model(saved["method"], {**canonical(cls, saved.get("config"), str(path)),
                                                       **canonical(cls, model_overrides, "model_overrides")})
    if cfg is None and isinstance(saved.get("run_config"), dict):
        rc = saved["run_config"]
        try:
            cfg = resolve_run_config(rc.get("method"), domain=rc.get("domain"), dataset=rc.get("dataset"),
                                     sections={s: rc.get(s) or {} for s in ("model", "data", "train")})
        except (ConfigError, MaeError):
            cfg = None
    summary = {}
    if (path / "summary.json").exists():
        try:
            summary = json.loads((path / "summary.json").read_text())
        except json.JSONDecodeError:
            summary = {}
    return Run(path, model, cfg, summary)
