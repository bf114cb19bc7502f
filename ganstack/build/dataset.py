"""Building a recipe's dataset for one split, beside building its stack (both are what a recipe makes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ganstack.errors import UserError
from ganstack.interfaces import DataContext
from ganstack.recipe.resolve import ResolvedRecipe, place_of


def build_dataset(resolved: ResolvedRecipe, split: str, resolutions: tuple[int, ...], *,
                  want_wrong: bool = False) -> Any:
    """Build the recipe's dataset for one split at the stack's stage resolutions."""
    recipe = resolved.recipe
    ctx = DataContext(split=split, resolutions=tuple(resolutions), cache_dir=Path(".ganstack-cache"),
                      seed=recipe.training.seed, want_wrong=want_wrong,
                      recipe_dir=resolved.base_dir)
    try:
        return resolved.entry("dataset").factory(recipe.dataset.options, ctx)
    except UserError as exc:
        raise type(exc)(exc.message, file=exc.file or resolved.file, path=place_of("dataset", exc.path),
                        fix=exc.fix) from None
