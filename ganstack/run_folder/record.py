"""What a run writes beside its checkpoints: the environment record and ``metrics.jsonl``."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import ganstack
from ganstack.atomic import AppendLog, write_text_atomic
from ganstack.errors import DataError
from ganstack.reading import read_text


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment_record(*, device: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Versions, device and speed settings: what is needed to say where a result came from."""
    from ganstack.components.loader import load_plugins

    plugins = {name: {"distribution": p.distribution, "version": p.version, "error": p.error}
               for name, p in load_plugins().plugins.items()}
    record = {
        "ganstack": ganstack.__version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor(),
        "git_commit": git_commit(Path.cwd()), "plugins": plugins, **settings,
    }
    return record


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, without a torn last line (what a kill or power cut leaves).

    A line that does not parse before the last one is damage, not a torn write: a DataError names it.
    """
    lines = read_text(path, what="metrics log", error=DataError).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif number == len(lines):
            break  # torn by an interrupted write: the step it began is re-logged after the resume
        else:
            raise DataError(f"line {number} is not a JSON object", file=str(path),
                            fix="delete or repair that line (each line is one step's record), then resume")
    return records


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the checkpoint's step (and a torn last line)
    are dropped, atomically."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [r for r in read_metrics(path) if _step(r) <= resume_step]
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._log = AppendLog(path)

    def write(self, record: dict[str, Any]) -> None:
        self._log.write_line(json.dumps(record))

    def close(self) -> None:
        self._log.close()


def _step(record: dict[str, Any]) -> float:
    step = record.get("step", 0)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else 0
