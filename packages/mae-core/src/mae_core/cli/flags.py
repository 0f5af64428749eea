"""Flags from config dataclasses, and the parse of a command line into a :class:`~mae_core.runconfig.RunConfig`.

Every field of TrainConfig, the method's model config and the dataset's config is a ``--flag`` with its help
string; the flag names are :func:`mae_core.runconfig.option_names`, the same names the Python API takes as keywords.
A renamed field's old name (``__aliases__``) stays a hidden flag that sets the new field, with a deprecation note.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Sequence

from .. import registry
from ..config import _strip_optional as strip_optional  # noqa: F401  (same package)
from ..config import deprecation_note
from ..errors import ConfigError
from ..runconfig import (RESERVED, Chosen, RunConfig, Selection, alias_option_names, choose, finetune_train_defaults,
                         method_model_defaults, method_train_defaults, option_names, resolve,
                         section_classes)


class DefaultsFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help, unless the help already says it or there is nothing to say (no
    default, an off switch)."""

    def _get_help_string(self, action):
        help_ = action.help or ""
        if "default:" in help_ or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return help_
        return help_ + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one-line ConfigErrors (exit status 2 through ``run_cli``); its help ends
    with the global options every ``mae-<domain>`` command line takes."""

    def __init__(self, *args, **kw):
        kw.setdefault("epilog", "global options: -q/--quiet (no progress, notes or warnings), -v/--verbose "
                                "(tracebacks of errors), -V/--version")
        kw.setdefault("formatter_class", DefaultsFormatter)  # each option shows its default
        super().__init__(*args, **kw)

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message}{self.suggestion(message)}")

    def suggestion(self, message: str) -> str:
        """``(did you mean --epochs?)`` for a mistyped option."""
        import difflib

        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        hints = []
        for word in message[len(prefix):].split():
            if word.startswith("--"):
                close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.85)
                if close:
                    hints.append(f"{word.split('=')[0]} -> {close[0]}")
        return f" (did you mean: {', '.join(hints)}?)" if hints else ""


def _flag_kind(tp):
    base, _ = strip_optional(tp)
    origin = typing.get_origin(base)
    if base is bool:
        return "bool", None
    if origin in (list, tuple):
        args = typing.get_args(base)
        return "list", (args[0] if args else str)
    return "scalar", base


def _add_field(group, flag: str, dest: str, f: dataclasses.Field, tp, shown_default=dataclasses.MISSING,
               hidden: bool = False):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if shown_default is not dataclasses.MISSING:
        default = shown_default
    help_ = f.metadata.get("help", "")
    help_ = (f"{help_} (default: {default})" if help_ else f"(default: {default})").replace("%", "%%")
    if hidden:
        help_ = argparse.SUPPRESS
    kind, item = _flag_kind(tp)
    kw: dict[str, Any] = dict(dest=dest, default=argparse.SUPPRESS, help=help_)
    if "choices" in f.metadata:
        kw["choices"] = f.metadata["choices"]
    if kind == "bool":
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif kind == "list":
        group.add_argument(flag, nargs="+", metavar=getattr(item, "__name__", "V").upper(), **kw)
    else:
        group.add_argument(flag, type=str, metavar=getattr(item, "__name__", "V").upper(), **kw)


def _deprecated(base):
    """An argparse action class like ``base`` that prints the deprecation note of a renamed field's old flag."""

    class Deprecated(base):
        def __init__(self, *args, config_cls=None, old=None, new_flag=None, **kw):
            super().__init__(*args, **kw)
            self.config_cls, self.old, self.new_flag = config_cls, old, new_flag

        def __call__(self, parser, namespace, values, option_string=None):
            deprecation_note(self.config_cls, self.old, option_string, self.new_flag)
            namespace.__dict__.setdefault("_deprecated_flags", {})[self.dest] = (option_string, self.new_flag)
            super().__call__(parser, namespace, values, option_string)

    return Deprecated


