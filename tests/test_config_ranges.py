"""Config ranges of the dataset configs of every domain: a value outside the declared range is a one-line
ConfigError naming the field; the boundary value itself is accepted."""
from __future__ import annotations

import dataclasses
import math

import pytest

from mae_core import ConfigError, registry
from mae_core.config import from_dict

DOMAINS = ["core", "medical", "3d", "video", "graph", "audio", "text"]


def _dataset_configs():
    out = []
    for d in DOMAINS:
        registry.autoload(d)
        for ds in registry.datasets(d):
            out.append(pytest.param(ds.config_cls, id=f"{d}:{ds.name}"))
    return out


# one known bad value per dataset kind (fails if the range is dropped from the declaration)
KNOWN_BAD = [
    ("core", "shapes", {"num_train": 0}, "num_train: must be >= 1, got 0"),
    ("core", "image-folder", {"val_fraction": 1.0}, "val_fraction: must be >= 0 and < 1, got 1.0"),
    ("medical", "synthetic-brain", {"num_test": 0}, "num_test: must be >= 1"),
    ("3d", "driving-scenes", {"grid": [64, 0, 8]}, "grid[1]: must be >= 1, got 0"),
    ("3d", "driving-scenes", {"voxel_size": [0.8, 0.8]}, "voxel_size: expected 3 values"),
    ("video", "moving-shapes", {"num_frames": 0}, "num_frames: must be >= 1"),
    ("graph", "synthetic-graphs", {"min_nodes": 30, "max_nodes": 10}, "min_nodes (30) must be <= max_nodes (10)"),
    ("audio", "birdcalls", {"noise": -0.1}, "noise: must be >= 0"),
    ("text", "text-files", {"test_fraction": float("nan")}, "test_fraction: must be a finite number"),
]


@pytest.mark.parametrize("domain,name,values,message", KNOWN_BAD)
def test_known_bad_data_values(domain, name, values, message):
    registry.autoload(domain)
    spec = {d.name: d for d in registry.datasets(domain)}[name]
    with pytest.raises(ConfigError) as e:
        from_dict(spec.config_cls, values, where="data")
    assert message in str(e.value) and "\n" not in str(e.value)


def _outside(bounds: dict, is_int: bool):
    """A value just outside each bound, and the boundary values that must pass."""
    step = 1 if is_int else 1e-6
    bad, good = [], []
    if "ge" in bounds:
        bad.append(bounds["ge"] - step)
        good.append(bounds["ge"])
    if "gt" in bounds:
        bad.append(bounds["gt"])
        good.append(bounds["gt"] + step)
    if "le" in bounds:
        bad.append(bounds["le"] + step)
        good.append(bounds["le"])
    if "lt" in bounds:
        bad.append(bounds["lt"])
        good.append(bounds["lt"] - step)
    return bad, good


@pytest.mark.parametrize("cls", _dataset_configs())
def test_every_declared_range_is_enforced(cls):
    import typing

    hints = typing.get_type_hints(cls)
    checked = 0
    for f in dataclasses.fields(cls):
        bounds = f.metadata.get("bounds")
        if not bounds:
            continue
        is_int = "int" in str(hints[f.name]) and "float" not in str(hints[f.name])
        bad, good = _outside(bounds, is_int)
        for v in bad + ([] if is_int else [math.inf]):
            with pytest.raises(ConfigError, match=f"data.{f.name}: must be"):
                from_dict(cls, {f.name: v}, where="data")
        names = {g.name for g in dataclasses.fields(cls)}
        for v in good:
            d = {f.name: v}
            # a min_X / max_X pair is checked together by validate(): give the partner the same in-range value
            for a, b in (("min_", "max_"), ("max_", "min_")):
                if f.name.startswith(a) and b + f.name[len(a):] in names:
                    d[b + f.name[len(a):]] = v
            assert getattr(from_dict(cls, d, where="data"), f.name) == v
        checked += 1
    assert checked or cls.__name__ in {"PlanetoidConfig"}, f"{cls.__name__} declares no range"
