"""The ``mae-<domain>`` command lines, built once from the registry: every domain gets ``pretrain``, ``probe``,
``finetune``, ``reconstruct`` and ``info`` with the same flags, config handling, progress and run directories, plus
the commands its package registers (``impute``, ``propagate``, ``fewshot``, ...).

A thin layer: flags (:mod:`.flags`) become typed configs that the calls of :mod:`mae_core.workflows` take.
Configuration is layered: method defaults < preset < ``--config file.yaml`` < flags given on the command line.
User errors print one line ``error: ...`` and exit with status 2, before anything is written.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Sequence

from .. import registry
from ..errors import ConfigError, MaeError
from ..eval.probes import PROBES, cached_features, register_probe  # noqa: F401  (names used before the split)
from .commands import CORE_COMMANDS, run_domain_command
from .flags import Parser, add_dataclass_flags, parse_run_command  # noqa: F401


GLOBAL_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose", "-V": "version",
                "--version": "version"}
GLOBAL_HELP = ["global options (anywhere on the command line):",
               "  -q, --quiet    no progress bar, notes or warnings: stderr carries only errors",
               "  -v, --verbose  also print the traceback of an error (for bug reports)",
               "  -V, --version  print the versions of this package, mae-core, torch and Python, and exit"]


def version_line(domain: str, prog: str) -> str:
    """``mae-3d 0.1.0 (mae-core 0.1.0, torch 2.9.1, Python 3.12.3)``."""
    import platform
    from importlib import metadata

    import torch

    from .. import __version__

    try:
        own = metadata.version(prog if prog.startswith("mae-") else f"mae-{domain}")
    except metadata.PackageNotFoundError:
        own = __version__
    return f"{prog} {own} (mae-core {__version__}, torch {torch.__version__}, Python {platform.python_version()})"


def split_global_flags(argv: Sequence[str]) -> tuple[list[str], set[str]]:
    """Remove ``-q/--quiet``, ``-v/--verbose``, ``-V/--version`` from ``argv`` (they may stand anywhere)."""
    rest, found = [], set()
    for a in argv:
        if a in GLOBAL_FLAGS:
            found.add(GLOBAL_FLAGS[a])
        else:
            rest.append(a)
    if {"quiet", "verbose"} <= found:
        raise ConfigError("--quiet and --verbose given together; choose one")
    return rest, found


@contextlib.contextmanager
def _quiet():
    """stderr to /dev/null and progress bars off (also in processes started from here, e.g. under --nproc)."""
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


@contextlib.contextmanager
def _one_line_warnings():
    """Python warnings as one ``warning: ...`` line each (not the file, line number and source line). Only the
    format changes, so code that records warnings (``warnings.catch_warnings(record=True)``) still gets them."""
    import warnings

    def fmt(message, category, filename, lineno, line=None):
        return "warning: " + " ".join(str(message).split()) + "\n"

    old = warnings.formatwarning
    warnings.formatwarning = fmt
    try:
        yield
    finally:
        warnings.formatwarning = old


def run_cli(domain: str, argv: Sequence[str] | None = None, prog: str | None = None,
            description: str | None = None) -> int:
    """Entry point shared by every ``mae-<domain>`` command (global options: ``--quiet``, ``--verbose``,
    ``--version``; ``MAE_VERBOSITY=quiet|verbose`` in the environment sets the default, e.g. for launched workers)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"mae-{domain}"
    try:
        argv, flags = split_global_flags(argv)
    except MaeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "version" in flags:
        print(version_line(domain, prog))
        return 0
    level = "quiet" if "quiet" in flags else "verbose" if "verbose" in flags else os.environ.get("MAE_VERBOSITY", "")
    old_level = os.environ.get("MAE_VERBOSITY")
    if level:
        os.environ["MAE_VERBOSITY"] = level
    try:
        with _quiet() if level == "quiet" else contextlib.nullcontext(), _one_line_warnings():
            return _dispatch(domain, argv, prog, description)
    except MaeError as e:
        print(f"error: {e}", file=sys.stderr)
        if level == "verbose":
            import traceback
            traceback.print_exc()
        return 2
    except OSError as e:  # a file-system failure not caught where it happened: still one line
        from ..checkpoint import write_error
        err = write_error(e.filename or "output", e)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if old_level is None:
            os.environ.pop("MAE_VERBOSITY", None)
        else:
            os.environ["MAE_VERBOSITY"] = old_level


def _dispatch(domain: str, argv: list[str], prog: str, description: str | None) -> int:
    extra = {c.name: c for c in registry.commands(domain)}
    if not argv or argv[0] in ("-h", "--help"):
        lines = [description or f"{prog}: masked-autoencoder pretraining for {domain}", "", "commands:"]
        for name, (_, h) in CORE_COMMANDS.items():
            lines.append(f"  {name:<12} {extra[name].help if name in extra else h}")
        for name, c in extra.items():
            if name not in CORE_COMMANDS:
                lines.append(f"  {name:<12} {c.help}")
        lines += ["", *GLOBAL_HELP, "", f"`{prog} COMMAND --help` explains every option of a command."]
        print("\n".join(lines))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd in CORE_COMMANDS and cmd not in extra:  # a domain may register its own version of a core command
        return CORE_COMMANDS[cmd][0](domain, rest) or 0
    if cmd in extra:
        return run_domain_command(domain, prog, extra[cmd], rest)
    raise ConfigError(f"unknown command {cmd!r}; choose from: {', '.join(dict.fromkeys([*CORE_COMMANDS, *extra]))}")


# flags whose value is an existing file or folder in every command that has them
INPUT_PATH_FLAGS = ("--data", "--run", "--config")


def missing_input(argv: Sequence[str]) -> str | None:
    """The one-line error for the first input-path flag (:data:`INPUT_PATH_FLAGS`) naming a path that does not
    exist, in the same words for every domain; checked before the domain's heavy imports. ``None`` if all exist."""
    if "-h" in argv or "--help" in argv:
        return None
    for i, a in enumerate(argv):
        flag, _, value = a.partition("=")
        if flag not in INPUT_PATH_FLAGS:
            continue
        if not value:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                continue  # argparse reports the missing value
            value = argv[i + 1]
        if not os.path.exists(value):
            return f"{value}: no such file or folder ({flag})"
    return None


def domain_main(domain: str, prog: str | None = None, description: str | None = None):
    """The ``main(argv=None)`` of a domain's console script: check input paths, import the domain (its entry
    point), run its CLI."""
    def main(argv: Sequence[str] | None = None) -> int:
        err = missing_input(list(sys.argv[1:] if argv is None else argv))
        if err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        registry.autoload(domain)
        return run_cli(domain, argv, prog=prog or f"mae-{domain}", description=description)
    return main


main = domain_main("core", "mae-core", "mae-core: the shared masked-autoencoder engine; its own domain is images.")
