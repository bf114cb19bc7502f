"""Turning recipe files into a checked :class:`Recipe` whose components are resolved plugins."""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from ganstack.components.registry import Entry, Registry
from ganstack.errors import PluginError, RecipeError, UserError, did_you_mean
from ganstack.interfaces import SAVED_BEFORE
from ganstack.recipe.files import apply_override, load_with_base
from ganstack.recipe.paths import find_recipe
from ganstack.recipe.schema import COMPONENT_KINDS, Component, Recipe

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _strict(kind: type) -> Any:
    """Structure hooks that refuse silent coercions (``int('3')``, ``bool('no')``, ``int(2.7)``)."""

    def hook(value: Any, _type: Any) -> Any:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):  # YAML reads 2e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if not ok and kind is str and isinstance(value, bool):
            raise TypeError(f"expected a string, got {value!r} (YAML reads a bare off, no, on or yes as "
                            "true or false: quote the word, e.g. 'off')")
        if not ok:
            raise TypeError(f"expected {_TYPE_WORDS[kind]}, got {value!r}")
        return value

    return hook


def make_converter(*, record_providers: bool = True) -> cattrs.Converter:
    """The converter of recipes: strict scalars, components as ``{type: NAME, ...options}``.

    With ``record_providers`` a resolved component is written ``PROVIDER:NAME`` (what a run saves, so
    it resolves to the same plugin later); without it, as the recipe wrote it (what ``check`` prints).
    """
    conv = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, bool, str):
        conv.register_structure_hook(kind, _strict(kind))

    def component(value: Any, _type: Any) -> Component:
        if isinstance(value, str):
            return Component(value, {})
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping with a 'type' key, got {value!r}")
        if "type" not in value:
            raise TypeError("missing required key 'type' (the registered name of the component)")
        if not isinstance(value["type"], str):
            raise TypeError(f"'type' must be a registered name, got {value['type']!r}")
        options = {k: v for k, v in value.items() if k != "type"}
        return Component(value["type"], options)

    def name(c: Component) -> str:
        plugin = (c.provider or c.plugin) if record_providers else c.plugin
        return f"{plugin}:{c.type}" if plugin else c.type

    def literal(value: Any, tp: Any) -> Any:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise ValueError("must be one of", None, choices, value)  # the shape attrs' in_ gives: one message

    conv.register_structure_hook_func(lambda tp: typing.get_origin(tp) is typing.Literal, literal)
    conv.register_structure_hook(Component, component)
    conv.register_unstructure_hook(
        Component, lambda c: {"type": name(c), **(conv.unstructure(c.options) if attrs.has(type(c.options))
                                                   else dict(c.options))})
    return conv


CONVERTER = make_converter()
_AS_WRITTEN = make_converter(record_providers=False)


# ------------------------------------------------------------------------------- error translation
def _field_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)] if attrs.has(cls) else []


def _leaf(exc: BaseException, path: str) -> tuple[str, BaseException]:
    """Follow a cattrs error group down to its first leaf, building the key path on the way."""
    while isinstance(exc, BaseValidationError) and exc.exceptions:
        child = exc.exceptions[0]
        for note in getattr(child, "__notes__", []):
            if isinstance(note, AttributeValidationNote):
                path = f"{path}.{note.name}" if path else note.name
            elif isinstance(note, IterableValidationNote):
                path = f"{path}[{note.index}]"
        exc = child
    return path, exc


