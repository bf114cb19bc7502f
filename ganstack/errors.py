"""Errors a user can cause, and how they are shown.

Anything a user can get wrong (a recipe, a path, a plugin name, a checkpoint) raises a
:class:`UserError`. The CLI prints it as one paragraph and exits with code 2; every other
exception is a bug in ganstack or a plugin and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix: names the file, the key path, what is wrong and a fix."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None,
                 fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.path = path
        self.fix = fix

    def __str__(self) -> str:
        where = ": ".join(str(p) for p in (self.file, self.path) if p)
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text = f"{text.rstrip('.')}. Fix: {self.fix}"
        return text


class RecipeError(UserError):
    """A recipe that cannot be read, merged, structured or resolved."""


class PluginError(UserError):
    """A plugin that failed to load, or a component name that does not resolve."""


class DataError(UserError):
    """Missing, incomplete or unreadable data."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, foreign or incompatible."""


class WriteError(UserError, OSError):
    """A file or folder that could not be written (full disk, read-only folder, a file in the way).

    Also an :class:`OSError`, so code that handles failed writes keeps working.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
