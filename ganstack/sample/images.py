"""Writing images people look at: PNGs and contact sheets with the caption beside each row."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ganstack.atomic import write_bytes_atomic


def to_uint8(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` in [-1, 1] to an ``H x W x 3`` uint8 array."""
    arr = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def save_png(image: Image.Image | np.ndarray, path: Path) -> None:
    """Write a PNG atomically (temporary file, then rename)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    write_bytes_atomic(path, lambda fh: image.save(fh, format="PNG"))


BOX_COLOUR = (255, 0, 0)


def contact_sheet(captions: Sequence[str], columns: Sequence[Tensor], *, cell: int | None = None,
                  text_width: int = 220, headers: Sequence[str] | None = None,
                  boxes: Sequence[Sequence[float] | None] | None = None) -> Image.Image:
    """One row per caption, one column per tensor ``[N, 3, r, r]`` (e.g. per stage), caption on the left.

    Every cell is resized (nearest) to ``cell`` pixels so low-resolution stages stay comparable.
    ``boxes[i]`` (``(x0, y0, x1, y1)``, fractions of the side, origin top left) is outlined in red
    over every image of row ``i``: where the stack was asked to draw.
    """
    size = cell or max(96, *(int(c.shape[-1]) for c in columns))
    pad = 4
    header_h = 16 if headers else 0
    width = text_width + len(columns) * (size + pad) + pad
    height = header_h + len(captions) * (size + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    chars = max(8, text_width // 7)
    for j, name in enumerate(headers or []):
        draw.text((text_width + pad + j * (size + pad), 2), name, fill=(0, 0, 0), font=font)
    for i, caption in enumerate(captions):
        top = header_h + pad + i * (size + pad)
        lines = textwrap.wrap(caption, chars)[: max(1, size // 12)]
        draw.multiline_text((pad, top), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=2)
        for j, col in enumerate(columns):
            img = F.interpolate(col[i : i + 1].float(), size=(size, size), mode="nearest")[0]
            left = text_width + pad + j * (size + pad)
            sheet.paste(Image.fromarray(to_uint8(img)), (left, top))
            box = boxes[i] if boxes is not None and i < len(boxes) else None
            if box is not None:
                x0, y0, x1, y1 = (float(v) * size for v in box)
                draw.rectangle([left + x0, top + y0, left + max(x0, x1 - 1), top + max(y0, y1 - 1)],
                               outline=BOX_COLOUR)
    return sheet
