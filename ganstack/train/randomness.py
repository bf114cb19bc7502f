"""The run's random streams: seeding, side draws that leave them untouched, one state per rank."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ganstack.run_folder.checkpoint import rng_state, set_rng_state


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Draw from seeded streams without disturbing the run's own (so resume stays exact)."""
    state = rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        set_rng_state(state)


def rank_seed(seed: int, rank: int) -> int:
    """Each process's noise seed under torchrun: identical weights everywhere, different noise per rank."""
    return seed + 7919 * rank


def restore_rank_state(saved: dict[str, Any], rank: int, world: int, seed: int, step: int) -> None:
    """Put back this process's streams from a checkpoint: its own where the checkpoint has one per rank
    of the same world size; otherwise rank 0 takes the saved one and the others a seed fixed by
    (seed, rank, step), so every rank still draws its own noise."""
    per_rank = saved.get("rng_ranks")
    if per_rank is not None and len(per_rank) == world:
        set_rng_state(per_rank[rank])
        return
    set_rng_state(saved["rng"])
    if rank:
        seed_everything(rank_seed(seed, rank) + 104_729 * step)
