"""Reading recipe files: safe YAML, one level of ``base:`` inheritance, ``--set`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ganstack.errors import RecipeError
from ganstack.reading import read_text
from ganstack.recipe.paths import find_recipe

# A recipe's values, counted with every alias (*name) expanded; real recipes hold a few hundred. An
# "alias bomb" (nine aliases of nine aliases of ...) stays small on disk and would expand to billions.
MAX_VALUES = 100_000
MAX_RECIPE_BYTES = 4 << 20  # the largest shipped recipe is a few KB


class _RecipeLoader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *base' merges; its keys may be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; the constructor below explains it
                continue
            if first is not None:
                raise _DuplicateKey(key, first, line, key_node.start_mark.column + 1)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, line: int, column: int) -> None:
        super().__init__(key)
        self.key, self.first, self.line, self.column = key, first, line, column


def _expanded_size(root: yaml.Node) -> tuple[int, yaml.Node | None]:
    """How many values ``root`` holds with its aliases expanded (up to just past the limit), and the
    node where the count crossed :data:`MAX_VALUES`. Linear in the file: shared nodes are sized once."""
    sizes: dict[int, int] = {}
    crossed: list[yaml.Node] = []

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = MAX_VALUES + 1  # a node inside itself (a recursive alias) counts as too big
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        for child in children:
            total = min(total + size(child), MAX_VALUES + 1)
        if total > MAX_VALUES and not crossed:
            crossed.append(node)
        sizes[id(node)] = total
        return total

    return size(root), (crossed[0] if crossed else None)


def parse_yaml(text: str, *, file: str | None, what: str = "recipe") -> Any:
    """Parse YAML text with the safe loader; a syntax error, a key given twice or an alias bomb is a RecipeError."""
    loader = _RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        total, crossed = _expanded_size(node)
        if total > MAX_VALUES:
            mark = (crossed or node).start_mark
            raise RecipeError(f"this {what} expands to more than {MAX_VALUES:,} values through its aliases "
                              "(*name), which no recipe needs (an 'alias bomb')", file=file,
                              path=f"line {mark.line + 1}, column {mark.column + 1}",
                              fix="write the values out, or use fewer nested aliases")
        return loader.construct_document(node)
    except _DuplicateKey as dup:
        raise RecipeError(f"the key '{dup.key}' is given twice in one mapping (first on line {dup.first}); "
                          "YAML would silently keep only the last", file=file,
                          path=f"line {dup.line}, column {dup.column}",
                          fix="delete one of the two, or merge their contents") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"invalid YAML: {problem}", file=file, path=where,
                          fix="correct the YAML syntax there (indentation, a missing ':' or quote)") from None
    except RecursionError:
        raise RecipeError(f"this {what} nests too deeply to read", file=file,
                          fix="flatten the structure; recipes nest a few levels") from None
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse one recipe file with the safe loader; the top level must be a mapping."""
    text = read_text(path, what="recipe file", error=RecipeError, max_bytes=MAX_RECIPE_BYTES,
                     fix="check the path; recipes shipped with ganstack are in recipes/")
    data = parse_yaml(text, file=str(path))
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
    except ValueError as exc:
        raise RecipeError(f"--set '{assignment}': {exc}", file=file,
                          fix="write e.g. --set training.batch_size=32") from None
    try:
        value = parse_yaml(raw, file=None, what="value") if raw.strip() else ""
    except RecipeError as exc:
        raise RecipeError(f"--set '{assignment}': {exc.message}", file=file, path=key, fix=exc.fix) from None
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
