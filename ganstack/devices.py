"""Device choice, mixed precision and memory format, all from recipe options."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ganstack.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device is 'cuda' but no CUDA device is available", path="training.device",
                        fix="use device: auto or cpu (--set training.device=cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("training.device is 'mps' but MPS is not available", path="training.device",
                        fix="use device: auto or cpu")
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None: mixed precision runs on CUDA only."""
    if device.type != "cuda" or amp == "off":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
