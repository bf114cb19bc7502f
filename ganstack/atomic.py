"""Writing files, the one way ganstack writes anything a user keeps.

The content goes to a uniquely named temporary file beside the target, is flushed to disk, then
renamed over the target: a crash, a full disk or a concurrent writer leaves the old file or the
new one, never half of either, and never a stray temporary file. A write that fails (full disk,
read-only folder, a file where a folder should be) raises :class:`~ganstack.errors.WriteError`
naming the file and a fix, never a bare ``OSError``.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ganstack.errors import WriteError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
_IN_THE_WAY = {errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def cannot_write(path: Path, exc: OSError, *, fix: str | None = None) -> WriteError:
    """The error for a failed write of ``path``: what the system said and what to do about it."""
    if isinstance(exc, WriteError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _FULL:
        advice = "free space on that drive (or raise the quota), or write to another folder"
    elif exc.errno in _DENIED:
        advice = "make the folder writable, or write to another folder"
    elif exc.errno in _IN_THE_WAY:
        advice = "a file stands where a folder is needed (or the reverse) in that path; move it, or write to " \
                 "another folder"
    else:
        advice = "check the drive, or write to another folder"
    error = WriteError(f"cannot write: {reason}", file=str(path), fix=f"{fix}; {advice}" if fix else advice)
    error.errno, error.strerror = exc.errno, exc.strerror
    return error


def ensure_dir(folder: Path, *, fix: str | None = None) -> Path:
    """Create ``folder`` and its parents (if missing), or raise a :class:`WriteError` naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(folder, exc, fix=fix) from None
    return folder


def atomic_write(path: Path, write: Callable[[Path], None], *, fix: str | None = None) -> None:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, fsync it, then move it onto ``path``.

    An ``OSError`` on the way becomes a :class:`WriteError` naming ``path`` (``fix`` is put first in
    its advice), after the temporary file is removed; other errors propagate unchanged.
    """
    ensure_dir(path.parent, fix=fix)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        # O_EXCL: a name no other writer holds; mode 0o666 minus the umask, as a plain open() would
        # give (tempfile.mkstemp's 0o600 would hide a run's files from the user's group).
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise cannot_write(path, exc, fix=fix) from None
    try:
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise cannot_write(path, exc, fix=fix) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, write: Callable[[BinaryIO], None], *, fix: str | None = None) -> None:
    """Like :func:`atomic_write`, with ``write`` given the open binary file (for ``torch.save`` & co.)."""
    def fill(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            write(fh)
    atomic_write(path, fill, fix=fix)


def write_text_atomic(path: Path, text: str, *, fix: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fix=fix)


class AppendLog:
    """A text file grown one line at a time (``metrics.jsonl``): each line flushed whole, failures reported.

    Appending cannot be atomic; a kill mid-line leaves a torn last line, which readers drop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        ensure_dir(path.parent)
        try:
            self._fh = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise cannot_write(path, exc) from None

    def write_line(self, line: str) -> None:
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:
            raise cannot_write(self.path, exc) from None

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:
            raise cannot_write(self.path, exc) from None
