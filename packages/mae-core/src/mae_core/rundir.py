"""A run directory per run: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``, ``pictures/``, ``tb/``,
``summary.json`` and the final ``model.safetensors`` + ``config.json``."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from .checkpoint import atomic_write_json, atomic_write_text, list_checkpoints
from .errors import MaeError


def default_run_path(domain: str, method: str, root: str = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{domain}-{method}-{stamp}"


class RunDir:
    def __init__(self, path: str | os.PathLike, overwrite: bool = False, resume: bool = False, create: bool = True):
        self.path = Path(path)
        if create:
            self._prepare(overwrite, resume)

    def _prepare(self, overwrite: bool, resume: bool) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise MaeError(f"{p}: run directory path exists and is not a directory")
        if p.exists() and any(p.iterdir()) and not resume:
            if not overwrite:
                raise MaeError(f"{p}: run directory already exists and is not empty "
                               "(use --resume to continue it or --overwrite to replace it)")
            shutil.rmtree(p)
        if resume and not p.exists():
            raise MaeError(f"{p}: cannot resume, the run directory does not exist")
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise MaeError(f"{p}: run directory is not writable ({e.strerror})") from None

    def check_space(self, bytes_needed: int) -> None:
        free = shutil.disk_usage(self.path).free
        if free < bytes_needed:
            raise MaeError(f"{self.path}: only {free / 2**20:.0f} MiB free on disk, checkpoints need about "
                           f"{bytes_needed / 2**20:.0f} MiB")

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def pictures(self) -> Path:
        d = self.path / "pictures"
        d.mkdir(exist_ok=True)
        return d

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_config(self, config: dict) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict:
        p = self.path / "config.yaml"
        if not p.exists():
            raise MaeError(f"{p}: not found (is {self.path} a run directory?)")
        return yaml.safe_load(p.read_text()) or {}

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict, name: str = "summary.json") -> None:
        path = self.path / name
        old = {}
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError:
                old = {}
        old.update(summary)
        atomic_write_json(path, old)

    def latest_checkpoint(self) -> Path | None:
        ckpts = list_checkpoints(self.checkpoints)
        return ckpts[-1] if ckpts else None
