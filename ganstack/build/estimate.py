"""How big a stack is before it is allocated: parameters per component and a batch's activations,
from a build and a forward pass on the ``meta`` device.

A width typed one digit too long asks for hundreds of GB. Building every module on ``meta`` costs
no memory, so the size is known before anything is allocated, and a stack that cannot fit is
refused with the estimate and the key path of its largest part instead of crashing (or swapping the
machine to a halt) half-way through ``run``. Every estimate is a lower bound, so nothing that
would fit is turned away.
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
OPTIMISER_COPIES = 3  # a trained weight also has its gradient and Adam's two moments


@attrs.frozen
class StackSize:
    """Parameters of each component of a stack, by key path (``stages[0].generator``), and per stage
    (``stages[0]``) a lower bound on the bytes one training batch of ``batch`` (or of the stage's own
    size in ``batches``) keeps for the backward pass (empty when a module could not run on ``meta``).

    Training needs at least every weight, the gradient and Adam moments of the largest stage (stages
    may train one at a time) and the activations of the largest stage: a lower bound, so that a
    refusal never turns away a stack that would fit, while a width typed a digit too long still is.
    """

    params: dict[str, int]
    activations: dict[str, int] = attrs.field(factory=dict)
    batch: int = 0
    batches: dict[str, int] = attrs.Factory(dict)

    @property
    def total(self) -> int:
        return sum(self.params.values())

    def weight_bytes(self) -> int:
        return self.total * BYTES_PER_PARAM

    def stage_params(self) -> dict[str, int]:
        stages: dict[str, int] = {}
        for path, count in self.params.items():
            if path.startswith("stages["):
                stage = path.split(".", 1)[0]
                stages[stage] = stages.get(stage, 0) + count
        return stages

    def optimiser_bytes(self) -> int:
        return max(self.stage_params().values(), default=0) * BYTES_PER_PARAM * OPTIMISER_COPIES

    def activation_bytes(self) -> int:
        return max(self.activations.values(), default=0)

    def training_bytes(self) -> int:
        return self.weight_bytes() + self.optimiser_bytes() + self.activation_bytes()

    def largest(self) -> tuple[str, int]:
        return max(self.params.items(), key=lambda item: item[1])


def stack_size(components: Iterable[tuple[str, nn.Module]], activations: dict[str, int] | None = None,
               batch: int = 0, batches: dict[str, int] | None = None) -> StackSize:
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
    return StackSize(params, activations or {}, batch, dict(batches or {}))


def saved_input_bytes(modules: Iterable[nn.Module]) -> tuple[list[int], list[torch.utils.hooks.RemovableHandle]]:
    """A one-item counter of the bytes of the inputs that the modules with weights among ``modules`` see
    while hooked, and the hooks to remove afterwards. Autograd must keep each such input to compute its
    weight's gradient, so this is a lower bound on what a forward pass keeps for the backward pass:
    a refusal on it never turns away a stack that would fit."""
    counter = [0]

    def hook(_module: nn.Module, inputs: object, _output: object) -> None:
        stack = [inputs]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                counter[0] += item.numel() * item.element_size()
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
            elif attrs.has(type(item)):
                stack.extend(getattr(item, f.name) for f in attrs.fields(type(item)))

    weighted = {id(m): m for top in modules for m in top.modules()
                if any(p.requires_grad for p in m.parameters(recurse=False))}
    handles = [m.register_forward_hook(hook) for m in weighted.values()]
    return counter, handles


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
    """Refuse a stack whose weights (and, to train, gradients, optimiser state and one batch's
    activations) exceed the memory they would live in; the message gives the estimate and the key path
    of the largest part."""
    host = host_memory()
    if host and size.weight_bytes() > host:
        _refuse_weights(size, f"its weights need {size_text(size.weight_bytes())}", "this machine", host, file)
    if not for_training:
        return
    memory, where = device_memory(device)
    needed = size.training_bytes()
    if not memory or needed <= memory:
        return
    what = (f"training needs at least {size_text(needed)} (the weights, the gradients and Adam's moments of the "
            f"largest stage: {size_text(size.optimiser_bytes())}, and one batch's activations: "
            f"{size_text(size.activation_bytes())})")
    if size.activation_bytes() > size.weight_bytes() + size.optimiser_bytes():
        path = max(size.activations, key=size.activations.__getitem__)
        raise RecipeError(
            f"{what}, but {where} has {size_text(memory)}; most of it is what one batch of "
            f"{size.batches.get(path, size.batch)} keeps "
            f"for the backward pass in {path}", file=file, path=path,
            fix="lower training.batch_size (or this stage's batch_size), or this stage's resolution or widths; "
            "`ganstack check --params` "
            "shows each module's output shape")
    _refuse_weights(size, what, where, memory, file)


def _refuse_weights(size: StackSize, what: str, where: str, available: int, file: str | None) -> None:
    path, largest = size.largest()
    raise RecipeError(
        f"the stack would have {size.total:,} parameters ({size_text(size.weight_bytes())} as float32); {what}, "
        f"but {where} has {size_text(available)}. The largest part is {path} with {largest:,} parameters",
        file=file, path=path, fix=f"make {path}'s width options smaller (and the other stages' to match); "
        "`ganstack check --params` shows each module's size")
