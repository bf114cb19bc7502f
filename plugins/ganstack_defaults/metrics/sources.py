"""How metrics draw from an :class:`~ganstack.interfaces.ImageSource`: captions, stages, batches.

Shared by every metric so that "which images are scored" means the same thing everywhere: the
first ``n`` positions of a split, one image per position, from the last stage unless the
metric's ``stage`` option (1-based) names another. Batch ``b`` of a metric is generated with
``seed + b``, so a metric's numbers repeat for a given stack.

Which caption a position reads is the metric's ``captions`` option (:data:`CAPTION_MODES`):

- ``first``: position ``i`` is example ``i % len`` with the caption the split gives it (for the
  default datasets, its first); past the split's end the examples repeat with new noise.
- ``single``: position ``i`` is example ``i % len`` with its first caption alone and, where the
  dataset has embeddings, that caption's own embedding (``first`` averages the first
  ``embeddings_per_sample`` of them where that option is above 1): StackGAN's evaluation, one
  caption per test image drawn again with new noise past the split's end.
- ``all``: position ``i`` is example ``i % len`` with its caption number ``i // len`` (cycling
  through its captions), so ``n = len * captions`` scores every caption once (CUB: 2,933 test
  images x 10 captions = 29,330).

``single`` and ``all`` need a dataset with ``caption_item``
(:class:`ganstack.interfaces.EveryCaption`); the default datasets have it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ganstack.errors import DataError, UserError
from ganstack.interfaces import CaptionDataset, EveryCaption, ImageSource, fields_of

CAPTION_MODES = ("first", "single", "all")


def pick_stage(per_stage: Sequence[Tensor], stage: int | None) -> Tensor:
    """The images of 1-based ``stage`` (None: the last) from a per-stage list."""
    if stage is None:
        return per_stage[-1]
    if not 1 <= stage <= len(per_stage):
        raise UserError(f"the metric's stage {stage} does not exist: the stack has {len(per_stage)} "
                        f"stage(s)", path="stage",
                        fix=f"set `stage` between 1 and {len(per_stage)}, or leave it out for the last")
    return per_stage[stage - 1]


def generate(source: ImageSource, captions: Sequence[str], seed: int, stage: int | None,
             fields: dict[str, Tensor] | None = None) -> Tensor:
    """One generated image per caption from the chosen stage, without autograd. ``fields`` (the
    examples' conditioning fields, :func:`item_fields`) is passed on only when there are some, so an
    :class:`ImageSource` written before fields existed keeps working."""
    with torch.no_grad():
        extra = {} if fields is None else {"fields": fields}
        return pick_stage(source.generate(list(captions), seed=seed, **extra), stage).detach()


def item_fields(dataset: CaptionDataset, items: Sequence[dict[str, Any]]) -> dict[str, Tensor] | None:
    """The conditioning fields of these examples, batched (each one the dataset declares in ``fields``,
    and ``class_id``), or None for a dataset that declares none: what a stack that requests fields
    needs beside each example's caption."""
    names = fields_of(dataset)
    if not names:
        return None
    fields = {name: torch.stack([torch.as_tensor(it[name]) for it in items]) for name in sorted(names)}
    if "class_id" not in fields and all("class_id" in it for it in items):
        fields["class_id"] = torch.as_tensor([int(it["class_id"]) for it in items], dtype=torch.long)
    return fields


def item_batches(dataset: CaptionDataset, n: int, batch_size: int, split: str,
                 captions: str = "first") -> Iterator[tuple[range, list[dict[str, Any]]]]:
    """Batches of the first ``n`` positions and their items (see the module doc for ``captions``)."""
    size = len(dataset)
    if size == 0:
        raise DataError(f"the '{split}' split of the dataset is empty, so there is nothing to evaluate on",
                        path="split", fix="choose a split with examples in the metric's `split` option")
    if captions not in CAPTION_MODES:
        raise UserError(f"captions must be one of {', '.join(CAPTION_MODES)}, not '{captions}'", path="captions",
                        fix="write `captions: all` to score every caption of each example, or `first`")
    if captions != "first" and not isinstance(dataset, EveryCaption):
        raise UserError(f"`captions: {captions}` needs a dataset that gives any caption of an example; "
                        f"{type(dataset).__name__} has no caption_item method", path="captions",
                        fix="use `captions: first`, or give the dataset a caption_item(index, caption) method")

    def item(i: int) -> dict[str, Any]:
        if captions == "first":
            return dataset[i % size]
        return dataset.caption_item(i % size, 0 if captions == "single" else i // size)  # type: ignore[attr-defined]

    def batches() -> Iterator[tuple[range, list[dict[str, Any]]]]:
        for start in range(0, n, batch_size):
            positions = range(start, min(start + batch_size, n))
            yield positions, [item(i) for i in positions]

    return batches()


def real_images(items: Sequence[dict[str, Any]], stage: int | None) -> Tensor:
    """The real images of ``items`` at the resolution of the evaluated stage, batched."""
    return torch.stack([pick_stage(item["images"], stage) for item in items])
