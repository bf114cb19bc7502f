"""``captioned-folder``: the documented way to train on your own images and captions.

Captions come from ``<root>/captions.jsonl`` (option ``captions``), one JSON object a line::

    {"image": "rel/path.jpg", "captions": ["a caption", "another"], "class": "optional",
     "box": [0.1, 0.2, 0.8, 0.9]}

or, when that default file is absent, from a ``.txt`` beside each image (one caption a line).
Image paths are relative to ``root``. Classes (ints, or names numbered in sorted order over the
whole folder) choose the mismatched images; without them any other image is used. ``test`` holds
``test_fraction`` of the images, picked by a hash of ``seed`` and each image's path, so the split
stays put when images are added. Images go through the StackGAN pipeline (shorter side to
``r*76/64``, random crop, flip). ``box`` (optional): where the subject is, ``[x0, y0, x1, y1]`` in
fractions of the original image, origin top left; when any image has one, every example has the
``box`` field, following the image's crop and flip, and an image without one has the whole image.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ganstack.errors import DataError
from ganstack.interfaces import BOX, DataContext
from ganstack.reading import read_text
from ganstack.recipe.schema import seed_range
from ganstack_defaults.data.cache import ImageFile, ImageStore, cache_key, cached_images
from ganstack_defaults.data.dataset import CaptionImageDataset
from ganstack_defaults.data.locations import Locations, to_stored
from ganstack_defaults.data.paths import DOCS, non_empty, path_problem, resolve_root
from ganstack_defaults.data.transforms import load_size

DEFAULT_CAPTIONS = "captions.jsonl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "test")


@attrs.define(frozen=True, kw_only=True)
class CaptionedFolderOptions:
    """Options of ``captioned-folder``.

    ``root``: the folder of images (absolute, or relative to the recipe's folder, then to the
    working folder); ``captions``: JSON-lines file under ``root`` listing each image and its
    captions; when the default ``captions.jsonl`` is absent, a ``.txt`` beside each image is
    read instead; ``test_fraction``: share of the images held out as the ``test`` split, picked by a
    hash of ``seed`` and each image's path, so file order does not matter; ``seed``: chooses the
    test images; independent of the run's seed; ``split``: ``train`` or ``test`` reads that split
    for every use; ``null`` (default) reads the split each use asks for; ``flip``: mirror half the
    training crops at random, as StackGAN does (turn off when captions say left or right);
    ``skip_corrupt``: leave out images that cannot be decoded (logged, and listed in the cache's
    ``.meta.json``) instead of stopping with an error that names the first
    """

    root: str = attrs.field(validator=non_empty)
    captions: str = attrs.field(default=DEFAULT_CAPTIONS, validator=non_empty)
    test_fraction: float = attrs.field(default=0.1, validator=[attrs.validators.ge(0.0),
                                                               attrs.validators.lt(1.0)])
    seed: int = attrs.field(default=0, validator=seed_range)  # chooses the test images; independent of the run's seed
    split: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.in_(SPLITS)))
    flip: bool = True
    skip_corrupt: bool = False


@attrs.frozen
class Record:
    """One image of the folder (``key``: its path as written, relative to root), captions, class."""

    image: Path
    key: str
    captions: list[str]
    label: int | str | None = None
    box: tuple[float, float, float, float] | None = None  # fractions of the original image


def _bad_line(path: Path, number: int, problem: str, fix: str | None = None) -> DataError:
    return DataError(f"line {number}: {problem}", file=str(path),
                     fix=fix or 'write one object a line: {"image": "rel/path.jpg", "captions": ["..."], '
                     f'"class": optional}}; see {DOCS}')


def _parse_line(path: Path, number: int, line: str, root: Path) -> Record:
    try:
        entry: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _bad_line(path, number, f"not JSON ({exc.msg})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        raise _bad_line(path, number, "expected an object with an 'image' path")
    captions = entry.get("captions")
    captions = [captions] if isinstance(captions, str) else captions
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise _bad_line(path, number, "'captions' must be a list of strings")
    captions = [c.strip() for c in captions if c.strip()]
    if not captions:
        raise _bad_line(path, number, f"no captions for '{entry['image']}'")
    label = entry.get("class")
    if label is not None and (isinstance(label, bool) or not isinstance(label, (int, str))):
        raise _bad_line(path, number, "'class' must be an integer or a name")
    problem = path_problem(entry["image"])
    if problem:
        raise _bad_line(path, number, f"the image path {entry['image']!r} {problem}; "
                        "image paths must be relative to `root` and stay inside it (no leading '/', no '..')",
                        fix="move the image under `root` and give its path from there, or make `root` a folder "
                        f"that holds every image (a symbolic link inside `root` also works); see {DOCS}")
    image = root / entry["image"]
    if not image.is_file():
        raise DataError(f"line {number} names a missing image", file=str(image),
                        fix=f"fix the path in {path.name} (paths are relative to `root`) or add the image")
    return Record(image, entry["image"], captions, label, _box(path, number, entry.get("box")))


def _box(path: Path, number: int, value: object) -> tuple[float, float, float, float] | None:
    """A line's ``box``: four numbers, fractions of the image with ``0 <= x0 < x1 <= 1`` (and so for y)."""
    if value is None:
        return None
    numbers = isinstance(value, list) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not numbers or not (0 <= value[0] < value[2] <= 1 and 0 <= value[1] < value[3] <= 1):  # type: ignore[index]
        raise _bad_line(path, number, f"'box' is {json.dumps(value)}; it must be [x0, y0, x1, y1], fractions of "
                        "the image (origin top left) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1",
                        fix="give the box in fractions of the image's width and height (pixels divided by the "
                        f"side), or leave `box` out for the whole image; see {DOCS}")
    x0, y0, x1, y1 = (float(v) for v in value)  # type: ignore[union-attr]
    return x0, y0, x1, y1


