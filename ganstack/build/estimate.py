"""How big a stack is before it is allocated: parameters per component, from a build on the ``meta`` device.

A width typed one digit too long asks for hundreds of GB. Building every module on ``meta`` costs
no memory, so the size is known before anything is allocated, and a stack that cannot fit is
refused with the estimate and the key path of its largest part instead of crashing (or swapping the
machine to a halt) half-way through ``run``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import attrs
import torch
from torch import nn

from ganstack.errors import RecipeError

BYTES_PER_PARAM = 4  # float32 weights
TRAINING_COPIES = 4  # weights, gradients and Adam's two moments


@attrs.frozen
class StackSize:
    """Parameters of each component of a stack, by key path (``stages[0].generator``)."""

    params: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.params.values())

    def weight_bytes(self) -> int:
        return self.total * BYTES_PER_PARAM

    def training_bytes(self) -> int:
        return self.weight_bytes() * TRAINING_COPIES

    def largest(self) -> tuple[str, int]:
        return max(self.params.items(), key=lambda item: item[1])


def stack_size(components: Iterable[tuple[str, nn.Module]]) -> StackSize:
    """Count the parameters of already built (e.g. ``meta``) modules; shared parameters count once."""
    seen: set[int] = set()
    params: dict[str, int] = {}
    for path, module in components:
        count = 0
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                count += p.numel()
        params[path] = count
    return StackSize(params)


def host_memory() -> int:
    """Physical memory of this machine, or the container's memory limit when that is lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
    for limit in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            value = limit.read_text().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < total:
            total = int(value)
    return total


def device_memory(device: str) -> tuple[int, str]:
    """Memory of the device a recipe trains on (``training.device``) and its name for messages."""
    if device in ("cuda", "auto") and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory), "the GPU"
    return host_memory(), "this machine"


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def require_fits(size: StackSize, *, for_training: bool, device: str, file: str | None) -> None:
    """Refuse a stack whose weights (and, to train, gradients and optimiser state) exceed the memory it
    would live in; the message gives the estimate and names the largest component's key path."""
    host = host_memory()
    needs = [(size.weight_bytes(), host, "this machine", "its weights")]
    if for_training:
        memory, where = device_memory(device)
        needs.append((size.training_bytes(), memory, where, f"training (weights, gradients and Adam's two "
                      f"moments: about {TRAINING_COPIES}x the weights)"))
    for needed, available, where, what in needs:
        if available and needed > available:
            path, largest = size.largest()
            raise RecipeError(
                f"the stack would have {size.total:,} parameters ({size_text(size.weight_bytes())} as float32); "
                f"{what} need about {size_text(needed)}, but {where} has {size_text(available)}. The largest "
                f"part is {path} with {largest:,} parameters", file=file, path=path,
                fix=f"make {path}'s width options smaller (and the other stages' to match); `ganstack check "
                "--params` shows each module's size")
