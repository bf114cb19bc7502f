"""One run per run folder: an exclusive lock (``.lock``, ``flock``) held while a run writes there.

The lock belongs to the open file, so the system drops it when the process ends, however it ends: a
lock file left by a process that died blocks nothing. Where ``fcntl`` is missing (Windows) there is no
lock. The file holds the owner's process id, for the message a second run shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from ganstack.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunFolderLock:
    """Held until :meth:`release` (or the process ends)."""

    def __init__(self, handle: IO[str] | None) -> None:
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            if fcntl is not None:
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def lock_run_folder(folder: Path, *, flag: str = "--out") -> RunFolderLock:
    """Take the run folder's lock or refuse, naming the folder and the process that holds it."""
    if fcntl is None:  # pragma: no cover
        return RunFolderLock(None)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{folder} is in use by another ganstack run (process {owner}); two runs writing one "
                        "folder would overwrite each other's checkpoints", path=flag,
                        fix=f"wait for process {owner} to finish (or stop it), or choose another {flag}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return RunFolderLock(handle)
