"""``ganstack data preview``: what the model will be shown, one PNG per example and stage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ganstack.interfaces import CaptionDataset
from ganstack.sample.manifest import ManifestWriter


def write_preview(dataset: CaptionDataset, resolutions: Sequence[int], out_dir: str | Path, n: int,
                  split: str) -> Path:
    """Write the first ``n`` examples at every stage resolution; returns the manifest's path."""
    with ManifestWriter(out_dir) as writer:
        for i in range(min(n, len(dataset))):
            item = dataset[i]
            for stage, (resolution, image) in enumerate(zip(resolutions, item["images"], strict=True), 1):
                writer.add(image, f"example{i:04d}_stage{stage}_{resolution}px.png", caption=item["caption"],
                           index=int(item["index"]), stage=stage, resolution=int(resolution), split=split)
    return writer.path
