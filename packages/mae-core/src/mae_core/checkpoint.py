"""Weights and training state as safetensors + JSON, written atomically; nothing we write is a pickle.

* ``save_pretrained(model, dir)`` / ``from_pretrained(dir)``: ``model.safetensors`` + ``config.json`` (method name
  and the model config), enough to rebuild the model from the registry.
* ``save_checkpoint`` / ``load_checkpoint``: a training checkpoint directory with ``model.safetensors``,
  ``train_state.safetensors`` (optimizer moments, RNG states, scaler) and ``train_state.json`` (step, epoch,
  optimizer hyper-parameters, python / numpy RNG state). The directory is written under a temporary name, every
  file flushed and fsynced, then renamed: a process killed mid-save leaves the previous checkpoint intact.
* ``load_foreign``: ``.pth`` files from research repositories, only through ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import to_dict
from .errors import MaeError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (``/proc/self/status``); otherwise
    set to 0 and restored at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0)
    try:
        return old
    finally:
        os.umask(old)


def _default_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file or folder we wrote (``mkstemp`` / ``mkdtemp`` make 0600 / 0700, and so does safetensors'
    ``save_file``) the mode an ordinary ``open`` / ``mkdir`` would: 0666 / 0777 minus the umask, so others on a shared
    file system can read what the umask lets them."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


# failures of a write that come from the file system, not from the program: one-line errors
FS_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
             errno.EFBIG, errno.ENAMETOOLONG}


def _errno_of(exc: BaseException) -> int | None:
    """The errno of an OSError, or of a safetensors write error (``IoError(Os { code: 28, ... })``)."""
    if isinstance(exc, OSError):
        return exc.errno
    if isinstance(exc, SafetensorError):
        m = re.search(r"code: (\d+)", str(exc))
        return int(m.group(1)) if m else None
    return None


def write_error(path: str | os.PathLike, exc: BaseException, what: str = "file") -> MaeError | None:
    """A one-line MaeError for a write of ``path`` that failed because of the file system (disk full, read-only,
    permission, not a folder), or None for any other failure."""
    code = _errno_of(exc)
    if code not in FS_ERRNOS:
        return None
    hint = {errno.ENOSPC: " (the disk is full: free some space)", errno.EDQUOT: " (disk quota exceeded)"}.get(code, "")
    return MaeError(f"{path}: cannot write the {what}: {os.strerror(code)}{hint}")


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail early, in one line, when the output file ``path`` cannot be written (read-only or missing permission,
    a file where a folder should be, ``path`` itself a folder); creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise MaeError(f"{path}: is a folder; give a file name for the {what}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise MaeError(f"{path}: cannot write the {what}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MaeError(f"{path}: cannot write the {what}: {e.strerror or e}") from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``; on any failure ``path`` is untouched. The file
    gets the mode of an ordinary new file (0666 minus the umask). A file-system failure (disk full, read-only,
    permission) is a one-line MaeError naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise (write_error(path, e) or e) from None
    os.close(fd)
    try:
        write(tmp)
        _default_mode(tmp)  # after writing: some writers (safetensors) create their file 0600 themselves
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        err = write_error(path, e)
        if err is not None:
            raise err from None
        raise


def atomic_write_text(path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(path, w)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with shared tensors de-duplicated and every tensor contiguous (safetensors requirement)."""
    state = _unwrap(model).state_dict()
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        out[k] = v.detach().contiguous().cpu()
    return out


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint",
                     strict: bool = True) -> None:
    model = _unwrap(model)
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise MaeError(f"{source}: tensor {k!r} has shape {tuple(v.shape)} but the model expects "
                           f"{tuple(own[k].shape)} (checkpoint from another model shape?)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied weights that were de-duplicated on save are restored by tying, not loading
    missing = [k for k in missing if not _is_tied(model, k, state)]
    if strict and (missing or unexpected):
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise MaeError(f"{source}: weights do not match the model ({what})")


def _is_tied(model, key, state) -> bool:
    own = model.state_dict()
    ptr = own[key].data_ptr()
    return any(own[k].data_ptr() == ptr for k in state if k in own and k != key)


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (method + model config) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    m = _unwrap(model)
    meta = {"format": "mae", "method": getattr(m, "method_name", type(m).__name__)}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(model_state(m), tmp, metadata=meta))
    cfg = {"method": meta["method"], "config": to_dict(m.config) if hasattr(m, "config") else {}}
    if extra:
        cfg.update(extra)
    atomic_write_json(directory / CONFIG, cfg)
    return directory


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise MaeError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MaeError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:80]})") from None


