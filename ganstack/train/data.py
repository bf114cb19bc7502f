"""The training data: a resumable per-epoch order, the loader of one epoch, batches on the device."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ganstack.interfaces import EpochAware


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, block, epoch), started at any batch: resumable mid-epoch.

    Under torchrun each rank takes every ``world``-th index of the permutation's first
    ``n // world * world`` entries (equal shares): the ``n % world`` left out change every epoch.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.total = n
        self.n = n // world
        self.seed = seed
        self.rank, self.world = rank, world
        self.block = self.epoch = self.start = 0

    def set_position(self, block: int, epoch: int, start: int) -> None:
        self.block, self.epoch, self.start = block, epoch, start

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.block * 10_007 + self.epoch)
        perm = torch.randperm(self.total, generator=gen)[: self.n * self.world][self.rank :: self.world]
        return iter(perm[self.start :].tolist())

    def __len__(self) -> int:
        return self.n - self.start


def leave_signals_to_the_main_process(_worker_id: int) -> None:
    """A data-loading worker ignores SIGINT and SIGTERM. A terminal's Ctrl-C and SLURM's SIGTERM reach
    the whole process group: had the workers died of them, the loader would raise in the main process
    instead of the run finishing its step and writing its checkpoint; the main process shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def epoch_loader(dataset: Dataset, *, seed: int, block: int, epoch: int, run_epoch: int, start_batch: int,
                 batch_size: int, rank: int, world: int, num_workers: int, pin_memory: bool) -> DataLoader:
    """The loader of one epoch, from ``start_batch`` on. The dataset learns the epoch (counted over the
    whole run) before the workers start, so each example's crop, flip and caption come from
    (seed, epoch, index): a resumed run draws exactly what the original did, with workers or without.
    The loader's own seeded generator keeps it off the global RNG."""
    if isinstance(dataset, EpochAware):
        dataset.set_epoch(run_epoch)
    sampler = EpochSampler(len(dataset), seed, rank, world)  # type: ignore[arg-type]
    sampler.set_position(block, epoch, start_batch * batch_size)
    generator = torch.Generator().manual_seed(seed * 7919 + block * 104_729 + epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers,
                      pin_memory=pin_memory, generator=generator,
                      worker_init_fn=leave_signals_to_the_main_process if num_workers else None)


def batch_to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """A loader's batch on ``device``; images (4-D tensors) in the training memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def move(x: Any) -> Any:
        if isinstance(x, Tensor):
            if x.dim() == 4:
                return x.to(device, non_blocking=True, memory_format=fmt)
            return x.to(device, non_blocking=True)
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return {k: move(v) for k, v in batch.items()}