def _describe(exc: BaseException, path: str, cls: type) -> tuple[str, str, str | None]:
    """Return (path, message, fix) for one leaf error."""
    if isinstance(exc, ForbiddenExtraKeysError):
        known = _field_names(exc.cl)
        extra = sorted(exc.extra_fields)
        key = extra[0]
        hint = did_you_mean(key, known)
        return (f"{path}.{key}" if path else key, f"unknown key '{key}'{hint}",
                f"remove it, or use one of: {', '.join(known)}" if known else "remove it")
    if isinstance(exc, KeyError):
        return path, "required key is missing", f"add '{path.rsplit('.', 1)[-1]}' to the recipe"
    message = str(exc).strip() or type(exc).__name__
    fix = None
    if isinstance(exc, TypeError) and re.search(r"not (iterable|subscriptable)|has no attribute", message):
        message = "expected a mapping of keys here (or a list of them), got a single value"
        fix = "write this entry as keys and values, as `ganstack check` prints them"
    if isinstance(exc, ValueError) and len(exc.args) == 4 and isinstance(exc.args[0], str):
        _message, attr, choices, value = exc.args  # attrs' in_ validator, or a Literal field
        named = getattr(attr, "name", None)
        if named:
            path = f"{path}.{named}" if path else named
        words = ", ".join(map(str, choices))
        message = f"must be one of: {words} (got {value!r}){did_you_mean(value, choices)}"
        fix = f"use one of: {words}"
    match = re.match(r"^'(\w+)' (.*)$", message)
    if match and isinstance(exc, ValueError):  # an attrs validator of a class: name its field
        path = f"{path}.{match.group(1)}" if path else match.group(1)
        message = match.group(2)
    return path, message, fix


def structure(data: Any, cls: type, *, file: str | None, path: str = "") -> Any:
    """Structure plain data into ``cls``, turning any failure into one :class:`RecipeError`."""
    try:
        return CONVERTER.structure(data, cls)
    except (BaseValidationError, ValueError, TypeError, KeyError) as exc:
        leaf_path, leaf = _leaf(exc, path)
        where, message, fix = _describe(leaf, leaf_path, cls)
        raise RecipeError(message, file=file, path=where or None,
                          fix=fix or "correct the value; `ganstack check` prints every key with its default") from None


def place_of(component_path: str, error_path: str | None) -> str:
    """The key path of an error a component raised: a path it gives relative to itself (``margin``)
    goes under the component's (``stages[0].losses[2].margin``); one from the recipe's top
    (``text_encoder.dim``) stays as it is."""
    if not error_path:
        return component_path
    top = re.split(r"[.\[]", error_path, maxsplit=1)[0]
    if top in _field_names(Recipe) or error_path.startswith(component_path):
        return error_path
    return f"{component_path}.{error_path}"


# ------------------------------------------------------------------------------------- resolving
@attrs.define
class ResolvedRecipe:
    """A checked recipe, where it came from, and the registry entry of each component."""

    recipe: Recipe
    file: str | None
    entries: dict[str, Entry]  # key path -> entry
    base_dir: Path | None = None  # the recipe's folder: relative paths in it resolve here first
    registry: Registry | None = None  # what it was resolved against: build further components from it

    def entry(self, path: str) -> Entry:
        return self.entries[path]


def component_paths(recipe: Recipe) -> list[tuple[str, str, Component]]:
    """Every component of a recipe as (key path, registry kind, component)."""
    found = [("text_encoder", "text_encoder", recipe.text_encoder), ("dataset", "dataset", recipe.dataset)]
    for i, stage in enumerate(recipe.stages):
        for key in ("conditioner", "generator", "discriminator"):
            found.append((f"stages[{i}].{key}", COMPONENT_KINDS[key], getattr(stage, key)))
        found += [(f"stages[{i}].losses[{j}]", "loss", c) for j, c in enumerate(stage.losses)]
    found += [(f"evaluation.metrics[{j}]", "metric", c) for j, c in enumerate(recipe.evaluation.metrics)]
    return found


def _check_batch_sizes(recipe: Recipe, file: str | None) -> None:
    """A stage's own batch size needs a block of its own: the joint schedule trains every stage in one."""
    if recipe.training.schedule != "joint":
        return
    for i, stage in enumerate(recipe.stages):
        if stage.batch_size is not None and stage.batch_size != recipe.training.batch_size:
            raise RecipeError(f"stage {i + 1} asks for batch size {stage.batch_size}, but the joint schedule "
                              f"trains every stage in the same steps, at training.batch_size "
                              f"({recipe.training.batch_size})", file=file, path=f"stages[{i}].batch_size",
                              fix="remove the stage's batch_size (set training.batch_size instead), or train "
                              "with training.schedule: stagewise")


def _as_saved(options: Any, cls: type) -> Any:
    """A saved recipe's options with each option it predates set to what its absence meant
    (:data:`ganstack.interfaces.SAVED_BEFORE`)."""
    if not isinstance(options, dict) or not attrs.has(cls):
        return options
    meant = {f.name: f.metadata[SAVED_BEFORE] for f in attrs.fields(cls) if SAVED_BEFORE in f.metadata}
    return {**{k: v for k, v in meant.items() if k not in options}, **options}


