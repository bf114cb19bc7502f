"""Ctrl-C and SIGTERM during a run: the first stops it cleanly, a second exits at once.

The first signal asks the loop to stop after the step it is in; the run then writes its sample
sheet and checkpoint and exits 0. A second signal exits with status 130 without writing anything,
except while a checkpoint is being written: then it waits until the atomic write has finished, so
``checkpoints/last.pt`` is always a whole checkpoint (the new one, or the previous one).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any


class RunInterrupted(KeyboardInterrupt):
    """A second interrupt: the command ends with status 130, without a traceback."""


class Interrupts:
    """The run's SIGINT/SIGTERM handlers, installed for the loop's duration."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.reason: str | None = None
        self._writing = 0
        self._exit_when_written = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.reason is None:
            self.reason = signal.Signals(signum).name
            self.report(f"{self.reason} received: finishing this step and writing a checkpoint "
                        "(press Ctrl-C again to exit at once)...")
        elif self._writing:
            if not self._exit_when_written:
                self.report("Second interrupt: exiting as soon as the checkpoint being written is complete.")
            self._exit_when_written = True
        else:
            self.report("Second interrupt: exiting now; the last checkpoint written is kept.")
            raise RunInterrupted

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker)
                pass

    def restore(self) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A write a second interrupt must not cut short (a checkpoint)."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
        if self._exit_when_written and not self._writing:
            raise RunInterrupted
