"""Where a path named in a recipe points: one rule for data folders, checkpoints and encoder files.

A relative path is looked up next to the recipe first, then in the working folder, so a recipe
and the files beside it can move together, and paths typed relative to where ``ganstack`` runs
still work. A run remembers its recipe's folder, so resuming, sampling and evaluating it from
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
