"""Reading pickles that users hand us without running their code.

A pickle names the functions it calls while it is read (``GLOBAL`` / ``STACK_GLOBAL`` opcodes); an ordinary
``pickle.load`` imports and calls whatever is named there, ``os.system`` included. :func:`safe_unpickle` resolves a
name only when it is on an allow-list, and refuses the file on the first other name, before anything is imported.

:data:`PLANETOID_GLOBALS` is exactly what the raw Planetoid files (``ind.<name>.{x,tx,allx,y,ty,ally,graph}``,
Python-2 pickles) reference: ``scipy.sparse.csr.csr_matrix``, ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``collections.defaultdict`` and ``__builtin__.list``. Names are compared after
Python 2 -> 3 renaming (``__builtin__`` -> ``builtins``) and after folding the private module spellings that newer
numpy / scipy write for the same objects (``numpy._core.multiarray``, ``scipy.sparse._csr``).
"""
from __future__ import annotations

import _compat_pickle
import importlib
import os
import pickle
from collections.abc import Iterable
from typing import IO

from mae_core.errors import DataError

#: The globals of the raw Planetoid files, in canonical spelling (module, name).
PLANETOID_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("scipy.sparse", "csr_matrix"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "defaultdict"),
    ("builtins", "list"),
})

# Other spellings of the same objects -> canonical spelling.
_ALIASES = {
    ("scipy.sparse.csr", "csr_matrix"): ("scipy.sparse", "csr_matrix"),
    ("scipy.sparse._csr", "csr_matrix"): ("scipy.sparse", "csr_matrix"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy.core.multiarray", "_reconstruct"),
}
# Where a canonical name is imported from, first module that exists wins (numpy 2 moved numpy.core to numpy._core
# and warns on the old path).
_IMPORT_FROM = {("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray")}


def canonical_global(module: str, name: str) -> tuple[str, str]:
    """``(module, name)`` as the allow-lists spell it: Python 2 names renamed as pickle's ``fix_imports`` does, and
    private numpy / scipy module paths folded onto the public ones."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return _ALIASES.get((module, name), (module, name))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: frozenset[tuple[str, str]], source: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str):
        key = canonical_global(module, name)
        if key not in self._allowed:
            raise DataError(f"{self._source}: refused to unpickle: the file references {module}.{name}, which is "
                            f"not one of the {len(self._allowed)} allowed types (a pickle can run code on loading)")
        for mod in _IMPORT_FROM.get(key, (key[0],)):
            try:
                return getattr(importlib.import_module(mod), key[1])
            except (ImportError, AttributeError):
                continue
        raise DataError(f"{self._source}: cannot resolve {module}.{name} in this environment")

    def persistent_load(self, pid):
        raise DataError(f"{self._source}: refused to unpickle: the file uses persistent ids")


def _canonical_set(allowed: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    out = set()
    for item in allowed:
        if not (isinstance(item, tuple) and len(item) == 2 and all(isinstance(s, str) for s in item)):
            raise TypeError(f"allowed globals are (module, name) pairs of strings, got {item!r}")
        out.add(canonical_global(*item))
    return frozenset(out)


def safe_unpickle(path_or_file: str | os.PathLike | IO[bytes],
                  allowed: Iterable[tuple[str, str]] = PLANETOID_GLOBALS, encoding: str = "latin1"):
    """Unpickle a file that may come from anyone: only the globals in ``allowed`` ((module, name) pairs) may be
    imported; the first other one raises a one-line :class:`DataError` naming the file and the global, before it is
    imported or called. A truncated or corrupt pickle is a ``DataError`` too. ``encoding="latin1"`` reads numpy
    arrays written by Python 2 (as the Planetoid files are)."""
    allowed_set = _canonical_set(allowed)
    if isinstance(path_or_file, (str, os.PathLike)):
        source = os.fspath(path_or_file)
        try:
            with open(source, "rb") as fh:
                return _load(fh, allowed_set, source, encoding)
        except OSError as e:
            raise DataError(f"{source}: cannot open ({e.strerror or e})") from None
    source = str(getattr(path_or_file, "name", "<stream>"))
    return _load(path_or_file, allowed_set, source, encoding)


def _load(fh: IO[bytes], allowed: frozenset[tuple[str, str]], source: str, encoding: str):
    try:
        return _RestrictedUnpickler(fh, allowed, source, encoding).load()
    except DataError:
        raise
    except Exception as e:  # anything raised while decoding untrusted bytes means the file is not what we read
        msg = " ".join(str(e).split()) or "no detail"
        raise DataError(f"{source}: not a readable pickle ({type(e).__name__}: {msg})") from None


# ---- numpy files ----------------------------------------------------------------------------------------------------
def numpy_load_error(path: str | os.PathLike, e: Exception, what: str = "numpy file") -> DataError:
    """The one-line error for a failed ``np.load(..., allow_pickle=False)`` or ``.npz`` member access: an object
    array (stored as a pickle) is named as refused, anything else as unreadable."""
    msg = " ".join(str(e).split())
    if isinstance(e, ValueError) and "allow_pickle" in msg:
        return DataError(f"{path}: refused to read: the {what} holds an object array (Python objects stored as a "
                         f"pickle, which can run code on loading); save numeric or fixed-width string arrays")
    return DataError(f"{path}: not a readable {what} ({type(e).__name__}: {msg[:120] or 'no detail'})")


def load_npy(path: str | os.PathLike, what: str = ".npy file"):
    """``np.load(path, allow_pickle=False)`` of a single ``.npy`` array; object arrays and corrupt files are one-line
    :class:`DataError` s naming the file."""
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise numpy_load_error(path, e, what) from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise DataError(f"{path}: expected a single array ({what}), found an .npz archive")
    return arr
