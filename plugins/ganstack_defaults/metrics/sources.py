"""How metrics draw from an :class:`~ganstack.interfaces.ImageSource`: captions, stages, batches.

Shared by every metric so that "which images are scored" means the same thing everywhere: the
first ``n`` examples of a split (cycled when ``n`` exceeds it), one image per example's caption,
from the last stage unless the metric's ``stage`` option (1-based) names another. Batch ``b`` of
a metric is generated with ``seed + b``, so a metric's numbers repeat for a given stack.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ganstack.errors import DataError, UserError
from ganstack.interfaces import CaptionDataset, ImageSource


def pick_stage(per_stage: Sequence[Tensor], stage: int | None) -> Tensor:
    """The images of 1-based ``stage`` (None: the last) from a per-stage list."""
    if stage is None:
        return per_stage[-1]
    if not 1 <= stage <= len(per_stage):
        raise UserError(f"the metric's stage {stage} does not exist: the stack has {len(per_stage)} "
                        f"stage(s)", path="stage",
                        fix=f"set `stage` between 1 and {len(per_stage)}, or leave it out for the last")
    return per_stage[stage - 1]


def generate(source: ImageSource, captions: Sequence[str], seed: int, stage: int | None) -> Tensor:
    """One generated image per caption from the chosen stage, without autograd."""
    with torch.no_grad():
        return pick_stage(source.generate(list(captions), seed=seed), stage).detach()


def item_batches(dataset: CaptionDataset, n: int, batch_size: int,
                 split: str) -> Iterator[tuple[range, list[dict[str, Any]]]]:
    """Batches of the first ``n`` example positions and their items (position ``i`` reads ``i % len``)."""
    size = len(dataset)
    if size == 0:
        raise DataError(f"the '{split}' split of the dataset is empty, so there is nothing to evaluate on",
                        path="split", fix="choose a split with examples in the metric's `split` option")

    def batches() -> Iterator[tuple[range, list[dict[str, Any]]]]:
        for start in range(0, n, batch_size):
            positions = range(start, min(start + batch_size, n))
            yield positions, [dataset[i % size] for i in positions]

    return batches()


def real_images(items: Sequence[dict[str, Any]], stage: int | None) -> Tensor:
    """The real images of ``items`` at the resolution of the evaluated stage, batched."""
    return torch.stack([pick_stage(item["images"], stage) for item in items])