def resolve(recipe: Recipe, registry: Registry, *, file: str | None = None,
            base_dir: Path | None = None, saved: bool = False) -> ResolvedRecipe:
    """Look up every component's plugin and structure its options with the plugin's class.

    ``base_dir`` is the folder the recipe's relative paths point into first (then the working folder);
    ``saved``: the recipe is a checkpoint's, whose missing options mean what they meant when it was saved."""
    _check_batch_sizes(recipe, file)
    entries: dict[str, Entry] = {}
    for path, kind, comp in component_paths(recipe):
        try:
            entry = registry.get(kind, comp.written, where=": ".join(p for p in (file, f"{path}.type") if p))
        except PluginError as exc:
            raise PluginError(exc.message, file=file, path=f"{path}.type", fix=exc.fix) from None
        if not attrs.has(type(comp.options)):
            options = _as_saved(comp.options, entry.options) if saved else comp.options
            comp.options = structure(options, entry.options, file=file, path=path)
        comp.provider = entry.plugin
        entries[path] = entry
    return ResolvedRecipe(recipe, file, entries, base_dir, registry)


def load_recipe(path_given: str | Path, overrides: Sequence[str] = (), *,
                registry: Registry | None = None) -> ResolvedRecipe:
    """Read a recipe file (with ``base:``), apply ``--set`` overrides, check and resolve it.

    ``path_given`` is a file (relative: to the working folder) or a shipped recipe's name
    (``shapes_quickstart``, with or without ``.yaml``)."""
    from ganstack.components.loader import load_plugins

    path, looked = (Path(path_given), []) if Path(path_given).is_file() else find_recipe(path_given)
    if path is None:
        raise RecipeError(f"recipe file not found (looked at {' and '.join(looked)})", file=str(path_given),
                          fix="check the path, or name a shipped recipe: `ganstack recipes` lists them")
    file = str(path)
    data = load_with_base(path)
    for assignment in overrides:
        apply_override(data, assignment, file=file)
    data.setdefault("name", Path(path).stem)
    try:
        recipe = structure(data, Recipe, file=file)
        return resolve(recipe, registry or load_plugins().registry, file=file,
                       base_dir=Path(path).resolve().parent)
    except (RecipeError, PluginError) as exc:  # both name the key path
        _name_the_override(exc, overrides)
        raise


def _name_the_override(exc: UserError, overrides: Sequence[str]) -> None:
    """Where the bad value came from a ``--set``, say so: the flag and the PATH=VALUE given."""
    if not exc.path:
        return
    where = re.sub(r"\[(\d+)\]", r".\1", exc.path)
    for assignment in reversed(overrides):
        key = assignment.partition("=")[0].strip()
        if where == key or where.startswith(key + ".") or key.startswith(where + "."):
            exc.file = f"{exc.file or 'the recipe'} with --set {assignment}"
            return


def recipe_from_dict(data: dict[str, Any], *, registry: Registry | None = None, file: str | None = None,
                     base_dir: str | Path | None = None) -> ResolvedRecipe:
    """Check and resolve recipe data that is already in memory (a checkpoint's recipe, with the
    folder its recipe file was in as ``base_dir``)."""
    from ganstack.components.loader import load_plugins

    return resolve(structure(data, Recipe, file=file), registry or load_plugins().registry, file=file,
                   base_dir=Path(base_dir) if base_dir else None, saved=True)


def to_data(recipe: Recipe, *, providers: bool = True) -> dict[str, Any]:
    """The fully resolved recipe as plain data, every default filled in.

    With ``providers`` (what a run saves) each component's ``type`` is ``PLUGIN:NAME``, naming the plugin
    it resolved to; without (what ``check`` prints) it stays as the recipe wrote it.
    """
    return typing.cast(dict, (CONVERTER if providers else _AS_WRITTEN).unstructure(recipe))


__all__ = ["ResolvedRecipe", "component_paths", "load_recipe", "place_of", "recipe_from_dict", "resolve",
           "structure", "to_data"]
