"""``ganstack data preview``: what the model will be shown, one PNG per example and stage.

The manifest records each example's location fields (``box``, ``keypoints``) where its dataset
yields them; ``draw`` also draws them over the PNGs (:mod:`ganstack.sample.overlay`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ganstack.interfaces import BOX, KEYPOINTS, LOCATION_FIELDS, CaptionDataset, fields_of
from ganstack.sample.images import to_uint8
from ganstack.sample.manifest import ManifestWriter
from ganstack.sample.overlay import draw_box, draw_keypoints


def _drawn(image: np.ndarray, item: dict[str, Any]) -> np.ndarray:
    if BOX in item:
        image = draw_box(image, item[BOX].tolist())
    if KEYPOINTS in item:
        image = draw_keypoints(image, item[KEYPOINTS].tolist())
    return image


def write_preview(dataset: CaptionDataset, resolutions: Sequence[int], out_dir: str | Path, n: int,
                  split: str, *, draw: bool = False) -> Path:
    """Write the first ``n`` examples at every stage resolution; returns the manifest's path."""
    declared = fields_of(dataset)
    shown = [f for f in LOCATION_FIELDS if f in declared]
    with ManifestWriter(out_dir) as writer:
        for i in range(min(n, len(dataset))):
            item = dataset[i]
            fields = {f: item[f].tolist() for f in shown}
            for stage, (resolution, image) in enumerate(zip(resolutions, item["images"], strict=True), 1):
                pixels = to_uint8(image)
                writer.add(_drawn(pixels, item) if draw else pixels,
                           f"example{i:04d}_stage{stage}_{resolution}px.png", caption=item["caption"],
                           index=int(item["index"]), stage=stage, resolution=int(resolution), split=split, **fields)
    return writer.path
