"""FLOPs a step runs, and the FLOP/s this machine attains on the ops that dominate it.

Both sides use torch's convention (a multiply-add is 2 FLOPs, convolutions and matmuls only), so a
step's achieved rate divides cleanly by the machine's measured rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> dict[str, int]:
    """Forward and backward conv/matmul FLOPs of everything ``fn`` runs, by op (``convolution_backward``...).

    Counted as dispatched, so exact for what ran: frozen parts' skipped gradients are not counted.
    """
    with FlopCounterMode(display=False) as counter:
        fn()
    counts = counter.get_flop_counts().get("Global", {})
    return {str(op).removeprefix("aten."): int(n) for op, n in counts.items()}


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock time covers the work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_gflops(fn: Callable[[], object], flops: float, device: torch.device, repeats: int) -> float:
    """GFLOP/s of the fastest of ``repeats`` timings of ``fn``, after a warm-up call.

    Each timing repeats ``fn`` until it covers about 50 ms, so that fast GPU kernels are not
    measured as launch overhead. The best (not the median) is the machine's attainable rate.
    """
    fn()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    inner = max(1, math.ceil(0.05 / max(time.perf_counter() - start, 1e-9)))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return flops / best / 1e9


@torch.no_grad()
def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Attainable rate of an ``n x n`` by ``n x n`` matrix product."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return best_gflops(lambda: torch.mm(a, b), 2.0 * n**3, device, repeats)


@torch.no_grad()
def conv_gflops(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int, int], out_channels: int,
                channels_last: bool, repeats: int) -> float:
    """Attainable rate of a padded 3x3 convolution of a ``[B, C, H, W]`` input to ``out_channels``."""
    batch, channels, height, width = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(out_channels, channels, 3, 3, device=device, dtype=dtype).contiguous(memory_format=fmt)
    flops = 2.0 * batch * out_channels * height * width * channels * 9
    return best_gflops(lambda: F.conv2d(x, w, padding=1), flops, device, repeats)


__all__ = ["best_gflops", "conv_gflops", "count_flops", "matmul_gflops", "synchronize"]
