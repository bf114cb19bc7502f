"""Conditioning fields a user gives ``ganstack sample`` (``--box``, ``--keypoints``), read and checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from ganstack.errors import UserError
from ganstack.reading import read_text

BOX_FIX = ("give --box X0,Y0,X1,Y1 as fractions of the image side, origin top left, with 0 <= X0 < X1 <= 1 and "
           "0 <= Y0 < Y1 <= 1 (e.g. --box 0.1,0.2,0.6,0.9)")
KEYPOINTS_FIX = ("write a UTF-8 JSON file holding a list of [x, y, visible] triples, one per part (x, y fractions "
                 "of the image side, origin top left; visible 1 or 0; an invisible part is [0, 0, 0]), or "
                 '{"keypoints": [...]}')


def parse_box(text: str) -> Tensor:
    """``"X0,Y0,X1,Y1"`` to a float ``[4]`` box, or a UserError naming ``--box``."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"--box '{text}' is not four numbers X0,Y0,X1,Y1", path="--box", fix=BOX_FIX) from None
    if len(values) != 4:
        raise UserError(f"--box '{text}' has {len(values)} numbers, not four (X0,Y0,X1,Y1)", path="--box",
                        fix=BOX_FIX)
    x0, y0, x1, y1 = values
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise UserError(f"--box '{text}' has a value outside 0..1 (fractions of the image side)", path="--box",
                        fix=BOX_FIX)
    if not (x0 < x1 and y0 < y1):
        raise UserError(f"--box '{text}' is empty: it needs X0 < X1 and Y0 < Y1", path="--box", fix=BOX_FIX)
    return torch.tensor(values, dtype=torch.float32)


def read_keypoints(path: Path, parts: int | None = None) -> Tensor:
    """A keypoints file to a float ``[K, 3]`` tensor (``parts``: the K the stack expects, where known)."""
    text = read_text(path, what="keypoints file (--keypoints)", fix=KEYPOINTS_FIX)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"the keypoints file (--keypoints) is not JSON: {exc.msg} at line {exc.lineno}",
                        file=str(path), path="--keypoints", fix=KEYPOINTS_FIX) from None
    if isinstance(data, dict):
        data = data.get("keypoints")
    if not isinstance(data, list) or not data:
        raise UserError("the keypoints file (--keypoints) holds no list of keypoints", file=str(path),
                        path="--keypoints", fix=KEYPOINTS_FIX)
    rows: list[list[float]] = []
    for i, point in enumerate(data):
        ok = (isinstance(point, list) and len(point) == 3
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point))
        if not ok:
            raise UserError(f"keypoint {i + 1} of the keypoints file (--keypoints) is {json.dumps(point)[:60]}, "
                            "not [x, y, visible]", file=str(path), path="--keypoints", fix=KEYPOINTS_FIX)
        x, y, visible = (float(v) for v in point)
        if visible not in (0.0, 1.0) or not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise UserError(f"keypoint {i + 1} of the keypoints file (--keypoints) is {point}: x and y must be "
                            "fractions 0..1 and visible 1 or 0", file=str(path), path="--keypoints",
                            fix=KEYPOINTS_FIX)
        rows.append([x, y, visible] if visible else [0.0, 0.0, 0.0])
    if parts is not None and len(rows) != parts:
        raise UserError(f"the keypoints file (--keypoints) has {len(rows)} parts; this run's stack expects {parts}",
                        file=str(path), path="--keypoints", fix=f"give one [x, y, visible] triple for each of the "
                        f"{parts} parts, in the dataset's part order (an invisible part as [0, 0, 0])")
    return torch.tensor(rows, dtype=torch.float32)
