"""``write_preview`` and the manifest it shares with ``ganstack sample``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganstack.components.loader import registry
from ganstack.interfaces import DataContext
from ganstack.sample.manifest import ManifestWriter
from ganstack.sample.preview import write_preview


def test_shapes_preview_writes_pngs_and_manifest(tmp_path: Path) -> None:
    entry = registry().get("dataset", "shapes")
    ctx = DataContext(split="test", resolutions=(8, 16), cache_dir=tmp_path / "cache")
    dataset = entry.factory(entry.options(train_size=4, test_size=5, holdout_size=2), ctx)
    out = tmp_path / "preview"
    manifest = write_preview(dataset, (8, 16), out, 3, "test")
    assert manifest == out / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) == 6
    assert all(set(r) == {"caption", "index", "stage", "resolution", "file", "split", "box"} for r in records)
    assert [(r["index"], r["stage"], r["resolution"]) for r in records] == [
        (i, s, r) for i in range(3) for s, r in ((1, 8), (2, 16))]
    for r in records:
        assert r["split"] == "test" and r["caption"] == dataset[r["index"]]["caption"]
        assert r["box"] == dataset[r["index"]]["box"].tolist()
        with Image.open(out / r["file"]) as image:
            assert image.format == "PNG" and image.size == (r["resolution"], r["resolution"])
            expected = ((dataset[r["index"]]["images"][r["stage"] - 1] + 1) * 127.5).round().byte()
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), expected.permute(1, 2, 0).numpy())
    assert sorted(p.name for p in out.iterdir()) == sorted([*(r["file"] for r in records), "manifest.jsonl"])


def test_manifest_writer_takes_tensors_and_arrays(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path / "m") as writer:
        writer.add(torch.zeros(3, 4, 6), "sub/a.png", seed=1)
        writer.add(np.full((5, 5, 3), 255, dtype=np.uint8), "b.png", seed=2)
        with pytest.raises(ValueError, match="uint8"):
            writer.add(np.zeros((5, 5), dtype=np.float32), "c.png")
    lines = (tmp_path / "m" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"seed": 1, "file": "sub/a.png"}, {"seed": 2, "file": "b.png"}]
    with Image.open(tmp_path / "m" / "sub" / "a.png") as image:
        assert image.size == (6, 4) and image.getpixel((0, 0)) == (128, 128, 128)
    assert not (tmp_path / "m" / "c.png").exists()
