"""Reading recipe files: safe YAML, one level of ``base:`` inheritance, ``--set`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ganstack.errors import RecipeError
from ganstack.recipe.paths import find_recipe


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse one recipe file with the safe loader; the top level must be a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError("recipe file not found", file=str(path),
                          fix="check the path; recipes shipped with ganstack are in recipes/") from None
    except OSError as exc:
        raise RecipeError(f"cannot read the recipe: {exc.strerror}", file=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"invalid YAML: {problem}", file=str(path), path=where,
                          fix="correct the YAML syntax there (indentation, a missing ':' or quote)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe must be a mapping of keys, got {type(data).__name__}",
                          file=str(path), fix="start the file with keys such as 'stages:'")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: mappings merge key by key, lists and scalars replace.

    A component whose ``type`` changes is replaced whole: another plugin's options would not fit.
    A mapping with integer keys over a list edits entries by index (``stages: {1: {generator:
    {scale: 2}}}``); ``null`` under an index drops that entry, the index one past the end appends.
    This keeps ablations one line long.
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not _other_type(merged[key], value):
            merged[key] = deep_merge(merged[key], value)
        elif isinstance(value, dict) and isinstance(merged.get(key), list) and value and all(
                isinstance(k, int) for k in value):
            merged[key] = _merge_by_index(merged[key], value, key)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _other_type(base: dict[str, Any], override: dict[str, Any]) -> bool:
    return "type" in override and "type" in base and override["type"] != base["type"]


def _merge_by_index(items: list[Any], edits: dict[int, Any], key: str) -> list[Any]:
    result = list(items)
    for index, edit in sorted(edits.items()):
        if index == len(result) and edit is not None:  # one past the end appends
            result.append(copy.deepcopy(edit))
            continue
        if not 0 <= index < len(items):
            raise RecipeError(f"'{key}' has {len(items)} entries; there is no index {index} to edit",
                              path=f"{key}.{index}", fix=f"use an index from 0 to {len(items) - 1}, "
                              f"or {len(items)} to append an entry")
        if isinstance(edit, dict) and isinstance(items[index], dict):
            result[index] = deep_merge(items[index], edit)
        elif edit is not None:
            result[index] = copy.deepcopy(edit)
    return [item for i, item in enumerate(result) if not (i in edits and edits[i] is None)]


def load_with_base(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read ``path`` and merge it over its ``base:`` recipe (next to ``path``, then in the working
    folder, then among the shipped recipes)."""
    path = path.resolve() if path.exists() else path
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise RecipeError(f"circular 'base:' chain: {cycle}", file=str(_chain[0]), path="base",
                          fix="remove 'base:' from one of these recipes")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"'base' must be a path to another recipe, got {base!r}", file=str(path),
                          path="base", fix="write base: other_recipe.yaml (relative to this file)")
    base_path, looked = find_recipe(base, path.parent)
    if base_path is None:
        raise RecipeError(f"base recipe '{base}' not found (looked at {' and '.join(looked)})", file=str(path),
                          path="base", fix="give a path relative to this recipe's folder, or the name of a "
                          "shipped recipe (`ganstack recipes` lists them)")
    try:
        return deep_merge(load_with_base(base_path, (*_chain, path)), data)
    except RecipeError as exc:
        exc.file = exc.file or str(path)
        raise


def _parse_path(spec: str) -> list[str | int]:
    parts: list[str | int] = []
    for part in spec.split("."):
        if part == "":
            raise ValueError("empty key")
        parts.append(int(part) if part.lstrip("-").isdigit() else part)
    return parts


def apply_override(data: dict[str, Any], assignment: str, *, file: str | None = None) -> None:
    """Apply one ``path.to.key=VALUE`` in place; VALUE is read as YAML (``32``, ``true``, ``[1, 2]``).

    On a list, as in ``base:`` merging, ``stages.1=null`` drops entry 1 and the index one past the
    end appends (``stages.2={...}``).

    Setting a component's ``type`` to another replaces the component whole, as ``base:`` merging does;
    later ``--set``s then give the new component's options.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set '{assignment}' is not of the form path.to.key=VALUE", file=file,
                          fix="write e.g. --set training.batch_size=32 or --set stages.1.discriminator.ndf=32")
    key = key.strip()
    try:
        parts = _parse_path(key)
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (ValueError, yaml.YAMLError) as exc:
        raise RecipeError(f"--set '{assignment}': {exc}", file=file,
                          fix="write e.g. --set training.batch_size=32") from None
    node: Any = data
    walked: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        label = ".".join(walked) or "the recipe"
        if isinstance(node, list):
            if not isinstance(part, int):
                raise RecipeError(f"--set '{key}': '{label}' is a list; '{part}' is not an index",
                                  file=file, path=key, fix=f"use a number from 0 to {len(node) - 1}")
            if last and value is None and -len(node) <= part < len(node):  # as in base: merging, null drops
                del node[part]
                return
            if last and part == len(node) and value is not None:  # one past the end appends
                node.append(value)
                return
            if not -len(node) <= part < len(node):
                raise RecipeError(f"--set '{key}': index {part} is out of range; '{label}' has "
                                  f"{len(node)} entries", file=file, path=key,
                                  fix=f"use an index from 0 to {len(node) - 1}")
        elif isinstance(node, dict):
            part = str(part)
            if not last and part not in node:
                node[part] = {}
        else:
            raise RecipeError(f"--set '{key}': '{label}' is a value ({node!r}), not a mapping or list",
                              file=file, path=key, fix="set the value itself, or check the key path")
        if last and part == "type" and isinstance(node, dict) and _other_type(node, {part: value}):
            node.clear()  # the rule deep_merge applies: another plugin's component, other options
            node[part] = value
        elif last:
            node[part] = value
        else:
            node = node[part]
        walked.append(str(part))
