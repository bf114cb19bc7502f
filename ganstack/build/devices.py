"""Device choice, mixed precision, memory format and host memory retention, all from recipe options."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

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
    """The autocast dtype, or None: bf16 or fp16 on CUDA, bf16 on CPU (where oneDNN runs it natively
    on AVX512-BF16 or AMX: twice the fp32 conv rate), nothing elsewhere. ``auto`` is bf16 only
    where the hardware computes it natively (a CUDA device with bf16, a CPU with AVX512-BF16 or AMX):
    elsewhere bf16 is emulated and slower than fp32, so ``auto`` trains in fp32 there."""
    if amp == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else (
            device.type == "cpu" and cpu_computes_bf16())
        return torch.bfloat16 if native else None
    if amp == "bf16" and device.type in ("cuda", "cpu"):
        return torch.bfloat16
    if amp == "fp16" and device.type == "cuda":
        return torch.float16
    return None


@functools.cache
def cpu_computes_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has bf16 instructions (x86's AVX512-BF16 or AMX), read from Linux's cpuinfo;
    False where it cannot be read (another system: ``amp: bf16`` still asks for it explicitly)."""
    try:
        info = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    flags = {word for line in info.splitlines() if line.startswith("flags") for word in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4


def retain_freed_memory() -> bool:
    """Keep memory that tensors free inside the process; whether it applied (glibc on Linux only).

    glibc returns large blocks to the kernel when they are freed (each is its own ``mmap``, and the
    heap's top is trimmed), so every CPU training step faults its activations back in, page by page
    (without it, the paper's steps take 16-26% longer on 2 cores). Serving every size from the heap and never
    trimming it removes those faults; the process then holds on to its peak memory until it exits.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # glibc reads the trim threshold as a size_t, so -1 is its largest value: never trim.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


def flush_denormals(device: torch.device) -> bool:
    """On CPU, compute with subnormal floats flushed to zero; whether it applied.

    Values below float32's smallest normal (1e-38) change nothing a GAN learns, but x86 CPUs handle
    them in microcode, 10-20x slower than normal numbers: a step whose backward pass meets a few of
    them ran 1.6x longer on the quickstart (measured on 2 AMD EPYC cores). It is the process's
    setting, set once by the trainer, and the same on resume, so runs stay bit-exact.
    """
    return device.type == "cpu" and bool(torch.set_flush_denormal(True))


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
