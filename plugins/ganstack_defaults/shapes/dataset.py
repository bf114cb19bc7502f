"""``shapes``: the synthetic captioned-shapes dataset of :mod:`ganstack_defaults.shapes.scenes`.

Scenes are rendered once at the largest stage resolution and cached as one .npy per split;
smaller stages are area-averaged from that render on access (exactly ``render_stages``). No crop
and no flip: captions name positions. ``class_id`` is ``Scene.class_id`` (shape and colour, 24
classes), so a mismatched image differs in shape or colour. Training accesses pick one of the
five captions at random; other splits always give the first, which names all five attributes in a
sentence shape of the training captions (the second, in a held-out one, is for ``shapes-alignment``).
Every example has the ``box`` field: its shape's bounding box (``scenes.bounding_box``), in
fractions of the image side.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from ganstack.atomic import atomic_write
from ganstack.errors import DataError
from ganstack.interfaces import DataContext
from ganstack_defaults.data.cache import NpyImages, cache_key
from ganstack_defaults.data.dataset import CaptionImageDataset
from ganstack_defaults.data.locations import Locations
from ganstack_defaults.shapes import scenes as shapes

_SIZE = attrs.validators.ge(1)


@attrs.define(frozen=True, kw_only=True)
class ShapesOptions:
    """Options of the ``shapes`` dataset: split sizes, and the seed every scene and caption derives from.

    ``train_size``: scenes in ``train``, whose colour pairs leave out the eight held-out ones;
    ``test_size``: scenes in ``test``, drawn from every colour pair; ``holdout_size``: scenes in
    ``holdout``, drawn only from the eight held-out (shape colour, background) pairs: the
    compositional test; ``seed``: scene i of a split depends only on (seed, split, i), the same on
    every machine; independent of the run's seed; ``split``: ``train``, ``test`` or ``holdout``
    reads that split for every use; ``null`` (default) reads the split each use asks for
    """

    train_size: int = attrs.field(default=10000, validator=_SIZE)
    test_size: int = attrs.field(default=1000, validator=_SIZE)
    holdout_size: int = attrs.field(default=1000, validator=_SIZE)
    seed: int = 0
    split: str | None = attrs.field(default=None,
                                    validator=attrs.validators.optional(attrs.validators.in_(shapes.SPLITS)))


class ShapesDataset(CaptionImageDataset):
    """A :class:`CaptionImageDataset` that also knows its scenes (for metrics that check them)."""

    def __init__(self, scenes: list[shapes.Scene], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.scenes = scenes


def _rendered(path: Path, scenes: list[shapes.Scene], size: int) -> NpyImages:
    if not path.exists():
        def fill(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(scenes), size, size, 3))
            for i, scene in enumerate(scenes):
                out[i] = shapes.render(scene, size)
            out.flush()
            del out
        atomic_write(path, fill)
    return NpyImages(path)


def build_shapes(options: ShapesOptions, ctx: DataContext) -> ShapesDataset:
    """The ``train``, ``test`` or ``holdout`` split, generated on first use."""
    split = options.split or ctx.split
    if split not in shapes.SPLITS:
        raise DataError(f"shapes has no '{split}' split", fix=f"use one of: {', '.join(shapes.SPLITS)}")
    count = getattr(options, f"{split}_size")
    size = max(ctx.resolutions)
    scenes = shapes.make_scenes(count, options.seed, split)
    key = cache_key([shapes.SPEC_VERSION, split, count, options.seed, size])
    images = _rendered(ctx.cache_dir / f"shapes-v{shapes.SPEC_VERSION}-{split}-{size}-{key[:20]}.npy",
                       scenes, size)
    return ShapesDataset(
        scenes, images=images, captions=[shapes.captions(s, options.seed, split) for s in scenes],
        class_ids=[s.class_id for s in scenes], resolutions=ctx.resolutions, train=split == "train",
        seed=ctx.seed, want_wrong=ctx.want_wrong, flip=False, resize=shapes.downsample,
        fingerprint=cache_key(["shapes", key, attrs.asdict(options)]),
        locations=Locations(boxes=np.array([shapes.bounding_box(s) for s in scenes]) * size),
    )
