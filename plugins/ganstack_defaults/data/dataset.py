"""The one ``CaptionDataset`` implementation behind every default dataset plugin.

A layout reader supplies stored images (each at least the largest stage resolution on its
shorter side), captions, class ids and optional embeddings; this class does the per-access part:
crop/flip, per-stage resizes, caption and embedding choice, and a mismatched ("wrong") image.

Randomness: a training access of example ``i`` draws its crop, flip, caption, embeddings and wrong
image from ``(seed, epoch, i)`` alone (the trainer sets the epoch with ``set_epoch`` before each
pass), never from a process's global generator: whichever data-loading worker serves it, and
whether the pass started at its beginning or was resumed in its middle, the example is the same.
Other splits are fixed: centre crop, no flip, the first caption (and the first
``embeddings_per_sample`` embeddings), and a wrong image drawn from ``(seed, index)``.
An example's ``box`` and ``keypoints`` (where the reader gives :class:`Locations`) go through the
very crop and flip its images do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ganstack.errors import DataError
from ganstack_defaults.data.locations import Locations
from ganstack_defaults.data.transforms import Crop, Resize, crop_stages, draw_crop, resize_square, to_tensor


class CaptionImageDataset(Dataset):
    """Map-style dataset of dicts as :class:`ganstack.interfaces.CaptionDataset` describes.

    ``images[i]`` is an ``[H, W, 3]`` uint8 array; ``captions[i]`` its captions, caption ``j``
    pairing with ``embeddings[i, j]``; ``class_ids[i]`` is ``-1`` when unknown. A training access
    averages ``embeddings_per_sample`` distinct random embeddings (1: the PyTorch port; 4: the
    TensorFlow code) and returns the caption of the first. ``locations`` (one entry per image, in
    stored-image pixels) adds the ``box`` / ``keypoints`` fields, declared in :attr:`fields`;
    ``missing_fields`` says, per field the layout could have given, why it does not (for messages).
    """

    def __init__(self, *, images: Sequence[np.ndarray], captions: Sequence[Sequence[str]],
                 class_ids: Sequence[int], resolutions: Sequence[int], train: bool, seed: int = 0,
                 want_wrong: bool = False, flip: bool = True, embeddings: np.ndarray | None = None,
                 embeddings_per_sample: int = 1, resize: Resize = resize_square,
                 fingerprint: str = "", skipped: Sequence[str] = (), locations: Locations | None = None,
                 missing_fields: dict[str, str] | None = None) -> None:
        if not len(images) == len(captions) == len(class_ids):
            raise ValueError("images, captions and class_ids differ in length")
        if embeddings is not None and len(embeddings) != len(images):
            raise ValueError("embeddings and images differ in length")
        if locations is not None and locations.fields and len(locations) != len(images):
            raise ValueError("locations and images differ in length")
        if not len(images):
            raise DataError("the dataset split has no usable examples",
                            fix="check the data folder and split, or see the skipped files in the cache's meta.json")
        if want_wrong and len(images) < 2:
            raise DataError(f"a mismatched ('wrong') image needs at least two examples; this split has "
                            f"{len(images)}", fix="add examples, or train without wrong images")
        self.images = images
        self._captions = [list(c) for c in captions]
        self.class_ids = np.asarray(class_ids, dtype=np.int64)
        self.resolutions = tuple(resolutions)
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.want_wrong = want_wrong
        self.flip = flip
        self.embeddings = embeddings
        self.embedding_dim: int | None = None if embeddings is None else int(embeddings.shape[-1])
        self.embeddings_per_sample = embeddings_per_sample
        self.resize = resize
        self.fingerprint = fingerprint  # identifies the data and options, for caches of derived data
        self.skipped = list(skipped)  # undecodable files left out
        self.locations = locations or Locations()
        self.fields: frozenset[str] = self.locations.fields  # conditioning fields every example has
        self.missing_fields = dict(missing_fields or {})
        self._by_class, self._class_span = self._class_order()

    def _class_order(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Examples sorted by class, and each example's ``(start, count)`` in that order.

        ``None`` when classes are unknown (or all alike): a wrong image is then any other example.
        """
        ids = self.class_ids
        if (ids < 0).any() or (ids == ids[0]).all():
            return None, None
        order = np.argsort(ids, kind="stable")
        classes, starts, counts = np.unique(ids[order], return_index=True, return_counts=True)
        where = np.searchsorted(classes, ids)
        return order, np.stack([starts[where], counts[where]], axis=1)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """The pass over the data that the next accesses belong to (training randomness depends on it)."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        seed = self.seed % 2**63
        if self.train:
            return np.random.default_rng((seed, self.epoch, index))
        return np.random.default_rng((seed, index))

    def _crop(self, pixels: np.ndarray, rng: np.random.Generator) -> Crop:
        height, width = pixels.shape[:2]
        return draw_crop(height, width, max(self.resolutions), rng if self.train else None, self.flip)

    def _stages(self, pixels: np.ndarray, crop: Crop) -> list[torch.Tensor]:
        return [to_tensor(s) for s in crop_stages(pixels, self.resolutions, crop, self.resize)]

    def _wrong_index(self, index: int, rng: np.random.Generator) -> int:
        if self._by_class is None or self._class_span is None:
            j = int(rng.integers(len(self) - 1))
            return j + (j >= index)
        start, count = (int(v) for v in self._class_span[index])
        j = int(rng.integers(len(self) - count))
        return int(self._by_class[j if j < start else j + count])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        rng = self._rng(index)
        captions = self._captions[index]
        choices = len(captions) if self.embeddings is None else min(len(captions), self.embeddings.shape[1])
        k = min(self.embeddings_per_sample, choices)
        chosen = rng.choice(choices, size=k, replace=False) if self.train else np.arange(k)
        pixels = self.images[index]
        crop = self._crop(pixels, rng)
        item: dict[str, Any] = {
            "images": self._stages(pixels, crop),
            "caption": captions[int(chosen[0])],
            "class_id": int(self.class_ids[index]),
            "index": index,
            **self.locations.place(index, crop),
        }
        if self.embeddings is not None:
            item["embedding"] = torch.from_numpy(
                np.asarray(self.embeddings[index, chosen], dtype=np.float32).mean(axis=0))
        if self.want_wrong:
            wrong = self.images[self._wrong_index(index, rng)]
            item["wrong_images"] = self._stages(wrong, self._crop(wrong, rng))
        return item

    def caption_item(self, index: int, caption: int) -> dict[str, Any]:
        """Example ``index`` with its caption number ``caption`` (modulo the count) and that caption's
        own embedding: what evaluation protocols scoring every caption read (``captions: all``)."""
        item = self[index]
        captions = self._captions[int(index)]
        choices = len(captions) if self.embeddings is None else min(len(captions), self.embeddings.shape[1])
        slot = int(caption) % choices
        item["caption"] = captions[slot]
        if self.embeddings is not None:
            item["embedding"] = torch.from_numpy(np.asarray(self.embeddings[int(index), slot], dtype=np.float32))
        return item

    def captions(self) -> list[str]:
        """Every caption of the split."""
        return [c for captions in self._captions for c in captions]

    def sample_captions(self, k: int) -> list[str]:
        """``k`` captions from examples spread evenly over the split, cycling through caption slots."""
        n = len(self)
        picks = [(j * n) // k if k <= n else j % n for j in range(k)]
        return [self._captions[i][j % len(self._captions[i])] for j, i in enumerate(picks)]
