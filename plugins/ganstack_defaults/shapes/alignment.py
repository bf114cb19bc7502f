"""The ``shapes-alignment`` metric: does each generated picture show what its caption says?

For ``n`` scenes of the ``test`` split and ``n`` of the ``holdout`` split (colour pairs never
trained on) it generates one image from each scene's first caption, which names all five
attributes in a sentence shape the training captions use, and one from its second caption, which
names them in a held-out sentence shape no training caption has (:mod:`.grammar`); a judge
(:mod:`.judge`) reads the attributes back. Reported as fractions: ``test/<attribute>``,
``test/all`` (every attribute right) for the seen wordings, ``test/<attribute>/unseen_wording``
and ``test/all/unseen_wording`` for the held-out ones (same scenes, same noise), the same under
``holdout/``, ``<split>/swapped`` (and ``.../unseen_wording``), the pictures whose two colours came
in each other's roles (:func:`.judge.colours_swapped`: on ``holdout``, the pair training named), and
``real_test/...``, the judge's own accuracy on real renders of the test scenes, which bounds how far
the other numbers can be trusted.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
from attrs import validators as v
from torch import Tensor

from ganstack.errors import UserError
from ganstack.interfaces import ImageSource
from ganstack.recipe.schema import seed_range
from ganstack_defaults.metrics.sources import generate
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
class ShapesAlignmentOptions:
    """Shapes alignment settings; the ``judge_*`` options shape the judge, trained once and cached.

    ``seed``: picks the evaluated ``test`` and ``holdout`` scenes and their captions, and seeds the
    noise (batch ``b`` uses ``seed + b``); the judge's own training seed is fixed; ``batch_size``:
    images generated and judged at a time; ``stage``: which stage's images are judged, 1-based
    (null: the last); ``cache_dir``: folder caching trained judges, one per resolution and judge
    setting; ``judge_steps``: training steps of the judge; ``judge_train_scenes``: real ``train``
    scenes the judge learns from (100 or more); ``unseen_wording``: also judge images drawn from
    captions in held-out sentence shapes (``.../unseen_wording``; doubles the images generated)
    """

    seed: int = attrs.field(default=0, validator=seed_range)
    batch_size: int = attrs.field(default=64, validator=v.ge(1))
    stage: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))  # 1-based; None: last
    cache_dir: str = ".ganstack-cache/shapes-judge"
    judge_steps: int = attrs.field(default=JudgeSpec().steps, validator=v.ge(1))
    judge_train_scenes: int = attrs.field(default=JudgeSpec().train_scenes, validator=v.ge(100))
    unseen_wording: bool = True


def evaluation_scenes(n: int, seed: int, split: str, wording: str = "seen") -> list[tuple[shapes.Scene, str]]:
    """The scenes a ``seed`` evaluates on ``split``, each with its caption in a ``seen`` or ``unseen`` wording."""
    return [(scene, shapes.caption_for(scene, seed, split, wording)) for scene in shapes.make_scenes(n, seed, split)]


class ShapesAlignment:
    """Per-attribute accuracy of generated shapes images against their captions."""

    def __init__(self, options: ShapesAlignmentOptions, device: str) -> None:
        self.options = options
        self.device = torch.device(device)
        self._judge = Judges(JudgeSpec(steps=options.judge_steps, train_scenes=options.judge_train_scenes),
                             Path(options.cache_dir), self.device)

    def _check_dataset(self, source: ImageSource) -> None:
        dataset = source.dataset("test")
        if not isinstance(dataset, ShapesDataset):
            raise UserError(f"shapes-alignment checks pictures of the `shapes` dataset, but this recipe's "
                            f"dataset is a {type(dataset).__name__}", path="evaluation.metrics",
                            fix="use shapes-alignment only with `dataset: {type: shapes}`; inception-score "
                            "and fid work with any dataset")

    def _judge_generated(self, source: ImageSource, captions: list[str]) -> tuple[dict[str, Tensor], int]:
        """The judge's reading of one generated image per caption, and their resolution."""
        o = self.options
        parts, resolution = [], 0
        for b, start in enumerate(range(0, len(captions), o.batch_size)):
            images = generate(source, captions[start:start + o.batch_size], o.seed + b, o.stage)
            resolution = images.shape[-1]
            parts.append(self._judge(resolution).predict(images.to(self.device)))
        return {a: torch.cat([p[a] for p in parts]) for a in parts[0]}, resolution

    def _judge_real(self, scenes: list[shapes.Scene], resolution: int) -> dict[str, Tensor]:
        step = self.options.batch_size
        parts = [self._judge(resolution).predict(render_scenes(scenes[i:i + step], resolution).to(self.device))
                 for i in range(0, len(scenes), step)]
        return {a: torch.cat([p[a] for p in parts]) for a in parts[0]}

    def evaluate(self, source: ImageSource, n: int) -> dict[str, float]:
        if n < 1:
            raise UserError(f"shapes-alignment needs n >= 1 images per split, got {n}", path="n",
                            fix="set evaluation.n to 1 or more (a few hundred give stable numbers)")
        self._check_dataset(source)
        result: dict[str, float] = {}
        wordings = shapes.WORDINGS if self.options.unseen_wording else ("seen",)
        for split in SPLITS:
            for wording in wordings:
                scenes, captions = zip(*evaluation_scenes(n, self.options.seed, split, wording), strict=True)
                predicted, resolution = self._judge_generated(source, list(captions))
                suffix = "" if wording == "seen" else f"/{wording}_wording"
                truth = labels(scenes)
                result.update({f"{split}/{k}{suffix}": x for k, x in accuracy(predicted, truth).items()})
                result[f"{split}/swapped{suffix}"] = colours_swapped(predicted, truth)
            if split == "test":
                real = self._judge_real(list(scenes), resolution)
                result.update({f"real_test/{k}": x for k, x in accuracy(real, labels(scenes)).items()})
        return result
