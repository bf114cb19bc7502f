"""Checkpoints: written atomically, read with ``weights_only=True``, with every RNG state inside."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.atomic import write_bytes_atomic
from ganstack.errors import CheckpointError

FORMAT = "ganstack-checkpoint"
FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every random stream a run draws from, in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: a crash leaves the old file."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **obj}
    write_bytes_atomic(path, lambda fh: torch.save(payload, fh),
                       fix="the previous checkpoint is intact; resume with `ganstack run --resume` once "
                       "there is room, or choose another --out")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ganstack checkpoint, refusing anything that is not one, with a clear message."""
    path = Path(path)
    if path.is_dir():
        path = find_checkpoint(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", file=str(path),
                              fix="give a run folder or a .pt file written by `ganstack run`")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, random bytes...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"not a readable ganstack checkpoint ({first[:200]})", file=str(path),
                              fix="the file is truncated, corrupt or of another program; use another "
                              "checkpoint from the run's checkpoints/ folder") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError("this file is not a ganstack checkpoint", file=str(path),
                              fix="give a checkpoint written by `ganstack run` (checkpoints/last.pt)")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {data['format_version']} is newer than this ganstack "
                              f"reads ({FORMAT_VERSION})", file=str(path), fix="upgrade ganstack")
    data["path"] = str(path)
    return data


def find_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of a run folder (``checkpoints/last.pt``)."""
    for candidate in (run_dir / "checkpoints" / "last.pt", run_dir / "last.pt"):
        if candidate.is_file():
            return candidate
    raise CheckpointError("no checkpoint in this folder", file=str(run_dir),
                          fix="give a run folder written by `ganstack run` (it has checkpoints/last.pt) "
                          "or the path of a .pt file")
