"""Atomic file writes, the one way ganstack writes anything a user keeps.

The content goes to a uniquely named temporary file beside the target, is flushed to disk, then
renamed over the target: a crash, a full disk or a concurrent writer leaves the old file or the
new one, never half of either, and never a stray temporary file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, fsync it, then move it onto ``path``.

    Errors propagate unchanged (the temporary file is removed first), so callers word their own
    messages.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # O_EXCL: a name no other writer holds; mode 0o666 minus the umask, as a plain open() would give
    # (tempfile.mkstemp's 0o600 would hide a run's files from the user's group).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Like :func:`atomic_write`, with ``write`` given the open binary file (for ``torch.save`` & co.)."""
    def fill(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            write(fh)
    atomic_write(path, fill)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
