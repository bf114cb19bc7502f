"""Boxes and keypoints drawn over images (``ganstack data preview --draw``), in the conventions of the
``box`` and ``keypoints`` fields (``ganstack.interfaces``): fractions of the image side, origin top
left, pixel ``i`` spanning ``[i, i + 1)``."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np

BOX_COLOUR = (255, 0, 255)  # magenta: rare in photos and in the shapes palette


def part_colour(part: int, parts: int) -> tuple[int, int, int]:
    """Part ``part`` (0-based) of ``parts``: its own hue, round the colour wheel from red in part order."""
    r, g, b = colorsys.hsv_to_rgb(part / max(parts, 1), 1.0, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def _span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """First and last pixel that the span ``[lo, hi]`` (fractions) touches, within the image."""
    first = min(max(math.floor(lo * size), 0), size - 1)
    last = min(max(math.ceil(hi * size) - 1, first), size - 1)
    return first, last


def draw_box(image: np.ndarray, box: Sequence[float], colour: tuple[int, int, int] = BOX_COLOUR) -> np.ndarray:
    """A copy of ``image`` (``H x W x 3`` uint8) with a one-pixel outline on the outermost pixels the
    box ``(x0, y0, x1, y1)`` touches."""
    out = np.array(image, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    left, right = _span(float(box[0]), float(box[2]), width)
    top, bottom = _span(float(box[1]), float(box[3]), height)
    out[top, left:right + 1] = colour
    out[bottom, left:right + 1] = colour
    out[top:bottom + 1, left] = colour
    out[top:bottom + 1, right] = colour
    return out


def draw_keypoints(image: np.ndarray, keypoints: Sequence[Sequence[float]], radius: int | None = None) -> np.ndarray:
    """A copy of ``image`` with a square dot (side ``2 * radius + 1``; by default 1 pixel up to 63 px
    images, then one more per 64 px) on the pixel of each visible keypoint ``(x, y, visible)``,
    in :func:`part_colour`; invisible parts are not drawn."""
    out = np.array(image, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    r = max(width, height) // 64 if radius is None else radius
    for k, (x, y, visible) in enumerate(keypoints):
        if visible <= 0:
            continue
        col = min(max(math.floor(float(x) * width), 0), width - 1)
        row = min(max(math.floor(float(y) * height), 0), height - 1)
        out[max(row - r, 0):row + r + 1, max(col - r, 0):col + r + 1] = part_colour(k, len(keypoints))
    return out
