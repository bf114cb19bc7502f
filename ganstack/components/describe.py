"""What a user reads about a component's options: each one's type, default, checks and documentation,
in words (``int``, ``one of: joint, stagewise``, ``float or none``, ``>= 1``), never Python's typing
syntax. ``ganstack plugins show`` prints it, the generated docs/recipes.md tabulates it.

An option's documentation is its field's ``metadata={"doc": "..."}``, else an entry of its class
docstring written ``` ``name``: what it does ``` (several per docstring, separated by ``;``).
"""

from __future__ import annotations

import contextlib
import re
import types
import typing
from typing import Any

import attrs

_DOC_ITEM = re.compile(r"``(\w+)``:\s*(.+?)(?=(?:;|\.)?\s*``\w+``:|$)", re.S)
_WORDS = {int: "int", float: "float", bool: "true or false", str: "str", type(None): "none"}


@attrs.frozen
class OptionInfo:
    """One option, ready to print."""

    name: str
    type: str
    default: str  # YAML, or "required"
    checks: tuple[str, ...]
    doc: str


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation: ``metadata['doc']``, else its entry in the class docstring (or a base's)."""
    docs: dict[str, str] = {}
    for klass in cls.__mro__:  # a subclass documents what it changes; the rest comes from its bases
        text = " ".join((klass.__doc__ or "").split())
        for name, desc in _DOC_ITEM.findall(text):
            docs.setdefault(name, desc.strip().rstrip(";.").strip().replace("``", "`"))
    for f in attrs.fields(cls):
        if f.metadata.get("doc"):
            docs[f.name] = " ".join(str(f.metadata["doc"]).split())
    return docs


def _choices(values: Any) -> str:
    return "one of: " + ", ".join(str(v) for v in values)


def type_words(tp: Any) -> str:
    """A field type in words: ``int``, ``float or none``, ``one of: a, b``, ``list of str``."""
    if isinstance(tp, str):  # unresolved annotation: tidy the text
        text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", tp)
        literal = re.fullmatch(r"Literal\[(.*)\]", text)
        if literal:
            return _choices(v.strip().strip("'\"") for v in literal.group(1).split(","))
        return text.replace(" | None", " or none").replace("NoneType", "none").replace(" | ", " or ")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return _choices(args)
    if origin in (typing.Union, types.UnionType):
        words = [type_words(a) for a in args if a is not type(None)]
        return " or ".join(words + (["none"] if type(None) in args else []))
    if origin in (list, tuple, set, frozenset) or origin is typing.Sequence:
        inner = [type_words(a) for a in args if a is not Ellipsis]
        if origin is tuple and len(inner) > 1 and Ellipsis not in args:
            return f"{len(inner)} {inner[0]}s" if len(set(inner)) == 1 else "(" + ", ".join(inner) + ")"
        return f"list of {inner[0]}" if inner else "list"
    if origin is dict:
        return f"mapping of {type_words(args[0])} to {type_words(args[1])}" if args else "mapping"
    if tp in _WORDS:
        return _WORDS[tp]
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def validator_words(validator: Any) -> list[str]:
    """attrs validators in words: ``>= 1``, ``one of: a, b``; a custom one by its docstring, if any."""
    if validator is None:
        return []
    if isinstance(validator, (list, tuple)):
        return [w for v in validator for w in validator_words(v)]
    for inner in ("_validators", "validators"):  # and_
        if isinstance(getattr(validator, inner, None), (list, tuple)):
            return validator_words(list(getattr(validator, inner)))
    if hasattr(validator, "validator") and type(validator).__name__ == "_OptionalValidator":
        return validator_words(validator.validator)  # the type already says "or none"
    if hasattr(validator, "compare_op") and hasattr(validator, "bound"):
        return [f"{validator.compare_op} {validator.bound}"]
    if hasattr(validator, "options") and type(validator).__name__ == "_InValidator":
        return [_choices(validator.options)]
    if type(validator).__name__ == "_InstanceOfValidator":
        return []
    doc = " ".join((getattr(validator, "__doc__", None) or "").split())
    doc = re.sub(r"^attrs validator:\s*", "", doc).replace("``value`` is ", "").replace("``", "`").rstrip(".")
    return [doc] if doc and not doc.startswith(("Validator", "A validator")) else []


def default_words(field: attrs.Attribute) -> str:
    """The default as a recipe would write it (YAML), or ``required``."""
    if field.default is attrs.NOTHING:
        return "required"
    value = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default  # type: ignore[call-arg]
    return yaml_words(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "written") and hasattr(value, "options"):  # a recipe component
        return {"type": value.written, **(attrs.asdict(value.options) if attrs.has(type(value.options))
                                          else dict(value.options))}
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def yaml_words(value: Any) -> str:
    import yaml

    value = _plain(value)
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def options_of(cls: type) -> list[OptionInfo]:
    """Every option of an attrs options class, described."""
    with contextlib.suppress(NameError):  # resolved types read the same whatever ran before
        attrs.resolve_types(cls)
    docs = field_docs(cls)
    found = []
    for f in attrs.fields(cls):
        checks = validator_words(f.validator)
        kind = type_words(f.type)
        choice = next((c for c in checks if c.startswith("one of: ")), None)
        if choice and kind in ("str", "str or none"):  # a string among fixed values: say which
            checks.remove(choice)
            kind = choice + (" or none" if kind.endswith("or none") else "")
        checks = [c for c in checks if c != kind]  # a Literal type and its in_ validator say it once
        found.append(OptionInfo(f.name, kind, default_words(f), tuple(checks), docs.get(f.name, "")))
    return found


__all__ = ["OptionInfo", "default_words", "field_docs", "options_of", "type_words", "validator_words"]
