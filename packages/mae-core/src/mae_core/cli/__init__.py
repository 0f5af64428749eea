"""The ``mae-<domain>`` command lines, built once from the registry: every domain gets ``pretrain``, ``probe``,
``finetune``, ``reconstruct`` and ``info`` with the same flags, config handling, progress and run directories, plus
the commands its package registers (``impute``, ``propagate``, ``fewshot``, ...).

A thin layer: flags (:mod:`.flags`) become typed configs that the calls of :mod:`mae_core.workflows` take.
Configuration is layered: method defaults < preset < ``--config file.yaml`` < flags given on the command line.
User errors print one line ``error: ...`` and exit with status 2, before anything is written.
"""
from __future__ import annotations

import sys
from typing import Sequence

from .. import registry
from ..errors import ConfigError, MaeError
from ..eval.probes import PROBES, cached_features, register_probe  # noqa: F401  (names used before the split)
from .commands import CORE_COMMANDS, run_domain_command
from .flags import Parser, add_dataclass_flags, parse_run_command  # noqa: F401


def run_cli(domain: str, argv: Sequence[str] | None = None, prog: str | None = None,
            description: str | None = None) -> int:
    """Entry point shared by every ``mae-<domain>`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or f"mae-{domain}"
    extra = {c.name: c for c in registry.commands(domain)}
    if not argv or argv[0] in ("-h", "--help"):
        lines = [description or f"{prog}: masked-autoencoder pretraining for {domain}", "", "commands:"]
        for name, (_, h) in CORE_COMMANDS.items():
            lines.append(f"  {name:<12} {extra[name].help if name in extra else h}")
        for name, c in extra.items():
            if name not in CORE_COMMANDS:
                lines.append(f"  {name:<12} {c.help}")
        lines += ["", f"`{prog} COMMAND --help` explains every option of a command."]
        print("\n".join(lines))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd in CORE_COMMANDS and cmd not in extra:  # a domain may register its own version of a core command
            return CORE_COMMANDS[cmd][0](domain, rest) or 0
        if cmd in extra:
            return run_domain_command(domain, prog, extra[cmd], rest)
        raise ConfigError(f"unknown command {cmd!r}; choose from: {', '.join(dict.fromkeys([*CORE_COMMANDS, *extra]))}")
    except MaeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def domain_main(domain: str, prog: str | None = None, description: str | None = None):
    """The ``main(argv=None)`` of a domain's console script: import the domain (its entry point), run its CLI."""
    def main(argv: Sequence[str] | None = None) -> int:
        registry.autoload(domain)
        return run_cli(domain, argv, prog=prog or f"mae-{domain}", description=description)
    return main


main = domain_main("core", "mae-core", "mae-core: the shared masked-autoencoder engine; its own domain is images.")
