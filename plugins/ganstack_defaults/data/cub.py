"""CUB-200-2011's tables, read from the folder its archive unpacks as (``CUB_200_2011/``).

``images.txt`` (image id, path under ``images/``), ``bounding_boxes.txt`` (image id, x, y, width,
height in pixels) and ``parts/part_locs.txt`` (image id, part id 1..15, x, y, visible): whitespace
separated, one row a line. Images are keyed like StackGAN's ``filenames.pickle``: the path without
``.jpg``. Every bad row stops with the file, its line and a fix.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ganstack.errors import DataError
from ganstack.reading import read_text
from ganstack_defaults.data.locations import CUB_PARTS
from ganstack_defaults.data.paths import DOCS
from ganstack_defaults.data.transforms import Box

IMAGES = "images.txt"
BOXES = "bounding_boxes.txt"
PART_LOCS = "parts/part_locs.txt"
RESTORE = "restore the file from the CUB_200_2011 download"


def _rows(path: Path, columns: int, why: str) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of each non-blank line of a table that must exist (``why`` says why)."""
    if not path.is_file():
        raise DataError(f"missing CUB table ({why})", file=str(path),
                        fix=f"unpack CUB_200_2011 (its archive holds this file; {DOCS} says where to get it) "
                        "where `image_dir` points")
    rows = []
    for number, line in enumerate(read_text(path, what="CUB table", error=DataError).splitlines(), 1):
        if line.strip():
            fields = line.split()
            if len(fields) != columns:
                raise DataError(f"line {number}: expected {columns} fields, found {len(fields)}", file=str(path),
                                fix=RESTORE)
            rows.append((number, fields))
    return rows


def _numbers(path: Path, number: int, fields: list[str]) -> list[float]:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = [math.nan]
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"line {number}: expected numbers, found {' '.join(fields)!r}", file=str(path), fix=RESTORE)
    return values


def image_ids(folder: Path, why: str) -> dict[str, str]:
    """``image id -> key`` from ``images.txt``."""
    return {fields[0]: str(Path(fields[1]).with_suffix("")) for _n, fields in _rows(folder / IMAGES, 2, why)}


def read_boxes(folder: Path, ids: dict[str, str], why: str) -> dict[str, Box]:
    """``key -> (x, y, width, height)`` from ``bounding_boxes.txt``; widths and heights must be positive."""
    path = folder / BOXES
    boxes = {}
    for number, fields in _rows(path, 5, why):
        x, y, w, h = _numbers(path, number, fields[1:])
        if w <= 0 or h <= 0:
            raise DataError(f"line {number}: a box of width {w:g} and height {h:g} (both must be positive)",
                            file=str(path), fix=RESTORE)
        if fields[0] in ids:
            boxes[ids[fields[0]]] = (x, y, w, h)
    return boxes


def read_parts(path: Path, ids: dict[str, str]) -> dict[str, np.ndarray]:
    """``key -> [15, 3]`` (x, y, visible) in original pixels from ``part_locs.txt``; parts an image has
    no row for are invisible. Image ids must be in ``images.txt``; visible is 0 or 1."""
    parts: dict[str, np.ndarray] = {}
    count = len(CUB_PARTS)
    for number, fields in _rows(path, 5, "part locations"):
        image, part = fields[0], fields[1]
        if image not in ids:
            raise DataError(f"line {number}: image id {image} is not in {IMAGES}", file=str(path),
                            fix=f"use the {IMAGES} and part_locs.txt of one CUB_200_2011 download")
        if not part.isdigit() or not 1 <= int(part) <= count:
            raise DataError(f"line {number}: part id {part!r}; CUB's parts are numbered 1 to {count}",
                            file=str(path), fix=RESTORE)
        x, y, visible = _numbers(path, number, fields[2:])
        if visible not in (0.0, 1.0):
            raise DataError(f"line {number}: visible is {fields[4]!r}; it must be 0 or 1", file=str(path),
                            fix=RESTORE)
        table = parts.setdefault(ids[image], np.zeros((count, 3)))
        table[int(part) - 1] = (x, y, visible) if visible else (0.0, 0.0, 0.0)
    return parts
