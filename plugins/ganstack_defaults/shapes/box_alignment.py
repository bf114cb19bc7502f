"""The ``shapes-box`` metric: does a box-conditioned stack draw the shape where the box says?

For ``n`` scenes of the ``test`` split and ``n`` of the ``holdout`` split (colour pairs never trained
on) it gives the stack each scene's true box (``scenes.bounding_box``, as the dataset's ``box`` field) with a caption that names the
shape, its colour and the background but neither size nor position (a sentence shape of the
training captions), so only the box can say where the shape goes. It reports, as fractions:

- ``<split>/centre_in_box``: the drawn shape's centre lies inside the given box. The centre is the
  centroid of the foreground map of the shapes judge (:meth:`ShapesJudge.foreground`: each pixel's
  chance of not being the background colour, read from the border ring); a picture with less than
  one pixel of foreground has no centre and counts as a miss (``<split>/no_shape``);
- ``<split>/<attribute>`` and ``<split>/all``: the judge's reading of background, colour, shape,
  size and position against the scene, as ``shapes-alignment`` reports them; here size and
  position are said by the box alone;
- ``<split>/swapped``: the shape drawn in the background's colour and the background in the shape's
  (:func:`.judge.colours_swapped`);
- ``real_test/...``: the same on real renders of the test scenes, which bounds the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import attrs
import torch
from attrs import validators as v
from torch import Tensor

from ganstack.errors import UserError
from ganstack.interfaces import BOX, ImageSource
from ganstack_defaults.metrics.sources import pick_stage
from ganstack_defaults.shapes import grammar
from ganstack_defaults.shapes import scenes as shapes
from ganstack_defaults.shapes.dataset import ShapesDataset
from ganstack_defaults.shapes.judge import (
    Judges,
    JudgeSpec,
    accuracy,
    colours_swapped,
    labels,
    render_scenes,
)

SPLITS = ("test", "holdout")


@attrs.define(frozen=True, kw_only=True)
class ShapesBoxOptions:
    """Settings of ``shapes-box``; the ``judge_*`` options shape the shapes judge, shared with ``shapes-alignment``.

    ``seed``: picks the evaluated ``test`` and ``holdout`` scenes and their captions, and seeds the
    noise (batch ``b`` uses ``seed + b``); ``batch_size``: images generated and judged at a time;
    ``stage``: which stage's images are judged, 1-based (null: the last); ``cache_dir``: folder caching
    trained judges, one per resolution and judge setting; ``judge_steps``: training steps of the judge;
    ``judge_train_scenes``: real ``train`` scenes the judge learns from (100 or more)
    """

    seed: int = 0
    batch_size: int = attrs.field(default=64, validator=v.ge(1))
    stage: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    cache_dir: str = ".ganstack-cache/shapes-judge"
    judge_steps: int = attrs.field(default=JudgeSpec().steps, validator=v.ge(1))
    judge_train_scenes: int = attrs.field(default=JudgeSpec().train_scenes, validator=v.ge(100))


_PLACE_WORDS = frozenset(w for p in shapes.POSITIONS for w in p.split()) | frozenset(shapes.SIZES)


def position_free_caption(scene: shapes.Scene, seed: int, split: str, index: int) -> str:
    """A caption of ``scene`` naming shape, colour and background only, in a training sentence shape.

    Wordings that still name the place are drawn again (the grammar's ``two-clauses`` frame keeps its
    "it lies in the center" clause when the position is left out).
    """
    frames = grammar.frames_naming(frozenset(), "seen")
    for attempt in range(100):
        choices = grammar.Choices(f"ganstack-shapes-box/{seed}/{split}/{index}/{attempt}")
        text = grammar.describe(frames[choices.number() % len(frames)], scene.attributes(), frozenset(), choices)
        if not _PLACE_WORDS & set(text.lower().replace("-", " ").split()):
            return text
    raise AssertionError("no position-free wording found in 100 draws")  # pragma: no cover


def shape_centres(foreground: Tensor) -> Tensor:
    """Centroid ``(x, y)`` of each foreground map ``[N, 1, S, S]`` in fractions of the side, ``[N, 2]``;
    NaN where the map holds less than one pixel in all."""
    size = foreground.shape[-1]
    weight = foreground[:, 0].float()
    coords = (torch.arange(size, dtype=weight.dtype, device=weight.device) + 0.5) / size
    total = weight.sum(dim=(1, 2))
    x = (weight.sum(dim=1) * coords).sum(dim=1) / total.clamp_min(1e-6)
    y = (weight.sum(dim=2) * coords).sum(dim=1) / total.clamp_min(1e-6)
    centres = torch.stack([x, y], dim=1)
    return torch.where((total >= 1.0)[:, None], centres, torch.full_like(centres, math.nan))


def centre_in_box(centres: Tensor, boxes: Tensor) -> Tensor:
    """Whether each centre ``[N, 2]`` lies in its box ``[N, 4]`` (edges included; NaN never does)."""
    x, y = centres[:, 0], centres[:, 1]
    return (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])


class ShapesBoxAlignment:
    """Centre-in-box rate and attribute accuracy of a box-conditioned stack on shapes."""

    def __init__(self, options: ShapesBoxOptions, device: str) -> None:
        self.options = options
        self.device = torch.device(device)
        self._judge = Judges(JudgeSpec(steps=options.judge_steps, train_scenes=options.judge_train_scenes),
                             Path(options.cache_dir), self.device)

    def _read(self, images: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The judge's attributes and the shape's centre of each image."""
        judge = self._judge(images.shape[-1])
        images = images.to(self.device)
        with torch.no_grad():
            return judge.predict(images), shape_centres(judge.foreground(images)[3]).cpu()

    def _score(self, batches: Sequence[tuple[Tensor, Tensor]], scenes: Sequence[shapes.Scene],
               prefix: str) -> dict[str, float]:
        """Metrics of ``(images, boxes)`` batches against ``scenes``, keyed ``prefix/...``."""
        read = [self._read(images) for images, _ in batches]
        predicted = {a: torch.cat([p[a] for p, _ in read]) for a in read[0][0]}
        centres = torch.cat([c for _, c in read])
        boxes = torch.cat([b for _, b in batches])
        truth = labels(scenes)
        result = {f"{prefix}/{k}": x for k, x in accuracy(predicted, truth).items()}
        result[f"{prefix}/swapped"] = colours_swapped(predicted, truth)
        result[f"{prefix}/centre_in_box"] = float(centre_in_box(centres, boxes).float().mean())
        result[f"{prefix}/no_shape"] = float(centres[:, 0].isnan().float().mean())
        return result

    def _generated(self, source: ImageSource, scenes: Sequence[shapes.Scene], split: str) -> list[tuple[Tensor, Tensor]]:
        o = self.options
        captions = [position_free_caption(s, o.seed, split, i) for i, s in enumerate(scenes)]
        boxes = torch.tensor([shapes.bounding_box(s) for s in scenes])
        batches = []
        for b, start in enumerate(range(0, len(scenes), o.batch_size)):
            box = boxes[start:start + o.batch_size]
            with torch.no_grad():
                per_stage = source.generate(captions[start:start + o.batch_size], seed=o.seed + b,
                                            fields={BOX: box})
            batches.append((pick_stage(per_stage, o.stage).detach(), box))
        return batches

    def evaluate(self, source: ImageSource, n: int) -> dict[str, float]:
        if n < 1:
            raise UserError(f"shapes-box needs n >= 1 images per split, got {n}", path="n",
                            fix="set evaluation.n to 1 or more (a few hundred give stable numbers)")
        dataset = source.dataset("test")
        if not isinstance(dataset, ShapesDataset):
            raise UserError(f"shapes-box checks pictures of the `shapes` dataset, but this recipe's dataset "
                            f"is a {type(dataset).__name__}", path="evaluation.metrics",
                            fix="use shapes-box only with `dataset: {type: shapes}`")
        result: dict[str, float] = {}
        for split in SPLITS:
            scenes = shapes.make_scenes(n, self.options.seed, split)
            generated = self._generated(source, scenes, split)
            result.update(self._score(generated, scenes, split))
            if split == "test":
                resolution = generated[0][0].shape[-1]
                real = [(render_scenes(scenes[i:i + self.options.batch_size], resolution), box)
                        for i, (_, box) in zip(range(0, n, self.options.batch_size), generated, strict=True)]
                result.update(self._score(real, scenes, "real_test"))
        return result
