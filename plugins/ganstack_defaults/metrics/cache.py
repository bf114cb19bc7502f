"""On-disk caches of what metrics compute once (reference statistics, judge networks).

A cache entry is a ``torch.save`` file named by the sha256 of its key (a JSON-able dict) and
holding that key, so a stale or foreign file is recomputed rather than trusted. Files are written
to a temporary name and moved into place, so an interrupted run never leaves half a file; they
are read back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ganstack.atomic import write_bytes_atomic
from ganstack.errors import UserError
from ganstack.run_folder.checkpoint import load_failure
from ganstack_defaults.data.cache import cache_key


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (weights files are ~100 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _key_text(key: dict[str, Any]) -> str:
    """The key as stored in an entry: stable JSON, so equal keys compare equal."""
    return json.dumps(key, sort_keys=True, default=str)


def cache_file(cache_dir: Path, prefix: str, key: dict[str, Any]) -> Path:
    return cache_dir / f"{prefix}-{cache_key(key)[:24]}.pt"


def load_entry(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached payload at ``path`` if it exists and was stored under ``key``; else None."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged cache file is recomputed, not fatal
        warnings.warn(f"ignoring unreadable metric cache file {path}: {load_failure(exc)}", stacklevel=2)
        return None
    if not isinstance(entry, dict) or entry.get("key") != _key_text(key):
        return None
    return entry.get("payload")


def save_entry(path: Path, key: dict[str, Any], payload: dict[str, Any]) -> None:
    """Write ``payload`` under ``key`` atomically."""
    entry = {"key": _key_text(key), "payload": payload}
    try:
        write_bytes_atomic(path, lambda fh: torch.save(entry, fh))
    except OSError as exc:
        raise UserError(f"cannot write the metric cache {path}: {exc.strerror or exc}", path="cache_dir",
                        fix="point the metric's `cache_dir` option at a writable folder") from None
