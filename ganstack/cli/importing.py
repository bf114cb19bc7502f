"""``ganstack import KIND ...``: run an ``importer`` plugin, its flags made from its options class.

Importers are plugins like any other component, so a package that reads another project's files
adds a kind here without touching the core. Each attrs field of the importer's options becomes a
flag (see :class:`ganstack.interfaces.ImportContext`); values are converted by the field's type,
then structured and validated by the options class, so a bad value is reported at its flag.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ganstack.errors import PluginError, UserError


def _scalar_type(tp: Any) -> Any:
    """The type a flag's text converts to: ``int``, ``float``, ``bool`` or ``str`` (paths, text)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else str
    if tp in (int, float, bool):
        return tp
    return str


def flag_of(field: attrs.Attribute) -> str:
    """The command-line spelling of an option: ``metadata['flag']`` or ``--field-name``."""
    return str(field.metadata.get("flag") or "--" + field.name.replace("_", "-"))


def options_parser(prog: str, description: str, options: type) -> argparse.ArgumentParser:
    """An argument parser with one flag (or positional) per attrs field of ``options``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    attrs.resolve_types(options)
    for field in attrs.fields(options):
        doc = str(field.metadata.get("doc", ""))
        kind = _scalar_type(field.type)
        if field.metadata.get("positional"):
            parser.add_argument(field.name, metavar=field.metadata.get("metavar") or field.name.upper(), help=doc,
                                type=kind)
            continue
        has_default = field.default is not attrs.NOTHING
        if kind is bool:
            parser.add_argument(flag_of(field), dest=field.name, action="store_true", default=argparse.SUPPRESS,
                                help=doc)
            continue
        shown = ""
        if has_default and not isinstance(field.default, attrs.Factory) and field.default is not None:
            shown = f" (default: {field.default})"
        parser.add_argument(flag_of(field), dest=field.name, type=kind, default=argparse.SUPPRESS,
                            required=not has_default, help=doc + shown, metavar=field.metadata.get("metavar"))
    return parser


def run_import(kind: str | None, argv: Sequence[str], *, report: Callable[[str], None]) -> int:
    """Find the importer ``kind``, parse ``argv`` into its options and run it."""
    from ganstack.components.loader import load_plugins
    from ganstack.interfaces import ImportContext
    from ganstack.recipe.resolve import structure

    registry = load_plugins().registry
    names = registry.names("importer")
    if kind is None or kind in ("-h", "--help"):
        report("usage: ganstack import KIND ... (ganstack import KIND --help for its flags)")
        for entry in registry.entries("importer"):
            report(f"  {entry.name:<20} {entry.summary}")
        return 0
    try:
        entry = registry.get("importer", kind)
    except PluginError as exc:
        raise PluginError(exc.message, path="ganstack import KIND",
                          fix=f"use one of: {', '.join(names) or '(none installed)'}") from None
    parser = options_parser(f"ganstack import {entry.name}", entry.summary, entry.options)
    values = vars(parser.parse_args(list(argv)))
    by_name = {f.name: f for f in attrs.fields(entry.options)}
    data = {k: str(Path(v)) if isinstance(v, Path) else v for k, v in values.items()}
    try:
        options = structure(data, entry.options, file=None)
    except UserError as exc:
        field = by_name.get((exc.path or "").split(".")[0].split("[")[0])
        where = flag_of(field) if field is not None else exc.path
        raise UserError(exc.message, path=f"ganstack import {entry.name} {where}", fix=exc.fix) from None
    entry.factory(options, ImportContext(report=report))
    return 0
