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
    """A run directory. ``overwrite`` replaces an existing run: with ``keep_replaced`` the old one is moved aside
    (``.<name>.replaced-<pid>``) and comes back with :meth:`abandon` if the new run fails before its first checkpoint;
    :meth:`finish_replacement` deletes it once the new run stands. :meth:`lock` holds an exclusive lock for the
    lifetime of a run, so a second run into the same directory is refused."""

    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, resume: bool = False, create: bool = True,
                 keep_replaced: bool = False):
        self.path = Path(path)
        self.replaced: Path | None = None
        self._lock_fh = None
        if create:
            self._prepare(overwrite, resume, keep_replaced)

    def _prepare(self, overwrite: bool, resume: bool, keep_replaced: bool = False) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise MaeError(f"{p}: run directory path exists and is not a directory")
        if p.exists() and any(p.iterdir()) and not resume:
            if not overwrite:
                raise MaeError(f"{p}: run directory already exists and is not empty "
                               "(use --resume to continue it or --overwrite to replace it)")
            self._check_unlocked()
            if keep_replaced:
                aside = p.parent / f".{p.name}.replaced-{os.getpid()}"
                if aside.exists():
                    shutil.rmtree(aside)
                os.rename(p, aside)
                self.replaced = aside
            else:
                shutil.rmtree(p)
        if resume and not p.exists():
            raise MaeError(f"{p}: cannot resume, the run directory does not exist")
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            self.abandon()
            raise MaeError(f"{p}: run directory is not writable ({e.strerror})") from None

    # ---- the lifetime of a run -----------------------------------------------------------------------------------
    def _check_unlocked(self) -> None:
        """Refuse to touch a directory that a running process holds (a holder always has the lock file, so
        without one there is nothing to check, and none is created: a refused command leaves the run as it was)."""
        if not (self.path / self.LOCK).exists():
            return
        probe = RunDir(self.path, create=False)
        probe.lock()
        probe.unlock()

    def lock(self) -> "RunDir":
        """Take the run's exclusive lock (``.lock``, fcntl); a second holder gets a one-line error with the PID."""
        import fcntl

        lock_path = self.path / self.LOCK
        try:
            fh = open(lock_path, "a+")
        except OSError as e:
            raise MaeError(f"{self.path}: cannot create the run lock ({e.strerror})") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            fh.close()
            raise MaeError(f"{self.path}: another run (PID {pid}) is using this run directory; wait for it or "
                           "choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        return self

    def unlock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def finish_replacement(self) -> None:
        """The new run stands: delete the run it replaced."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None

    def abandon(self) -> None:
        """The new run failed before its first checkpoint: remove it, and put back the run it replaced."""
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)
        if self.replaced is not None and self.replaced.exists():
            os.rename(self.replaced, self.path)
            self.replaced = None

    def truncate_metrics(self, step: int) -> int:
        """Drop the metric lines logged after ``step`` (a resumed run repeats them); returns how many were dropped."""
        if not self.metrics_path.exists():
            return 0
        keep, dropped = [], 0
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec_step = json.loads(line).get("step", 0)
            except (json.JSONDecodeError, AttributeError):
                dropped += 1
                continue
            if rec_step > step:
                dropped += 1
            else:
                keep.append(line)
        if dropped:
            atomic_write_text(self.metrics_path, "".join(f"{x}\n" for x in keep))
        return dropped

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
        from .config import load_yaml
        return load_yaml(p)

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
