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
from ganstack.atomic import write_text_atomic


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


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
