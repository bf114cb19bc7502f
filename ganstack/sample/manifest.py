"""Folders of PNGs with a ``manifest.jsonl`` saying what each image is (data previews, samples).

One JSON object a line, one line per image, with ``file`` (relative to the folder) and whatever
fields the writer adds (caption, stage, resolution, ...), so scripts can pick images without
parsing file names. PNGs and the manifest are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from torch import Tensor

from ganstack.atomic import ensure_dir, write_text_atomic
from ganstack.sample.images import save_png, to_uint8

MANIFEST = "manifest.jsonl"


class ManifestWriter:
    """Collects images into ``out_dir``; :meth:`close` writes the manifest and returns its path."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        ensure_dir(self.out_dir)
        self.path = self.out_dir / MANIFEST
        self._records: list[dict[str, Any]] = []

    def add(self, image: Tensor | np.ndarray, file: str, **fields: Any) -> Path:
        """Write ``image`` (``[3, H, W]`` tensor in [-1, 1], or ``H x W x 3`` uint8) as ``file``."""
        if isinstance(image, Tensor):
            image = to_uint8(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
        target = self.out_dir / file
        save_png(image, target)
        self._records.append({**fields, "file": file})
        return target

    def close(self) -> Path:
        """Write ``manifest.jsonl`` (atomically) and return its path."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self._records)
        write_text_atomic(self.path, text)
        return self.path

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
