"""The ``shapes-box`` metric: boxes of scenes, centres of drawn shapes, and the rates it reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from ganstack.components.loader import load_plugins
from ganstack.interfaces import DataContext
from ganstack.testing import metric_context
from ganstack_defaults.shapes import scenes as shapes
from ganstack_defaults.shapes.box_alignment import (
    centre_in_box,
    position_free_caption,
    shape_centres,
)
from ganstack_defaults.shapes.dataset import ShapesOptions, build_shapes

SIZE = 32
RED, BLUE = (torch.tensor(shapes.PALETTE[c]) / 127.5 - 1 for c in ("red", "blue"))


def test_shape_centres_are_foreground_centroids_in_fractions() -> None:
    fg = torch.zeros(2, 1, 4, 4)
    fg[0, 0, 1, 2:] = 1.0  # row 1, columns 2 and 3
    centres = shape_centres(fg)
    assert centres[0].tolist() == pytest.approx([0.75, 0.375])
    assert centres[1].isnan().all()  # nothing drawn: no centre
    boxes = torch.tensor([[0.5, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 1.0]])
    assert centre_in_box(centres, boxes).tolist() == [True, False]
    assert centre_in_box(centres[:1], torch.tensor([[0.0, 0.5, 0.5, 1.0]])).tolist() == [False]


def test_position_free_captions_name_neither_place_nor_size() -> None:
    for i, scene in enumerate(shapes.make_scenes(40, 0, "test")):
        text = position_free_caption(scene, 0, "test", i).lower()
        assert scene.shape in text and scene.color in text and scene.background in text
        assert not any(w in text for w in ("left", "right", "top", "bottom", "center", "small", "large")), text


class BoxSource:
    """An image source that paints a red square over a blue background: filling each given box, or, with
    ``fixed``, always the middle fifth of the picture."""

    def __init__(self, root: Path, fixed: bool = False) -> None:
        self.root, self.fixed, self.calls = root, fixed, []

    def generate(self, captions: list[str], seed: int = 0, fields: dict[str, Tensor] | None = None) -> list[Tensor]:
        assert fields is not None and fields["box"].shape == (len(captions), 4)
        self.calls.append(fields["box"])
        images = BLUE[None, :, None, None].repeat(len(captions), 1, SIZE, SIZE)
        for image, box in zip(images, fields["box"], strict=True):
            x0, y0, x1, y1 = (0.4, 0.4, 0.6, 0.6) if self.fixed else box.tolist()
            image[:, round(y0 * SIZE):round(y1 * SIZE), round(x0 * SIZE):round(x1 * SIZE)] = RED[:, None, None]
        return [images]

    def dataset(self, split: str):  # noqa: ANN201
        options = ShapesOptions(train_size=1, test_size=1, holdout_size=1)
        return build_shapes(options, DataContext(split=split, resolutions=(SIZE,), cache_dir=self.root))


def _metric(tmp_path: Path):  # noqa: ANN202
    entry = load_plugins().registry.get("metric", "shapes-box")
    options = entry.options(batch_size=8, judge_steps=2, judge_train_scenes=100, cache_dir=str(tmp_path / "judge"))
    return entry.factory(options, metric_context())


def test_a_source_that_fills_each_box_scores_every_centre_in_its_box(tmp_path: Path) -> None:
    source = BoxSource(tmp_path)
    result = _metric(tmp_path).evaluate(source, 12)
    assert result["test/centre_in_box"] == 1.0 and result["holdout/centre_in_box"] == 1.0
    assert result["test/no_shape"] == 0.0
    assert result["real_test/centre_in_box"] == 1.0  # the real renders, in their own boxes
    scenes = shapes.make_scenes(12, 0, "test")
    given = torch.cat(source.calls[:2])  # test split: batches of 8 and 4
    assert torch.allclose(given, torch.tensor([shapes.bounding_box(s) for s in scenes]))
    assert result["test/color"] == pytest.approx(sum(s.color == "red" for s in scenes) / 12)  # it paints red
    assert result["test/background"] == pytest.approx(sum(s.background == "blue" for s in scenes) / 12)
    assert result["test/swapped"] == pytest.approx(sum((s.color, s.background) == ("blue", "red") for s in scenes) / 12)


def test_a_source_that_ignores_the_box_scores_only_the_boxes_around_the_centre(tmp_path: Path) -> None:
    result = _metric(tmp_path).evaluate(BoxSource(tmp_path, fixed=True), 16)
    scenes = shapes.make_scenes(16, 0, "test")
    centred = sum(s.position == "center" for s in scenes) / 16  # only their boxes hold (0.5, 0.5)
    assert 0 < centred < 1
    assert result["test/centre_in_box"] == pytest.approx(centred)