def _add_alias(group, flag: str, dest: str, f: dataclasses.Field, tp, config_cls, old: str, new_flag: str):
    """A hidden ``flag`` for the deprecated name ``old`` of field ``f``: same type and choices, its own dest."""
    kind, item = _flag_kind(tp)
    kw: dict[str, Any] = dict(dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, config_cls=config_cls,
                              old=old, new_flag=new_flag)
    if "choices" in f.metadata:
        kw["choices"] = f.metadata["choices"]
    if kind == "bool":
        group.add_argument(flag, action=_deprecated(argparse.BooleanOptionalAction), **kw)
    else:
        group.add_argument(flag, action=_deprecated(argparse._StoreAction), nargs="+" if kind == "list" else None,
                           type=str, metavar=getattr(item, "__name__", "V").upper(), **kw)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, section: str, taken: set[str], title: str,
                        shown_defaults: dict | None = None) -> dict[str, tuple[str, str]]:
    """Add ``--field-name`` flags for one dataclass (``--section-field-name`` when the name is already taken);
    returns the mapping dest -> (section, field)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    mapping = {}
    for f in dataclasses.fields(cls):
        if section == "data" and f.name == "path":
            continue  # --data PATH is a top-level flag
        name = f.name.replace("_", "-")
        flag = f"--{name}" if name not in taken else f"--{section}-{name}"
        taken.add(name)
        dest = f"{section}__{f.name}"
        _add_field(group, flag, dest, f, hints[f.name], (shown_defaults or {}).get(f.name, dataclasses.MISSING))
        mapping[dest] = (section, f.name)
    return mapping


# the training flags that still matter to a command that trains nothing (probe, few-shot, reconstruct)
EVAL_TRAIN_FLAGS = ("device", "seed", "num_workers")


def add_run_config_flags(p: argparse.ArgumentParser, mspec, dspec, hide: Sequence[str] = (),
                         train_shown: dict | None = None) -> dict[str, tuple[str, str]]:
    """The train / model / data flags of a method on a dataset (and a hidden flag per deprecated field name); returns
    dest -> (section, field). The sections in ``hide`` are accepted but not listed by ``--help`` (an evaluation
    command lists only the data flags and :data:`EVAL_TRAIN_FLAGS`). ``train_shown``: the train defaults ``--help``
    shows (default: the method's pretraining defaults on this dataset, ``runconfig.method_train_defaults``)."""
    train_shown = method_train_defaults(mspec, dspec) if train_shown is None else train_shown
    model_shown = method_model_defaults(mspec, dspec)
    taken = set(RESERVED) | {o[2:].replace("-", "_") for o in p._option_string_actions if o.startswith("--")}
    names = option_names(mspec, dspec, taken)
    classes = section_classes(mspec, dspec)
    titles = {"train": "training (TrainConfig)", "model": f"model: {mspec.name}", "data": f"data: {dspec.name}"}
    groups = {s: p.add_argument_group(titles[s]) for s in classes}
    fields = {s: {f.name: f for f in dataclasses.fields(c)} for s, c in classes.items()}
    hints = {s: typing.get_type_hints(c) for s, c in classes.items()}
    mapping = {}
    for name, (section, fname) in names.items():
        dest = f"{section}__{fname}"
        shown = {"train": train_shown, "model": model_shown}.get(section, {}).get(fname, dataclasses.MISSING)
        hidden = section in hide and not (section == "train" and fname in EVAL_TRAIN_FLAGS)
        _add_field(groups[section], "--" + name.replace("_", "-"), dest, fields[section][fname],
                   hints[section][fname], shown, hidden=hidden)
        mapping[dest] = (section, fname)
    flag_of = {sf: "--" + n.replace("_", "-") for n, sf in names.items()}
    for name, (section, new, old) in alias_option_names(mspec, dspec, taken).items():
        dest = f"{section}__{old}"
        _add_alias(groups[section], "--" + name.replace("_", "-"), dest, fields[section][new], hints[section][new],
                   classes[section], old, flag_of.get((section, new), new))
        mapping[dest] = (section, new)
    return mapping


def add_common_flags(p: argparse.ArgumentParser, domain: str, with_run: bool = False, run_required: bool = False):
    g = p.add_argument_group("what to run")
    g.add_argument("--method", help="method name (see `info`); default: " + (
        registry.methods(domain)[0].name if registry.methods(domain) else "none"))
    g.add_argument("--dataset", help="dataset name (see `info`); --data PATH picks the folder dataset")
    g.add_argument("--data", metavar="PATH", help="folder (or file) with your own data")
    g.add_argument("--preset", help="named preset of hyper-parameters (see `info`)")
    g.add_argument("--config", metavar="YAML", help="config file (sections: method, dataset, model, data, train); "
                                                   "flags given on the command line override it")
    if with_run:
        g.add_argument("--run", metavar="DIR", required=run_required, help="run directory of a pretraining run")


def pre_parse(argv: Sequence[str], domain: str) -> tuple[Selection, Chosen]:
    """Read the flags that decide which other flags exist (method, dataset, preset, config, data, run, out)."""
    pre = Parser(add_help=False, allow_abbrev=False)
    for name in ("method", "dataset", "preset", "config", "data", "run", "out"):
        pre.add_argument(f"--{name}")
    pre.add_argument("--resume", action="store_true")
    known, _ = pre.parse_known_args(argv)
    sel = Selection(**vars(known))
    return sel, choose(sel, domain)


def explicit_sections(args: argparse.Namespace, mapping: dict) -> dict[str, dict]:
    """The flags given, by section and field; a deprecated flag given with its new flag is a ConfigError."""
    out: dict[str, dict] = {"train": {}, "model": {}, "data": {}}
    deprecated = getattr(args, "_deprecated_flags", {})
    for dest, (section, name) in mapping.items():
        if hasattr(args, dest):
            if dest in deprecated and hasattr(args, f"{section}__{name}"):
                old_flag, new_flag = deprecated[dest]
                raise ConfigError(f"{old_flag} and {new_flag} both given ({old_flag} is the deprecated name of "
                                  f"{new_flag}); give only {new_flag}")
            out[section][name] = getattr(args, dest)
    return out


def parse_run_command(domain: str, argv: Sequence[str], prog: str, extra_flags: Callable, description: str,
                      base: str = "run", with_run: bool = True,
                      hide: Sequence[str] = ()) -> tuple[RunConfig, argparse.Namespace]:
    """Parse a run-based command line (``--run`` plus every method / dataset / train flag, layered over the run's
    saved config) with ``extra_flags(parser)`` added; returns ``(RunConfig, args)``. ``hide``: sections whose flags
    are accepted but left out of ``--help`` (see :func:`add_run_config_flags`)."""
    sel, ch = pre_parse(argv, domain)
    epilog = None
    if hide:
        epilog = (f"The run's {' and '.join(hide)} settings come from its config.yaml; their flags are accepted here "
                  f"but not listed (see `mae-{domain} pretrain --help`).")
    p = Parser(prog=prog, allow_abbrev=False, description=description, epilog=epilog)
    add_common_flags(p, domain, with_run=with_run)
    extra_flags(p)
    shown = ({**method_train_defaults(ch.method, ch.dataset), **finetune_train_defaults(ch.method)}
             if base == "finetune" else None)
    mapping = add_run_config_flags(p, ch.method, ch.dataset, hide=hide, train_shown=shown)
    args = p.parse_args(argv)
    sel.out = getattr(args, "out", None) if base == "method" else None
    cfg = resolve(ch, sel, explicit_sections(args, mapping), base=base)
    return cfg, args
