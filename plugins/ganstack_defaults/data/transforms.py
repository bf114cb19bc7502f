"""Image geometry of StackGAN's data pipeline, shared by the photo datasets.

Decode time (once, cached): crop a bird's bounding box (a square of side 1.5*max(w, h) centred on
the box, clamped to the image), then resize so the shorter side is the load size, ``r*76/64`` for
the largest stage resolution ``r``. Access time: crop ``r`` (random for training, centre
otherwise), maybe flip, resize that same crop down for the smaller stages, scale to [-1, 1].
:class:`Crop` records the access-time choice, so boxes and keypoints
(:mod:`ganstack_defaults.data.locations`) follow the pixels exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import numpy as np
import torch
from PIL import Image

Box = tuple[float, float, float, float]  # x, y, width, height in pixels
Resize = Callable[[np.ndarray, int], np.ndarray]


def load_size(resolution: int) -> int:
    """Shorter side images are stored at: 76 for 64, 152 for 128, 304 for 256."""
    return int(resolution * 76 / 64)


def box_crop(width: int, height: int, box: Box) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of StackGAN's square around ``box``, clamped to the image."""
    x, y, w, h = box
    half = int(max(w, h) * 0.75)
    cx, cy = int(x + w / 2), int(y + h / 2)
    return max(0, cx - half), max(0, cy - half), min(width, cx + half), min(height, cy + half)


def region(width: int, height: int, box: Box | None) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the original image that is stored: the box crop, or all of it."""
    return (0, 0, width, height) if box is None else box_crop(width, height, box)


def scaled_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """``(width, height)`` once the shorter side is ``shorter``, keeping the aspect ratio."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def prepare(image: Image.Image, box: Box | None, shorter: int) -> np.ndarray:
    """Decode-time step: box crop, then shorter side to ``shorter``; ``[H, W, 3]`` uint8."""
    image = image.convert("RGB")
    if box is not None:
        image = image.crop(box_crop(image.width, image.height, box))
    return np.asarray(image.resize(scaled_size(image.width, image.height, shorter),
                                   Image.Resampling.BILINEAR))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of a square uint8 image to ``size``."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


@attrs.frozen
class Crop:
    """The access-time square: ``size`` pixels from (``left``, ``top``) of the stored image, mirrored
    left to right when ``mirror``."""

    top: int
    left: int
    size: int
    mirror: bool = False


def draw_crop(height: int, width: int, size: int, rng: np.random.Generator | None, flip: bool) -> Crop:
    """``rng`` given: a random place and (when ``flip``) a coin-flip mirror; ``None``: the centre, unmirrored."""
    if rng is None:
        return Crop((height - size) // 2, (width - size) // 2, size)
    top, left = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
    return Crop(top, left, size, flip and bool(rng.random() < 0.5))


def crop_stages(pixels: np.ndarray, resolutions: Sequence[int], crop: Crop,
                resize: Resize = resize_square) -> list[np.ndarray]:
    """One crop of the largest resolution (``crop.size``), resized for each stage, so all stages see
    one picture."""
    crop_pixels = pixels[crop.top:crop.top + crop.size, crop.left:crop.left + crop.size]
    crop_pixels = np.ascontiguousarray(crop_pixels[:, ::-1] if crop.mirror else crop_pixels)
    return [crop_pixels if r == crop.size else resize(crop_pixels, r) for r in resolutions]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 to a ``[3, H, W]`` float tensor in [-1, 1]."""
    return torch.from_numpy(np.require(image, requirements="W")).permute(2, 0, 1).float().div(127.5).sub(1.0)
