"""Boxes and part keypoints that follow their image through the data pipeline exactly.

A layout reader gives each example's box and keypoints in the pixels of its *stored* image (after
the decode-time box crop and resize, :func:`to_stored`); at access time :meth:`Locations.place`
applies the same :class:`~ganstack_defaults.data.transforms.Crop` as the pixels and returns
fractions of the crop's side, so one value serves every stage's resolution (the smaller stages are
resizes of that crop).

Conventions (the ``box`` and ``keypoints`` fields of ``ganstack.interfaces.FIELDS``):

- positions are continuous: pixel ``i`` spans ``[i, i + 1)``; the image's top left corner is
  ``(0, 0)`` and its bottom right ``(1, 1)``;
- ``box``: ``(x0, y0, x1, y1)``, clipped to the image (a box the crop cuts keeps its visible part);
- ``keypoints``: ``(x, y, visible)`` per part; a part that is not visible, or that the crop leaves
  out (outside ``[0, 1]``), is ``(0, 0, 0)``;
- a mirrored crop maps ``x`` to ``1 - x`` (a box's ``x0, x1`` to ``1 - x1, 1 - x0``) and, where the
  parts have sides, swaps each ``left ...`` part with its ``right ...`` one (:func:`mirror_order`), so
  a part keeps naming the same side of the animal the mirrored picture shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch

from ganstack.interfaces import BOX, KEYPOINTS
from ganstack_defaults.data.transforms import Crop

# CUB-200-2011's parts, in the order of its parts/parts.txt (part id k is entry k - 1).
CUB_PARTS: tuple[str, ...] = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
    "right eye", "right leg", "right wing", "tail", "throat",
)


def mirror_order(parts: Sequence[str]) -> tuple[int, ...]:
    """For each part, the part whose location it takes in a mirrored picture: ``left X`` and
    ``right X`` swap, every other part keeps its own."""
    index = {name: k for k, name in enumerate(parts)}
    order = []
    for name in parts:
        side, _, rest = name.partition(" ")
        other = {"left": "right", "right": "left"}.get(side)
        order.append(index.get(f"{other} {rest}", index[name]) if other else index[name])
    return tuple(order)


def to_stored(xy: np.ndarray, regions: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Original-image pixel positions ``[N, M, 2]`` to stored-image pixels: each image ``n`` stores
    ``regions[n]`` (``left, top, right, bottom`` of the original) resized to ``sizes[n]`` (``width,
    height``), each axis scaled on its own (the stored size is rounded down)."""
    regions = np.asarray(regions, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    origin = regions[:, None, :2]
    scale = sizes[:, None, :] / (regions[:, None, 2:] - regions[:, None, :2])
    return (np.asarray(xy, dtype=np.float64) - origin) * scale


def place_box(box: np.ndarray, crop: Crop) -> np.ndarray:
    """A stored-pixel box ``(x0, y0, x1, y1)`` as fractions of ``crop``, clipped, mirrored with it."""
    x0, y0, x1, y1 = (np.asarray(box, dtype=np.float64) - [crop.left, crop.top, crop.left, crop.top]) / crop.size
    x0, y0, x1, y1 = np.clip([x0, y0, x1, y1], 0.0, 1.0)
    if crop.mirror:
        x0, x1 = 1.0 - x1, 1.0 - x0
    return np.array([x0, y0, x1, y1])


def place_keypoints(points: np.ndarray, crop: Crop, mirror: Sequence[int] | None) -> np.ndarray:
    """Stored-pixel keypoints ``[K, 3]`` (x, y, visible) as fractions of ``crop``; parts outside it
    become invisible; a mirrored crop flips x and reorders the parts by ``mirror``."""
    points = np.asarray(points, dtype=np.float64)
    x = (points[:, 0] - crop.left) / crop.size
    y = (points[:, 1] - crop.top) / crop.size
    visible = (points[:, 2] > 0) & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)
    if crop.mirror:
        x = 1.0 - x
    out = np.where(visible[:, None], np.stack([x, y, np.ones_like(x)], axis=1), 0.0)
    if crop.mirror and mirror is not None:
        out = out[list(mirror)]
    return out


@attrs.frozen
class Locations:
    """Per-example ``boxes`` ``[N, 4]`` and ``keypoints`` ``[N, K, 3]`` in stored-image pixels (either
    may be ``None``); ``mirror``: the part order under a mirrored crop (``None``: parts keep theirs)."""

    boxes: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    mirror: tuple[int, ...] | None = None

    @property
    def fields(self) -> frozenset[str]:
        """The conditioning fields these give."""
        return frozenset(name for name, value in ((BOX, self.boxes), (KEYPOINTS, self.keypoints))
                         if value is not None)

    def __len__(self) -> int:
        present = [v for v in (self.boxes, self.keypoints) if v is not None]
        return len(present[0]) if present else 0

    def place(self, index: int, crop: Crop) -> dict[str, torch.Tensor]:
        """Example ``index``'s fields under ``crop``, as float32 tensors."""
        out = {}
        if self.boxes is not None:
            out[BOX] = torch.from_numpy(place_box(self.boxes[index], crop).astype(np.float32))
        if self.keypoints is not None:
            out[KEYPOINTS] = torch.from_numpy(
                place_keypoints(self.keypoints[index], crop, self.mirror).astype(np.float32))
        return out
