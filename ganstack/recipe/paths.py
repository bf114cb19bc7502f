"""Where a path named in a recipe points: one rule for data folders, checkpoints and encoder files.

A relative path is looked up next to the recipe first, then in the working folder, so a recipe
and the files beside it can move together, and paths typed relative to where ``ganstack`` runs
still work. A recipe itself (on the command line, or as ``base:``) is then looked up among the
recipes that ship with ganstack, so ``ganstack run shapes_quickstart`` and ``base:
shapes_quickstart.yaml`` work from any folder once ganstack is installed. A run remembers its recipe's folder, so resuming, sampling and evaluating it from
elsewhere resolve the same paths the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def recipe_path_candidates(value: str | Path, base_dir: Path | None) -> list[Path]:
    """Every place ``value`` may name, in the order tried (one place for an absolute path)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return [path]
    bases = [b for b in (base_dir, Path.cwd()) if b is not None]
    return list(dict.fromkeys(b / path for b in bases))


def resolve_recipe_path(value: str | Path, base_dir: Path | None,
                        wanted: Callable[[Path], bool] = Path.exists) -> tuple[Path, list[Path]]:
    """The first candidate that is ``wanted`` (else the first one), and every candidate for messages."""
    candidates = recipe_path_candidates(value, base_dir)
    return next((c for c in candidates if wanted(c)), candidates[0]), candidates


def looked_in(candidates: list[Path]) -> str:
    """The candidates as an error message names them."""
    return " or ".join(f"'{c}'" for c in candidates)


__all__ = ["looked_in", "recipe_path_candidates", "resolve_recipe_path"]


# ------------------------------------------------------------------------------ shipped recipes
SHIPPED_PACKAGE_DIR = "shipped_recipes"  # where a built wheel holds recipes/ (see setup.py)


def shipped_recipes_dir() -> Path:
    """The recipes that ship with ganstack: package data of an installed wheel, ``recipes/`` in a checkout."""
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent / "recipes"
    if (package / SHIPPED_PACKAGE_DIR).is_dir() or not (package.parent / "pyproject.toml").is_file():
        return package / SHIPPED_PACKAGE_DIR
    return checkout


def shipped_recipes() -> dict[str, Path]:
    """Every shipped recipe by name: its path under the shipped folder without ``.yaml``
    (``shapes_quickstart``, ``ablations/no_ca``)."""
    root = shipped_recipes_dir()
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def shipped_recipe(name: str | Path) -> Path | None:
    """The shipped recipe ``name`` (with or without ``.yaml``), or None."""
    text = Path(name).as_posix()
    return shipped_recipes().get(text[:-5] if text.endswith(".yaml") else text)


def find_recipe(value: str | Path, base_dir: Path | None = None) -> tuple[Path | None, list[str]]:
    """A recipe file named on the command line or by ``base:``: the path itself (next to the recipe
    ``base_dir``, then the working folder), else the shipped recipe of that name. Returns the file
    (None when there is none) and every place looked, for the message."""
    candidates = recipe_path_candidates(value, base_dir)
    found = next((c for c in candidates if c.exists() and not c.is_dir()), None)  # /dev/stdin too
    if found is None and not Path(value).expanduser().is_absolute():
        found = shipped_recipe(value)
    return found, [*(f"'{c}'" for c in candidates), "the shipped recipes (`ganstack recipes`)"]


def recipe_summary(path: Path) -> str:
    """One line about a recipe: its own ``description:``, else the first sentence of its opening comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        if line.startswith("description:"):
            return line.partition(":")[2].strip().strip("'\"")
    comment = []
    for line in lines:
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(comment)
    end = text.find(". ")
    return text[: end + 1] if end >= 0 else text


__all__ += ["find_recipe", "recipe_summary", "shipped_recipe", "shipped_recipes", "shipped_recipes_dir"]
