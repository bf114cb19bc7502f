"""StackGAN's preprocessed data (CUB birds, Oxford-102 flowers, COCO), read as users have it on disk.

Layout, relative to ``root`` (``split`` is ``train`` or ``test``)::

    <split>/filenames.pickle                list of keys, e.g. 002.Laysan_Albatross/Laysan_Albatross_0002_1027
    <split>/char-CNN-RNN-embeddings.pickle  float (N, captions, dim); option ``embeddings_file``
    <split>/class_info.pickle               class id per example (optional)
    <text_dir>/<key>.txt                    one caption per line; line j pairs with embedding j
                                            (default text/, else StackGAN's download name text_c10/)
    <image_dir>[/images]/<key>.jpg          the image
    <image_dir>/images.txt, bounding_boxes.txt   CUB's boxes (x, y, w, h), read when ``crop_boxes``
                                            (or, with it off, when both are there): the ``box`` field
    <image_dir>/parts/part_locs.txt         CUB's 15 part locations, read when there: ``keypoints``

Text files and images not at their key's path are also found by file name anywhere below their
folder (Oxford-102's captions unpack as ``text_c10/class_*/image_*.txt``). Without
``class_info.pickle``, a key's folder is its class (CUB's ``002.Laysan_Albatross``); keys without
a folder have class ``-1``. COCO is assumed to follow StackGAN's COCO data: the same per-split
pickles (5 captions each), images found by name under ``root`` (``train2014/``, ``val2014/``),
no boxes; its classes are ``-1`` unless ``class_info.pickle`` is there.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from ganstack.errors import DataError
from ganstack.interfaces import BOX, KEYPOINTS, DataContext
from ganstack.reading import read_text
from ganstack.safe_pickle import load_pickle
from ganstack_defaults.data import cub
from ganstack_defaults.data.cache import ImageFile, ImageStore, cache_key, cached_images
from ganstack_defaults.data.dataset import CaptionImageDataset
from ganstack_defaults.data.locations import CUB_PARTS, Locations, mirror_order, to_stored
from ganstack_defaults.data.paths import DOCS, FileFinder, non_empty, path_problem, resolve_root
from ganstack_defaults.data.transforms import Box, load_size

EMBEDDINGS_FILE = "char-CNN-RNN-embeddings.pickle"
DOWNLOAD_TEXT_DIR = "text_c10"  # what StackGAN's birds and flowers downloads call the caption folder


@attrs.define(frozen=True, kw_only=True)
class StackGANBirdsOptions:
    """Options of ``stackgan-birds``; the defaults are the official code's.

    ``root``: the folder holding ``train/`` and ``test/`` (absolute, or relative to the recipe's
    folder, then to the working folder); ``split``: ``train`` or ``test`` reads that split for every
    use; ``null`` (default) reads the split each use asks for (training ``train``, a metric its own
    ``split``); ``embeddings_per_sample``: caption embeddings averaged per training example, drawn
    at random without repeats (1: the PyTorch port; 4: the TensorFlow code); other splits average
    the first ones; ``embeddings_file``: the embeddings pickle in each split folder, an array
    (examples, captions, dim); ``null`` reads none, for a text encoder that reads the captions
    instead; ``crop_boxes``: crop each bird to a square of side 1.5 times the larger side of its CUB
    bounding box, centred on the box and clamped to the image, as StackGAN does (reads
    ``images.txt`` and ``bounding_boxes.txt`` in ``image_dir``; each example then has its ``box``
    field, which it also has with this off where both files are there); ``image_dir``: folder under
    ``root`` where CUB-200-2011 is unpacked: images at ``images/<key>.jpg``, with the box tables
    beside ``images/``; ``text_dir``: folder under ``root`` of the ``<key>.txt`` caption files, one
    caption a line, line j pairing with embedding j; files elsewhere below it are found by name;
    left at ``text`` and with no such folder, ``text_c10`` (the name in StackGAN's downloads) is read;
    ``flip``: mirror half the training crops at random, as StackGAN does (turn off when captions say
    left or right); ``skip_corrupt``: leave out images that cannot be decoded (logged, and listed in
    the cache's ``.meta.json``) instead of stopping with an error that names the first;
    ``part_locs``: CUB's part locations under ``image_dir`` (image id, part id 1..15, x, y, visible),
    read when the file is there: each example then has the ``keypoints`` field (CUB's 15 parts in its
    order); a path you set must exist; ``null`` reads none; ``swap_sides_on_flip``: in a mirrored
    training crop, each left part (eye, leg, wing) takes its right part's place and back, so part 7
    is still the left eye of the bird the picture shows; ``false`` keeps the part numbers, as GAWWN's
    code does
    """

    root: str = attrs.field(default="Data/birds", validator=non_empty)
    split: str | None = None  # None: the split the caller asks for (train or test)
    embeddings_per_sample: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    embeddings_file: str | None = EMBEDDINGS_FILE  # None: no embeddings, captions only
    crop_boxes: bool = True
    image_dir: str = "CUB_200_2011"
    text_dir: str = attrs.field(default="text", validator=non_empty)
    flip: bool = True
    skip_corrupt: bool = False
    part_locs: str | None = cub.PART_LOCS
    swap_sides_on_flip: bool = True


@attrs.define(frozen=True, kw_only=True)
class StackGANFlowersOptions(StackGANBirdsOptions):
    """Options of ``stackgan-flowers``: Oxford-102 is not cropped (other options as ``stackgan-birds``).

    ``crop_boxes``: off, as Oxford-102 has no bounding boxes (on, it reads CUB-style ``images.txt``
    and ``bounding_boxes.txt`` in ``image_dir``); ``image_dir``: folder under ``root`` holding the
    Oxford-102 images (its archive unpacks as ``jpg/``); images are found by file name;
    ``part_locs``: none, as Oxford-102 has no part locations (a CUB-style ``part_locs.txt`` under
    ``image_dir`` named here gives ``keypoints``)
    """

    root: str = attrs.field(default="Data/flowers", validator=non_empty)
    crop_boxes: bool = False
    image_dir: str = "jpg"
    part_locs: str | None = None


@attrs.define(frozen=True, kw_only=True)
class StackGANCocoOptions(StackGANBirdsOptions):
    """Options of ``stackgan-coco``: images found by file name anywhere under ``root`` (other options
    as ``stackgan-birds``).

    ``root``: the folder holding ``train/`` and ``test/`` and the COCO images (absolute, or relative
    to the recipe's folder, then to the working folder); ``crop_boxes``: off, as COCO has no
    CUB-style box tables; ``image_dir``: folder under ``root`` searched for each ``<name>.jpg``;
    empty (default) searches ``root`` itself, so ``train2014/`` and ``val2014/`` are both found;
    ``part_locs``: none, as COCO has no CUB-style part locations
    """

    root: str = attrs.field(default="Data/coco", validator=non_empty)
    crop_boxes: bool = False
    image_dir: str = ""
    part_locs: str | None = None


def _missing(path: Path, dataset: str, what: str) -> DataError:
    return DataError(
        f"missing {what}: StackGAN's {dataset} layout is incomplete",
        file=str(path),
        fix=f"download StackGAN's preprocessed {dataset} data ({DOCS} says where) and point `root` at "
        "the folder holding train/ and test/, or set the option that names this file",
    )


def _pickle(path: Path, dataset: str, what: str) -> object:
    if not path.is_file():
        raise _missing(path, dataset, what)
    return load_pickle(path)


def _describe(value: object) -> str:
    """What a pickle held, for messages: its type, and for a sequence the type of its first item."""
    kind = type(value).__name__
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, (list, tuple)) and value:
        return f"a {kind} of {type(value[0]).__name__}"
    return f"a {kind}"


def _keys(path: Path, dataset: str) -> list[str]:
    keys = _pickle(path, dataset, "the list of examples")
    if isinstance(keys, np.ndarray):
        keys = keys.ravel().tolist()
    if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, (str, bytes)) for k in keys):
        raise DataError(f"expected a non-empty list of file keys (strings), found {_describe(keys)}",
                        file=str(path), fix=f"use StackGAN's filenames.pickle of this split; see {DOCS}")
    names = [k.decode("utf-8", "replace") if isinstance(k, bytes) else k for k in keys]
    for number, key in enumerate(names, 1):
        problem = path_problem(key)
        if problem:
            raise DataError(f"key {number} ({key!r}) {problem} (keys are relative paths such as "
                            "002.Laysan_Albatross/Laysan_Albatross_0002_1027)",
                            file=str(path), fix="use StackGAN's filenames.pickle of this split")
    return names


def _embeddings(path: Path, dataset: str, count: int) -> np.ndarray:
    raw = _pickle(path, dataset, "the caption embeddings")
    try:
        array = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim not in (2, 3):
        raise DataError(f"expected a numeric array of caption embeddings ({count}, captions, dim), found "
                        f"{_describe(raw)}", file=str(path),
                        fix="use StackGAN's char-CNN-RNN-embeddings.pickle of this split, or set "
                        "`embeddings_file: null` to read the captions with a text encoder instead")
    if array.ndim == 2:  # one embedding per example
        array = array[:, None, :]
    if len(array) != count:
        raise DataError(f"expected embeddings of shape ({count}, captions, dim), found {array.shape}",
                        file=str(path), fix="use the embeddings file of the same split as filenames.pickle")
    if not np.isfinite(array).all():
        raise DataError("the caption embeddings hold NaN or infinite values", file=str(path),
                        fix="download the embeddings again; training on them would turn every loss into NaN")
    return array


def _class_ids(split_dir: Path, keys: list[str]) -> np.ndarray:
    path = split_dir / "class_info.pickle"
    if path.is_file():
        raw = load_pickle(path)
        ids = np.asarray(raw) if isinstance(raw, (list, tuple, np.ndarray)) else None
        if ids is not None and ids.dtype.kind == "f" and np.isfinite(ids).all() and (ids == np.round(ids)).all():
            ids = ids.astype(np.int64)
        if ids is None or ids.dtype.kind not in "iu":
            raise DataError(f"expected a list of integer class ids, one per example, found {_describe(raw)}",
                            file=str(path), fix="use StackGAN's class_info.pickle of this split, or delete it "
                            "(each key's folder is then its class)")
        ids = ids.astype(np.int64).ravel()
        if len(ids) != len(keys):
            raise DataError(f"{len(ids)} class ids for {len(keys)} examples", file=str(path),
                            fix="use the class_info.pickle of the same split, or delete it")
        return ids
    folders = [Path(k).parent.name for k in keys]
    names = sorted({f for f in folders if f})
    return np.array([names.index(f) if f else -1 for f in folders], dtype=np.int64)


def _text_folder(root: Path, options: StackGANBirdsOptions, dataset: str) -> Path:
    """The caption folder: ``text_dir``, or, when that is the default and absent, the download's name."""
    folder = root / options.text_dir
    if folder.is_dir():
        return folder
    is_default = options.text_dir == attrs.fields(type(options)).text_dir.default
    if is_default and (root / DOWNLOAD_TEXT_DIR).is_dir():
        return root / DOWNLOAD_TEXT_DIR
    also = f" (nor '{DOWNLOAD_TEXT_DIR}' beside it)" if is_default else ""
    raise DataError(
        f"no caption folder '{options.text_dir}' under the {dataset} root{also}", file=str(folder),
        fix=f"set `text_dir` to the folder under `root` holding the <key>.txt caption files; {DOCS} says "
        "where to get them")


def _captions(text_dir: Path, keys: list[str], dataset: str) -> list[list[str]]:
    finder = FileFinder(text_dir, ".txt")
    captions = []
    for key in keys:
        path = finder.find(key)
        if path is None:
            raise DataError(
                f"no caption file for '{key}'", file=str(finder.expected(key)),
                fix=f"put the {dataset} text files under '{text_dir}' (option `text_dir`); {DOCS} says "
                "where to get them")
        lines = [s.strip() for s in read_text(path, what="caption file", error=DataError).splitlines()]
        if not any(lines):
            raise DataError("caption file is empty", file=str(path), fix="restore the file from the download")
        captions.append([s for s in lines if s])
    return captions


@attrs.frozen
class _Tables:
    """What CUB's tables give a split: boxes and part locations by key (``None``: not offered), and why
    a field is not offered."""

    boxes: dict[str, Box] | None
    parts: dict[str, np.ndarray] | None
    missing: dict[str, str]


def _tables(folder: Path, keys: list[str], options: StackGANBirdsOptions) -> _Tables:
    """CUB's boxes (required by ``crop_boxes``; with it off, read when both tables are there) and part
    locations (read when ``part_locs`` is there; required when set to another path)."""
    missing: dict[str, str] = {}
    has_tables = (folder / cub.IMAGES).is_file() and (folder / cub.BOXES).is_file()
    want_boxes = options.crop_boxes or has_tables
    parts_path = folder / options.part_locs if options.part_locs else None
    default_parts = options.part_locs == attrs.fields(type(options)).part_locs.default
    want_parts = parts_path is not None and (parts_path.is_file() or not default_parts)
    ids = cub.image_ids(folder, "crop_boxes is on" if options.crop_boxes else "to match part locations to images") \
        if want_boxes or want_parts else {}
    boxes = cub.read_boxes(folder, ids, "crop_boxes is on") if want_boxes else None
    if boxes is not None:
        lacking = [k for k in keys if k not in boxes]
        if lacking and options.crop_boxes:
            raise DataError(f"no bounding box for '{lacking[0]}'", file=str(folder / cub.IMAGES),
                            fix="use CUB_200_2011's own images.txt and bounding_boxes.txt, or set `crop_boxes: false`")
        if lacking:
            missing[BOX] = f"'{lacking[0]}' has no box in {folder / cub.BOXES}"
            boxes = None
    else:
        missing[BOX] = f"no {cub.IMAGES} and {cub.BOXES} in {folder}"
    parts = cub.read_parts(parts_path, ids) if want_parts and parts_path is not None else None
    if parts is not None:
        lacking = [k for k in keys if k not in parts]
        if lacking:
            raise DataError(f"no part locations for '{lacking[0]}'", file=str(parts_path),
                            fix="use the images.txt and part_locs.txt of one CUB_200_2011 download, or set "
                            "`part_locs: null` to read no keypoints")
    else:
        missing[KEYPOINTS] = (f"no {parts_path} (option `part_locs`)" if parts_path is not None
                                else "`part_locs` is null")
    return _Tables(boxes, parts, missing)


def _image_files(root: Path, keys: list[str], options: StackGANBirdsOptions, dataset: str,
                 boxes: dict[str, Box] | None) -> list[ImageFile]:
    folder = root / options.image_dir
    if (folder / "images").is_dir():
        folder = folder / "images"
    finder = FileFinder(folder, ".jpg")
    files = []
    for key in keys:
        path = finder.find(key)
        if path is None:
            raise DataError(f"no image for '{key}'", file=str(finder.expected(key)),
                            fix=f"set `image_dir` to the folder holding the {dataset} images; {DOCS} says "
                            "where to get them")
        files.append(ImageFile(path, boxes[key] if options.crop_boxes and boxes is not None else None))
    return files


def _locations(tables: _Tables, keys: list[str], store: ImageStore, options: StackGANBirdsOptions) -> Locations:
    """The kept examples' boxes and keypoints in stored-image pixels."""
    boxes = keypoints = None
    if tables.boxes is not None:
        corners = np.array([[(x, y), (x + w, y + h)] for x, y, w, h in (tables.boxes[k] for k in keys)])
        boxes = to_stored(corners, store.regions, store.sizes).reshape(len(keys), 4)
    if tables.parts is not None:
        keypoints = np.stack([tables.parts[k] for k in keys])
        keypoints[..., :2] = to_stored(keypoints[..., :2], store.regions, store.sizes)
    return Locations(boxes, keypoints, mirror_order(CUB_PARTS) if options.swap_sides_on_flip else None)


def build_stackgan(dataset: str, options: StackGANBirdsOptions, ctx: DataContext) -> CaptionImageDataset:
    """The ``dataset`` (e.g. ``stackgan-birds``) split ``options.split or ctx.split``."""
    root = resolve_root(options.root, ctx, option="root", dataset=dataset)
    split = options.split or ctx.split
    split_dir = root / split
    if not split_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"no '{split}' split (folders there: {', '.join(present) or 'none'})",
                        file=str(split_dir), fix=f"use a split that exists, or see {DOCS} for the layout")
    keys = _keys(split_dir / "filenames.pickle", dataset)
    embeddings = (_embeddings(split_dir / options.embeddings_file, dataset, len(keys))
                  if options.embeddings_file else None)
    class_ids = _class_ids(split_dir, keys)
    captions = _captions(_text_folder(root, options, dataset), keys, dataset)
    tables = _tables(root / options.image_dir, keys, options)
    files = _image_files(root, keys, options, dataset, tables.boxes)
    store = cached_images(ctx.cache_dir, f"{dataset}-{split}", files, load_size(max(ctx.resolutions)),
                          skip_corrupt=options.skip_corrupt)
    keep = store.usable
    if embeddings is not None and len(keep) < len(keys):
        embeddings = embeddings[keep]
    return CaptionImageDataset(
        images=store, captions=[captions[i] for i in keep], class_ids=class_ids[keep], embeddings=embeddings,
        resolutions=ctx.resolutions, train=split == "train", seed=ctx.seed, want_wrong=ctx.want_wrong,
        flip=options.flip, embeddings_per_sample=options.embeddings_per_sample,
        fingerprint=cache_key([dataset, split, store.stem.name, attrs.asdict(options)]), skipped=store.skipped,
        locations=_locations(tables, [keys[i] for i in keep], store, options), missing_fields=tables.missing,
    )


def read_split_text(root: Path, split: str, *, text_dir: str = "text", limit: int | None = None,
                    dataset: str = "CUB, Oxford-102 or COCO") -> tuple[list[str], list[list[str]], np.ndarray]:
    """A split's keys, each key's captions and their stored char-CNN-RNN embeddings, without the images,
    read as training reads them (``ganstack import char-cnn-rnn --verify`` compares the two).
    ``limit``: the first that many examples only."""
    split_dir = root / split
    keys = _keys(split_dir / "filenames.pickle", dataset)
    embeddings = _embeddings(split_dir / EMBEDDINGS_FILE, dataset, len(keys))
    if limit is not None:
        keys, embeddings = keys[:limit], embeddings[:limit]
    folder = _text_folder(root, StackGANBirdsOptions(root=str(root), text_dir=text_dir), dataset)
    return keys, _captions(folder, keys, dataset), embeddings
