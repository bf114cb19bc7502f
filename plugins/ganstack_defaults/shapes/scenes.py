"""Synthetic captioned shapes: a tiny text-to-image task whose answers can be checked exactly.

One flat-coloured shape on a flat background of another palette colour. Everything is a pure
function of ``(seed, split, index)`` through SHA-256, and pixels are computed analytically with
fixed supersampling, so scenes, renders and captions are identical across numpy, Pillow and
platform versions; :data:`SPEC_VERSION` changes whenever any of them would.

Geometry, in fractions of the canvas side: the shape's bounding box has its larger side equal to
:data:`SIZE_FRACTION` (a triangle is as wide as that and ``sqrt(3)/2`` as tall) and is centred on
:data:`POSITION_CENTRE` plus a jitter ``(dx, dy)`` of at most :data:`JITTER`. Large shapes are
always centred. ``class_id`` is ``SHAPES.index(shape) * len(PALETTE) + colour index`` (24 classes).
Captions are written by :mod:`.grammar`, whose held-out sentence shapes occur only outside ``train``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence

import attrs
import numpy as np
from PIL import Image

from ganstack_defaults.shapes import grammar

SPEC_VERSION = 2  # 2: captions from the grammar of .grammar, with held-out sentence shapes
_SCENE_VERSION = 1  # scenes, jitter and pixels are unchanged since version 1: their hash keys stay

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 170, 70),
    "blue": (50, 90, 220),
    "yellow": (235, 215, 50),
    "purple": (140, 70, 190),
    "orange": (245, 140, 40),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")
SIZE_FRACTION: dict[str, float] = {"small": 0.40, "large": 0.70}
POSITION_CENTRE: dict[str, tuple[float, float]] = {  # (x, y), y grows downwards
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
JITTER = 0.04
# (shape colour, background colour) pairs never seen in training: the compositional test.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "blue"), ("green", "yellow"), ("blue", "orange"), ("yellow", "purple"),
    ("purple", "white"), ("orange", "black"), ("white", "red"), ("black", "green"),
)
SPLITS: tuple[str, ...] = ("train", "test", "holdout")
ATTRIBUTES: tuple[str, ...] = ("background", "color", "shape", "size", "position")
NUM_CLASSES = len(SHAPES) * len(PALETTE)
SUPERSAMPLE = 4  # samples per pixel along each axis

_ALL_PAIRS = tuple((c, b) for c in COLORS for b in COLORS if c != b)
_SPLIT_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": tuple(p for p in _ALL_PAIRS if p not in HELDOUT_PAIRS),
    "test": _ALL_PAIRS,
    "holdout": HELDOUT_PAIRS,
}
_JITTER_UNIT = 100_000  # jitter is a whole number of 1/_JITTER_UNIT of the side
_JITTER_STEPS = round(JITTER * _JITTER_UNIT)


@attrs.frozen
class Scene:
    """One picture's content; ``dx``/``dy`` are the jitter in fractions of the side."""

    shape: str = attrs.field(validator=attrs.validators.in_(SHAPES))
    color: str = attrs.field(validator=attrs.validators.in_(COLORS))
    background: str = attrs.field(validator=attrs.validators.in_(COLORS))
    size: str = attrs.field(validator=attrs.validators.in_(SIZES))
    position: str = attrs.field(validator=attrs.validators.in_(POSITIONS))
    dx: float = 0.0
    dy: float = 0.0

    def attributes(self) -> dict[str, str]:
        """The words a caption names, keyed by :data:`ATTRIBUTES`."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    @property
    def class_id(self) -> int:
        return SHAPES.index(self.shape) * len(PALETTE) + COLORS.index(self.color)


def _words(*key: object) -> list[int]:
    """Eight stable 32-bit numbers derived from ``key``."""
    digest = hashlib.sha256("/".join(map(str, ("ganstack-shapes", _SCENE_VERSION, *key))).encode()).digest()
    return [int.from_bytes(digest[i:i + 4], "big") for i in range(0, 32, 4)]


def make_scenes(n: int, seed: int, split: str) -> list[Scene]:
    """The first ``n`` scenes of ``split``; scene ``i`` depends only on ``(seed, split, i)``."""
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split '{split}'; use one of {', '.join(SPLITS)}")
    pairs = _SPLIT_PAIRS[split]
    scenes = []
    for i in range(n):
        w = _words(seed, split, i)
        color, background = pairs[w[0] % len(pairs)]
        size = SIZES[w[2] % len(SIZES)]
        position = POSITIONS[w[3] % len(POSITIONS)] if size == "small" else "center"
        dx, dy = ((v % (2 * _JITTER_STEPS + 1) - _JITTER_STEPS) / _JITTER_UNIT for v in w[4:6])
        scenes.append(Scene(SHAPES[w[1] % len(SHAPES)], color, background, size, position, dx, dy))
    return scenes


def _inside(scene: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which sample points (fractions of the side) the shape covers."""
    cx, cy = POSITION_CENTRE[scene.position]
    cx, cy = cx + scene.dx, cy + scene.dy
    half = SIZE_FRACTION[scene.size] / 2
    if scene.shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    if scene.shape == "square":
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    height = half * math.sqrt(3)  # equilateral, apex up, bounding box centred on (cx, cy)
    depth = y - (cy - height / 2)  # distance below the apex
    return (depth >= 0) & (depth <= height) & (np.abs(x - cx) * math.sqrt(3) <= depth)


