"""Decoded images cached on disk, so the data loader only slices memory-mapped uint8 arrays.

A cache is three files named by a key over everything that shapes its content (file list with
sizes and times, crop boxes, load size, options): ``<stem>.pixels.npy`` (all images, flattened
and concatenated), ``<stem>.meta.json`` (what it holds, and which files could not be decoded)
and ``<stem>.index.npy`` (per image: offset, height, width, and the ``left, top, right, bottom`` of
the original image that was stored, so boxes and keypoints can follow; height 0 marks an
undecodable one).
Each is written to a temporary file and moved into place, the index last, so a cache is either
complete or absent, and two processes building one at once both end up with a whole one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from ganstack.atomic import atomic_write, write_bytes_atomic, write_text_atomic
from ganstack.errors import DataError
from ganstack_defaults.data.transforms import Box, prepare, region, scaled_size

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: the index records each image's stored region
# What Pillow raises for files it cannot decode (truncated, not an image, absurdly large).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def cache_key(payload: Any) -> str:
    """A stable hex digest of JSON-able ``payload``."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# What a failed cache write advises: the cache lives in the working folder.
CACHE_FIX = "the decoded-image cache is .ganstack-cache in the working folder; run ganstack from a folder on a " \
    "drive with room that you can write to"


def save_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` to ``path`` atomically."""
    write_bytes_atomic(path, lambda fh: np.save(fh, array), fix=CACHE_FIX)


@attrs.frozen
class ImageFile:
    """An image to decode, and the box to crop from it first (``None``: the whole image)."""

    path: Path
    box: Box | None = None

    def identity(self) -> list[Any]:
        stat = self.path.stat()
        return [str(self.path), stat.st_size, stat.st_mtime_ns, self.box]


class ImageStore:
    """The decodable images of a built cache, in order; pickles cheaply (workers re-open the map).

    ``usable`` holds their positions in the list the cache was built from, ``skipped`` says why
    each of the others could not be decoded; ``regions[i]`` is the ``(left, top, right, bottom)`` of
    the original image that image ``i`` shows, in the original's pixels, and ``sizes[i]`` its stored
    ``(width, height)``.
    """

    def __init__(self, stem: Path) -> None:
        self.stem = stem
        index = np.load(f"{stem}.index.npy")
        self.usable = np.flatnonzero(index[:, 1] > 0)
        self._index = index[self.usable]
        self.regions = self._index[:, 3:7].astype(np.float64)
        self.sizes = self._index[:, [2, 1]].astype(np.float64)  # (width, height) as stored
        self.skipped: list[str] = list(json.loads(Path(f"{stem}.meta.json").read_text())["undecodable"].values())
        self._pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.load(f"{self.stem}.pixels.npy", mmap_mode="r")
        offset, height, width = (int(v) for v in self._index[i, :3])
        return np.asarray(self._pixels[offset:offset + height * width * 3]).reshape(height, width, 3)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}


def _open_size(image: ImageFile, shorter: int) -> tuple[int, int, int, int, int, int] | str:
    """Stored ``(width, height)`` and the stored region ``(left, top, right, bottom)`` of the original,
    read from the header; or why the file cannot be read."""
    try:
        with Image.open(image.path) as im:
            left, top, right, bottom = region(im.width, im.height, image.box)
    except DECODE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return (*scaled_size(right - left, bottom - top, shorter), left, top, right, bottom)


def _decode_into(out: np.ndarray, image: ImageFile, shorter: int, shape: tuple[int, int]) -> str | None:
    try:
        with Image.open(image.path) as im:
            pixels = prepare(im, image.box, shorter)
    except DECODE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    if pixels.shape[:2] != shape:  # the header lied about the size
        return f"decoded size {pixels.shape[1]}x{pixels.shape[0]} differs from its header's"
    out[:] = pixels.reshape(-1)
    return None


def _build(stem: Path, images: Sequence[ImageFile], shorter: int, description: dict[str, Any]) -> None:
    workers = min(8, os.cpu_count() or 1)
    log.info("decoding %d images into the cache %s (once)", len(images), stem)
    with ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(lambda im: _open_size(im, shorter), images))
        reasons = {i: s for i, s in enumerate(sizes) if isinstance(s, str)}
        index = np.zeros((len(images), 7), dtype=np.int64)
        offset = 0
        for i, size in enumerate(sizes):
            if not isinstance(size, str):
                index[i] = offset, size[1], size[0], *size[2:]
                offset += size[0] * size[1] * 3

        def fill(tmp: Path) -> None:
            pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(offset, 1),))
            jobs = [(i, pool.submit(_decode_into, pixels[o:o + h * w * 3], images[i], shorter, (h, w)))
                    for i, (o, h, w) in enumerate(index[:, :3]) if h]
            for i, job in jobs:
                if (reason := job.result()) is not None:
                    reasons[i] = reason
            pixels.flush()
            del pixels

        atomic_write(Path(f"{stem}.pixels.npy"), fill, fix=CACHE_FIX)
    index[list(reasons), 1:] = 0
    meta = {**description, "undecodable": {str(i): f"{images[i].path}: {r}" for i, r in sorted(reasons.items())}}
    write_text_atomic(Path(f"{stem}.meta.json"), json.dumps(meta, indent=1), fix=CACHE_FIX)
    save_npy(Path(f"{stem}.index.npy"), index)


def cached_images(cache_dir: Path, name: str, images: Sequence[ImageFile], shorter: int, *,
                  skip_corrupt: bool) -> ImageStore:
    """The decoded ``images`` (built on first use), without those that cannot be decoded.

    Undecodable files raise a DataError naming them, unless ``skip_corrupt``; then they are
    left out and logged.
    """
    description = {"name": name, "shorter_side": shorter, "format": FORMAT_VERSION}
    key = cache_key({**description, "files": [im.identity() for im in images]})
    stem = cache_dir / f"{name}-{shorter}-{key[:20]}"
    if not Path(f"{stem}.index.npy").exists():
        _build(stem, images, shorter, description)
    store = ImageStore(stem)
    if store.skipped and not skip_corrupt:
        first = int(np.setdiff1d(np.arange(len(images)), store.usable)[0])
        raise DataError(
            f"{len(store.skipped)} image(s) cannot be decoded, the first: {store.skipped[0]}",
            file=str(images[first].path),
            fix="replace or delete the file(s), or set the dataset option `skip_corrupt: true` to leave "
            f"them out (all are listed in {stem}.meta.json)",
        )
    if store.skipped:
        log.warning("left out %d undecodable image(s), listed in %s.meta.json", len(store.skipped), stem)
    return store


class NpyImages:
    """The images of an ``[N, H, W, 3]`` uint8 .npy file, memory-mapped on first use in each process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._array: np.ndarray | None = np.load(path, mmap_mode="r")

    def _images(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self._images())

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self._images()[i])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}
