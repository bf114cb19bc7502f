"""Where a dataset's files are: option paths resolved like a recipe's, files found by key or name."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

import attrs

from ganstack.errors import DataError
from ganstack.interfaces import DataContext
from ganstack.recipe.paths import looked_in, resolve_recipe_path

DOCS = "docs/datasets.md"


def resolve_root(value: str, ctx: DataContext, *, option: str, dataset: str) -> Path:
    """The folder ``value`` names, found by the recipe path rule (next to the recipe, then the cwd)."""
    path, candidates = resolve_recipe_path(value, ctx.recipe_dir, Path.is_dir)
    if path.is_dir():
        return path
    raise DataError(
        f"the {dataset} data folder was not found (option `{option}`: looked for {looked_in(candidates)})",
        file=str(candidates[0]),
        fix=f"set `{option}` to the folder holding the data; {DOCS} says where to get {dataset} "
        "and how its files are laid out",
    )


class FileFinder:
    """Finds ``<key><suffix>`` under a folder: at its path, by its file name, or by name anywhere below.

    The last look walks the folder once, so layouts that nest files differently from their keys
    (Oxford-102's ``text_c10/class_*/``, COCO's ``train2014/``) still resolve.
    """

    def __init__(self, folder: Path, suffix: str) -> None:
        self.folder = folder
        self.suffix = suffix
        self._by_name: dict[str, Path] | None = None

    def expected(self, key: str) -> Path:
        return self.folder / f"{key}{self.suffix}"

    def find(self, key: str) -> Path | None:
        name = f"{Path(key).name}{self.suffix}"
        for candidate in (self.expected(key), self.folder / name):
            if candidate.is_file():
                return candidate
        if self._by_name is None:
            found = sorted(self.folder.rglob(f"*{self.suffix}")) if self.folder.is_dir() else []
            self._by_name = {p.name: p for p in reversed(found)}  # the first in sorted order wins
        return self._by_name.get(name)


def path_problem(relative: str) -> str | None:
    """What is wrong with a path a data file lists (relative to its dataset's folder), or None: one that
    could lead outside the folder (absolute, ``/x`` or ``C:\\x``, or going up with ``..``) or that holds
    a control character (a NUL, a newline) no file name has."""
    if not relative.strip():
        return "is empty"
    if any(ord(ch) < 32 for ch in relative):
        return "holds a control character"
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if relative.startswith(("/", "\\")) or PureWindowsPath(relative).drive or ".." in parts:
        return "leads outside the dataset folder"
    return None


def non_empty(_instance: object, attribute: attrs.Attribute, value: str) -> None:
    """attrs validator: a path option must name something."""
    if not str(value).strip():
        raise ValueError(f"'{attribute.name}' must not be empty")