def bounding_box(scene: Scene) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of the shape, fractions of the side, origin top left: the box the geometry
    above defines (a triangle's spans ``sqrt(3)/2`` of its width in height), clipped to the canvas."""
    cx, cy = POSITION_CENTRE[scene.position]
    cx, cy, half = cx + scene.dx, cy + scene.dy, SIZE_FRACTION[scene.size] / 2
    reach_y = half * math.sqrt(3) / 2 if scene.shape == "triangle" else half
    return (max(0.0, cx - half), max(0.0, cy - reach_y), min(1.0, cx + half), min(1.0, cy + reach_y))


def _window(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Pixel range ``[start, stop)`` that the span ``[lo, hi]`` (fractions of the side) touches."""
    return max(0, math.floor(lo * size)), min(size, math.ceil(hi * size))


def _samples(start: int, stop: int, size: int) -> np.ndarray:
    """Sample positions (fractions of the side) of pixels ``start..stop-1``, SUPERSAMPLE each."""
    return (np.arange(start * SUPERSAMPLE, stop * SUPERSAMPLE) + 0.5) / (SUPERSAMPLE * size)


def _coverage(scene: Scene, size: int) -> np.ndarray:
    """Fraction of each pixel the shape covers, ``[size, size]``; only its bounding box is sampled."""
    cx, cy = POSITION_CENTRE[scene.position]
    cx, cy, reach = cx + scene.dx, cy + scene.dy, SIZE_FRACTION[scene.size] / 2
    x0, x1 = _window(cx - reach, cx + reach, size)
    y0, y1 = _window(cy - reach, cy + reach, size)
    inside = _inside(scene, _samples(x0, x1, size)[None, :], _samples(y0, y1, size)[:, None])
    alpha = np.zeros((size, size))
    alpha[y0:y1, x0:x1] = inside.reshape(y1 - y0, SUPERSAMPLE, x1 - x0, SUPERSAMPLE).mean(axis=(1, 3))
    return alpha


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.floor(values + 0.5).clip(0, 255).astype(np.uint8)


def render(scene: Scene, size: int) -> np.ndarray:
    """The scene as an anti-aliased ``[size, size, 3]`` uint8 RGB image."""
    if size < 1:
        raise ValueError(f"render size must be >= 1, got {size}")
    alpha = _coverage(scene, size)[..., None]
    shape_rgb = np.array(PALETTE[scene.color], dtype=np.float64)
    background_rgb = np.array(PALETTE[scene.background], dtype=np.float64)
    return _to_uint8(background_rgb * (1 - alpha) + shape_rgb * alpha)


def downsample(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average a square uint8 ``[n, n, 3]`` image down to ``[size, size, 3]``."""
    side = image.shape[0]
    if side == size:
        return image
    if side % size == 0:
        f = side // size
        return _to_uint8(image.reshape(size, f, size, f, 3).mean(axis=(1, 3)))
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BOX))


def render_stages(scene: Scene, sizes: Sequence[int]) -> list[np.ndarray]:
    """One render at the largest size, area-averaged down to each of ``sizes``.

    Every stage therefore sees the same picture, and a smaller stage's target is exactly what
    the larger stage's image looks like from further away.
    """
    full = render(scene, max(sizes))
    return [downsample(full, s) for s in sizes]


CAPTIONS_PER_SCENE = 5
WORDINGS: tuple[str, ...] = ("seen", "unseen")


def captions(scene: Scene, seed: int, split: str = "train") -> list[str]:
    """Five captions of ``scene`` from the grammar of :mod:`.grammar`; the first names all five attributes.

    In ``train`` every caption comes from a sentence shape of :data:`grammar.SEEN_FRAMES`. In
    ``test`` and ``holdout`` the first is such a caption too, the second names all five attributes in
    a held-out sentence shape (:data:`grammar.UNSEEN_FRAMES`), and the other three come from either.
    Captions after the first two leave out the size, the position or both, half the time each.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split '{split}'; use one of {', '.join(SPLITS)}")
    key = "/".join(map(str, ("ganstack-shapes", SPEC_VERSION, "caption", seed, split, *attrs.astuple(scene))))
    everything = frozenset({"size", "position"})
    texts: list[str] = []
    for slot in range(CAPTIONS_PER_SCENE):
        for attempt in itertools.count():
            choices = grammar.Choices(f"{key}/{slot}/{attempt}")
            if slot == 0 or (slot == 1 and split == "train"):
                pool = grammar.frames_naming(everything, "seen")
                include = everything
            elif slot == 1:
                pool = grammar.frames_naming(everything, "unseen")
                include = everything
            else:
                include = frozenset(a for a in sorted(everything) if choices.chance(1, 2))
                pool = grammar.frames_naming(include, "seen" if split == "train" else "any")
            text = grammar.describe(pool[choices.number() % len(pool)], scene.attributes(), include, choices)
            if text not in texts:
                texts.append(text)
                break
    return texts


def caption_for(scene: Scene, seed: int, split: str, wording: str) -> str:
    """The caption of ``scene`` naming all five attributes in a ``seen`` or ``unseen`` sentence shape."""
    if wording not in WORDINGS:
        raise ValueError(f"unknown wording '{wording}'; use one of {', '.join(WORDINGS)}")
    if wording == "unseen" and split == "train":
        raise ValueError("the train split has no unseen wordings; use test or holdout")
    return captions(scene, seed, split)[WORDINGS.index(wording)]