def read_config(directory: str | os.PathLike) -> dict:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise MaeError(f"{path}: no config.json (is {directory} a run or a saved model directory?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MaeError(f"{path}: invalid JSON at line {e.lineno}") from None


def from_pretrained(directory: str | os.PathLike, config_overrides: dict | None = None) -> torch.nn.Module:
    """Rebuild a registered model from ``config.json`` and load ``model.safetensors``."""
    from .config import canonical
    from .registry import build_model, get_method

    directory = Path(directory)
    cfg = read_config(directory)
    cls = get_method(cfg["method"]).config_cls  # deprecated field names (older saves) -> new names before merging
    model_cfg = canonical(cls, cfg.get("config", {}), f"{directory / CONFIG}: config")
    model_cfg.update(canonical(cls, config_overrides, "config_overrides"))
    model = build_model(cfg["method"], model_cfg)
    load_model_state(model, read_weights(directory / WEIGHTS), source=str(directory / WEIGHTS))
    return model


# ---- foreign checkpoints ----------------------------------------------------------------------------------------------
def load_foreign(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a ``.pth`` / ``.bin`` / ``.safetensors`` state dict from elsewhere without executing code.

    Pickles are opened only with ``torch.load(weights_only=True)``; a file that needs arbitrary code is refused.
    Nested ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers are unwrapped.
    """
    path = Path(path)
    if not path.exists():
        raise MaeError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe pickle"
        raise MaeError(f"{path}: refused to load: the file needs to run code to unpickle, which weights-only "
                       f"loading forbids ({first[:120]})") from None
    except Exception as e:  # torch.load raises many types on foreign or broken bytes (EOFError, IndexError, ...)
        first = str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__
        raise MaeError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MaeError(f"{path}: does not contain a state dict of tensors")
    return obj


# ---- training checkpoints -------------------------------------------------------------------------------------------
def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, st in opt_state["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().contiguous().cpu()
                meta["state"][str(pid)][k] = "__tensor__"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v) for k, v in st.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: str | os.PathLike, model, optimizer=None, scaler=None, state: dict | None = None,
                    tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a training checkpoint directory atomically (temporary directory, fsync, rename); the directory gets
    the mode of an ordinary ``mkdir`` (0777 minus the umask)."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    except OSError as e:
        raise (write_error(directory, e, "checkpoint") or e) from None
    try:
        _default_mode(tmp, directory=True)
        save_file(model_state(model), str(tmp / WEIGHTS))
        all_tensors = dict(tensors or {})
        meta = dict(state or {})
        if optimizer is not None:
            t, m = _flatten_optimizer(optimizer.state_dict())
            all_tensors.update(t)
            meta["optimizer"] = m
        if scaler is not None and scaler.is_enabled():
            meta["scaler"] = scaler.state_dict()
        save_file(all_tensors, str(tmp / "train_state.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(meta, default=_json_default))
        for f in tmp.iterdir():
            _default_mode(f)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = write_error(directory, e, "checkpoint")
        if err is not None:  # disk full, read-only...: one line, and the previous checkpoint stays as it was
            kept = [p for p in list_checkpoints(directory.parent) if p != directory]
            raise MaeError(f"{err}; " + (f"the last good checkpoint {kept[-1]} is kept (--resume continues from it "
                                         "once there is space)" if kept else "no checkpoint was written yet")) \
                from None
        raise
    return directory


def load_checkpoint(directory: str | os.PathLike, model=None, optimizer=None, scaler=None) -> tuple[dict, dict]:
    """Load a training checkpoint into the given objects; returns (json state, extra tensors)."""
    directory = Path(directory)
    if model is not None:
        load_model_state(model, read_weights(directory / WEIGHTS), source=str(directory / WEIGHTS))
    tensors = read_weights(directory / "train_state.safetensors")
    try:
        meta = json.loads((directory / "train_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise MaeError(f"{directory}: train_state.json is missing or corrupt") from None
    if optimizer is not None and "optimizer" in meta:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if scaler is not None and "scaler" in meta:
        scaler.load_state_dict(meta["scaler"])
    extra = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    return meta, extra


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (``step-XXXXXXXX`` directories) oldest first; temporary leftovers are ignored."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    out = [p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step-")
           and (p / "train_state.json").exists()]
    return sorted(out, key=lambda p: int(p.name.split("-")[1]))


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep: int) -> None:
    ckpts = list_checkpoints(ckpt_dir)
    for p in ckpts[: max(0, len(ckpts) - keep)]:
        shutil.rmtree(p, ignore_errors=True)
    for p in Path(ckpt_dir).glob(".step-*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


def state_to_json(state: Any) -> Any:
    return json.loads(json.dumps(state, default=_json_default))
