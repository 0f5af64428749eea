"""Typed configs as data: dataclasses whose fields carry a help string, loadable from YAML, shown by the CLI.

A field is declared with :func:`field` (``field(0.75, "fraction of tokens masked")``). ``from_dict`` checks every
key and type and names the offending key in a one-line :class:`ConfigError`.

Renamed fields: a config class may declare ``__aliases__: ClassVar[dict] = {"old_name": "new_name"}`` (collected over
its MRO). :func:`from_dict` (and every layer of :mod:`mae_core.runconfig`, the keyword options and the CLI flags) then
reads the old name as the new one and prints one deprecation note per process and (class, old name) on stderr; giving
both names is a ConfigError. Aliases live for one release.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any, ClassVar, Union, get_args, get_origin  # noqa: F401  (ClassVar: for __aliases__)

import yaml

from .errors import ConfigError


def field(default: Any, help: str = "", choices: list | None = None, *, ge: float | None = None,  # noqa: A002
          gt: float | None = None, le: float | None = None, lt: float | None = None, **kw):
    """A config field: its default, help string, and optionally its choices and valid range (``ge`` / ``gt`` /
    ``le`` / ``lt``), checked by :func:`from_dict` for every value given (a number out of range, NaN or inf is a
    one-line ConfigError naming the field)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = list(choices)
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if bounds:
        meta["bounds"] = bounds
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp):
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), True
    return tp, False


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check / convert one value to the declared type, or raise a ConfigError naming ``where``."""
    base, optional = _strip_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional or base is Any:
            return None
        raise ConfigError(f"{where}: a value is required (got null)")
    origin = get_origin(base)
    if base is Any:
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if base is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(base)
        item_tp = args[0] if args else Any
        out = [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


_NOTED: set = set()


def aliases(cls) -> dict[str, str]:
    """``{old_name: new_name}`` of a config class, collected over its MRO (a subclass's entries win)."""
    out: dict[str, str] = {}
    for k in reversed(getattr(cls, "__mro__", ())):
        out.update(vars(k).get("__aliases__") or {})
    return out


def deprecation_note(cls, old: str, old_label: str, new_label: str) -> None:
    """Print ``note: <old_label> is deprecated, use <new_label> ...`` on stderr, once per process per (cls, old)."""
    if (cls, old) in _NOTED:
        return
    _NOTED.add((cls, old))
    print(f"note: {old_label} is deprecated, use {new_label} (the old name will be removed in the next release)",
          file=sys.stderr)


def canonical(cls, data: dict | None, where: str = "config") -> dict:
    """``data`` with every deprecated key of ``cls`` renamed to its new name (key order kept); a note per old name,
    and a ConfigError when the old and the new name are both given."""
    data = dict(data or {})
    table = aliases(cls)
    if not table or not table.keys() & data.keys():
        return data
    out = {}
    for k, v in data.items():
        new = table.get(k)
        if new is None:
            out[k] = v
            continue
        if new in data:
            raise ConfigError(f"{where}: both {k!r} and {new!r} given ({k} is the deprecated name of {new}); "
                              f"give only {new}")
        deprecation_note(cls, k, f"{where}.{k}", new)
        out[new] = v
    return out


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types (deprecated names are read as
    their new names, see :func:`canonical`)."""
    data = canonical(cls, data, where)
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = coerce(data[f.name], hints[f.name], f"{where}.{f.name}")
            choices = f.metadata.get("choices")
            if choices is not None and v not in choices:
                raise ConfigError(f"{where}.{f.name}: {v!r} is not one of {choices}")
            check_range(v, f.metadata.get("bounds"), f"{where}.{f.name}")
            kwargs[f.name] = v
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):  # checks that involve several fields (e.g. heads dividing the width)
        validate(where)
    return obj


_OPS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b), "le": ("<=", lambda v, b: v <= b),
        "lt": ("<", lambda v, b: v < b)}


def check_range(value: Any, bounds: dict | None, where: str) -> None:
    """Raise a one-line ConfigError when a number is NaN, infinite or outside ``bounds`` ({"ge": 1, ...})."""
    import math

    if not bounds or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    for key, bound in bounds.items():
        sym, ok = _OPS[key]
        if not ok(value, bound):
            rule = " and ".join(f"{_OPS[k][0]} {b}" for k, b in bounds.items())
            raise ConfigError(f"{where}: must be {rule}, got {value}")


def to_dict(obj) -> dict:
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return {f.name: conv(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def load_yaml(path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not a text (UTF-8) file, so not a YAML config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def describe(cls) -> list[tuple[str, Any, str]]:
    """(name, default, help) for every field, for ``info`` and docs."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, default, f.metadata.get("help", "")))
    return out