def _read_jsonl(path: Path, root: Path) -> list[Record]:
    lines = read_text(path, what="captions file", error=DataError).splitlines()
    return [_parse_line(path, n, line, root) for n, line in enumerate(lines, 1) if line.strip()]


def _read_sidecars(root: Path) -> list[Record]:
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    records = []
    for image in images:
        text = image.with_suffix(".txt")
        if not text.is_file():
            raise DataError(f"no captions for {image.name}", file=str(text),
                            fix=f"write one caption a line in that file, or list images and captions in "
                            f"{DEFAULT_CAPTIONS} ({DOCS})")
        captions = [s.strip() for s in read_text(text, what="caption file", error=DataError).splitlines()]
        if not any(captions):
            raise DataError("caption file is empty", file=str(text), fix="write one caption a line")
        records.append(Record(image, image.relative_to(root).as_posix(), [c for c in captions if c]))
    return records


def read_records(root: Path, captions: str) -> list[Record]:
    """Every image of the folder with its captions, in file order."""
    path = root / captions
    if path.is_file():
        records = _read_jsonl(path, root)
    elif captions == DEFAULT_CAPTIONS:
        records = _read_sidecars(root)
    else:
        raise DataError("captions file not found", file=str(path),
                        fix=f"set `captions` to a JSON-lines file under `root`, or leave it out to read a .txt "
                        f"beside each image ({DOCS})")
    if not records:
        raise DataError(f"no captioned images (looked for {path.name}, then images with a .txt beside them)",
                        file=str(root), fix=f"see {DOCS} for the layout")
    return records


def class_ids(records: list[Record]) -> np.ndarray:
    """Integer labels as they are, names numbered in sorted order, ``-1`` where unlabelled."""
    labels = [r.label for r in records]
    if all(isinstance(label, int) for label in labels if label is not None):
        return np.array([-1 if label is None else label for label in labels], dtype=np.int64)
    names = sorted({str(label) for label in labels if label is not None})
    return np.array([-1 if label is None else names.index(str(label)) for label in labels], dtype=np.int64)


def held_out_positions(records: list[Record], fraction: float, seed: int) -> set[int]:
    """Positions of the test images: the lowest hashes of ``(seed, key)``, at least one of each split."""
    count = round(len(records) * fraction)
    if fraction > 0 and len(records) > 1:
        count = min(max(count, 1), len(records) - 1)
    ranked = sorted(range(len(records)),
                    key=lambda i: hashlib.sha256(f"{seed}/{records[i].key}".encode()).hexdigest())
    return set(ranked[:count])


def _locations(records: list[Record], store: ImageStore) -> Locations:
    """Each image's box (the whole image where it has none) in stored-image pixels."""
    fractions = np.array([r.box or (0.0, 0.0, 1.0, 1.0) for r in records]).reshape(-1, 2, 2)
    origin, side = store.regions[:, None, :2], store.regions[:, None, 2:] - store.regions[:, None, :2]
    return Locations(boxes=to_stored(origin + fractions * side, store.regions, store.sizes).reshape(-1, 4))


def build_captioned_folder(options: CaptionedFolderOptions, ctx: DataContext) -> CaptionImageDataset:
    """The ``train`` or ``test`` part of a folder of captioned images."""
    name = "captioned-folder"
    split = options.split or ctx.split
    if split not in SPLITS:
        raise DataError(f"{name} has no '{split}' split", fix=f"use one of: {', '.join(SPLITS)}")
    root = resolve_root(options.root, ctx, option="root", dataset=name)
    records = read_records(root, options.captions)
    ids = class_ids(records)
    held_out = held_out_positions(records, options.test_fraction, options.seed)
    chosen = [i for i in range(len(records)) if (i in held_out) == (split == "test")]
    if not chosen:
        raise DataError(f"the '{split}' split is empty ({len(records)} images, test_fraction "
                        f"{options.test_fraction})", file=str(root),
                        fix="add images, or change `test_fraction`")
    store = cached_images(ctx.cache_dir, f"{name}-{split}", [ImageFile(records[i].image) for i in chosen],
                          load_size(max(ctx.resolutions)), skip_corrupt=options.skip_corrupt)
    keep = [chosen[i] for i in store.usable]
    return CaptionImageDataset(
        locations=_locations([records[i] for i in keep], store) if any(r.box for r in records) else None,
        missing_fields={} if any(r.box for r in records) else {BOX: f"no image in {options.captions} has a 'box'"},
        images=store, captions=[records[i].captions for i in keep], class_ids=ids[keep],
        resolutions=ctx.resolutions, train=split == "train", seed=ctx.seed, want_wrong=ctx.want_wrong,
        flip=options.flip, fingerprint=cache_key([name, split, store.stem.name, attrs.asdict(options)]),
        skipped=store.skipped,
    )
