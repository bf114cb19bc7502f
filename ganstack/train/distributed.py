"""Data-parallel training under torchrun: process group, per-component DDP, agreement between ranks.

The same ``ganstack run`` works in one process or many: torchrun sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``, and :func:`setup` joins the group (NCCL on CUDA, gloo on CPU). Rank 0 alone writes
files. Every trainable component is wrapped in its own ``DistributedDataParallel``: one DDP
around G and D together breaks GAN training.
"""

from __future__ import annotations

import gc
import inspect
import os
from datetime import timedelta
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import nn


@attrs.frozen
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # A gloo group for the host's decisions (stop now?) beside NCCL, so asking never waits for the GPU.
    control: Any = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> DistInfo:
    """Join torchrun's process group when launched by it; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    if dist.get_backend() == "nccl":
        info = attrs.evolve(info, control=dist.new_group(backend="gloo"))
    return info


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Each process uses the GPU of its local rank."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def wrap(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around one trainable component (unchanged in one process)."""
    if not info.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # BN statistics stay per rank between steps; newer torch renamed the switch (same meaning here,
    # since every rank starts from the same buffers). Stage-wise schedules leave stages unused.
    buffers = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    return ddp(module, device_ids=ids, find_unused_parameters=True, **buffers)


def agree(flag: bool, info: DistInfo, *, any_rank: bool = True) -> bool:
    """The same decision on every rank: true if any (or, with ``any_rank=False``, every) rank says so.

    A host tensor over the gloo group (the default group on CPU, ``info.control`` beside NCCL): the
    question costs a message between processes, never a wait for queued GPU work."""
    if not info.enabled:
        return flag
    value = torch.tensor(float(flag))
    dist.all_reduce(value, op=dist.ReduceOp.MAX if any_rank else dist.ReduceOp.MIN, group=info.control)
    return bool(value.item())


def any_rank(flag: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """A 0-d bool tensor, true on every rank where it is true on any; decided on the device."""
    if not info.enabled:
        return flag
    value = flag.float()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value > 0


def mean_across_ranks(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Average logged loss terms over ranks (every rank must call this at the same step)."""
    if not info.enabled or not values:
        return values
    names = sorted(values)
    stacked = torch.stack([values[n].float() for n in names])
    dist.all_reduce(stacked)
    return {n: v / info.world_size for n, v in zip(names, stacked, strict=True)}


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (over the host-side group)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj, group=info.control)
    return out


def replicas_in_sync(module: nn.Module, info: DistInfo, device: torch.device) -> bool:
    """Whether every rank holds the same parameters (a float64 checksum per tensor, compared)."""
    if not info.enabled:
        return True
    sums = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(device)
    gathered = [torch.empty_like(sums) for _ in range(info.world_size)]
    dist.all_gather(gathered, sums)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def unwrap(module: nn.Module) -> nn.Module:
    """The component inside a ``DistributedDataParallel`` wrapper (itself when unwrapped)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def teardown(info: DistInfo) -> None:
    """Leave the group together: a rank that destroys it while a peer still writes its checkpoint,
    or whose DDP wrappers outlive it into interpreter shutdown, can abort in gloo's threads."""
    if info.enabled and dist.is_initialized():
        gc.collect()  # wrappers caught in reference cycles go now, not at interpreter exit
        dist.barrier()
        dist.destroy_process_group()
