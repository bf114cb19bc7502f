"""Progress of a run: a rich bar on a terminal, plain log lines elsewhere (CI, files)."""

from __future__ import annotations

import time
from typing import Any


def _fmt(record: dict[str, Any]) -> str:
    """``D1=1.23 D2=1.10 G=4.56``: each stage's discriminator loss and the generator loss."""
    parts = [f"D{k.split('/')[0].removeprefix('stage')}={v:.3f}" for k, v in record.items()
             if k.endswith("/d_total")]
    if "g_total" in record:
        parts.append(f"G={record['g_total']:.3f}")
    return " ".join(parts)


class Progress:
    """Stage, epoch, step of total, losses, images/s and the time left (the sooner of the last
    step and the time budget)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.interactive = bool(console.is_terminal)
        self._bar: Any = None
        self._task: Any = None
        self._started = 0.0
        self._first = 0
        self._total = 0
        self._budget_s: float | None = None

    def start(self, total: int, done: int, budget_minutes: float | None = None) -> None:
        self._started, self._first, self._total = time.monotonic(), done, total
        self._budget_s = budget_minutes * 60 if budget_minutes else None
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[left]}"), TextColumn("{task.fields[info]}"),
                                     console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("training", total=total, completed=done, info="", left="")

    def time_left(self, step: int) -> str:
        elapsed = time.monotonic() - self._started
        rate = (step - self._first) / max(elapsed, 1e-9)
        left = (self._total - step) / rate if rate > 0 else float("inf")
        if self._budget_s is not None:
            left = min(left, max(self._budget_s - elapsed, 0.0))
        return "?" if left == float("inf") else f"{left / 60:.1f} min left"

    def update(self, step: int, record: dict[str, Any] | None) -> None:
        if self._bar is not None:
            fields = {"left": self.time_left(step)}
            if record is not None:
                fields["info"] = (f"stage {record['stage']} epoch {record['epoch']} {_fmt(record)} "
                                  f"{record['images_per_s']:.1f} img/s")
            self._bar.update(self._task, completed=step, **fields)
        elif record is not None:
            self.console.print(f"step {step}/{self._total} stage {record['stage']} epoch {record['epoch']} "
                               f"{_fmt(record)} {record['images_per_s']:.1f} img/s {self.time_left(step)}")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
