"""training.retain_memory: memory a step frees stays in the process, so the next step does not fault it in.

Judged by what it does to glibc's allocator, not by page-fault counts (which depend on the kernel,
glibc's version and its dynamic thresholds): with it, a 64 MiB tensor is served from the heap
rather than its own ``mmap``, and freeing it leaves the memory mapped (the process's resident size
stays); without it, glibc maps such a block on its own and unmaps it on free. 64 MiB is above
glibc's largest dynamic mmap threshold (32 MiB), so the default behaviour is the same on every glibc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GLIBC, TINY

MIB = 1 << 20

# What glibc's allocator and the kernel say around one 64 MiB tensor's life.
PROBE = """
import ctypes, json, os, sys, torch
from ganstack.build.devices import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
libc = ctypes.CDLL(None)
if hasattr(libc, "mallinfo2"):
    class Info(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in fields]
    libc.mallinfo2.restype = Info
    mallinfo = libc.mallinfo2
else:  # glibc < 2.33: int fields, enough for these sizes
    class Info(ctypes.Structure):
        _fields_ = [(f, ctypes.c_int) for f in fields]
    libc.mallinfo.restype = Info
    mallinfo = libc.mallinfo
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
start = mallinfo()
x = torch.ones(16 << 20)  # 64 MiB of float32, every page touched
held, rss_held = mallinfo(), rss()
del x
freed, rss_freed = mallinfo(), rss()
print(json.dumps({"applied": applied, "rss_drop": rss_held - rss_freed,
                  "mmapped_while_held": held.hblkhd - start.hblkhd, "heap_while_held": held.arena,
                  "heap_after_free": freed.arena, "free_in_heap_after_free": freed.fordblks}))
"""


def _probe(mode: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="retain_memory needs glibc's mallopt")
def test_retained_memory_is_served_from_the_heap_and_kept() -> None:
    retained = _probe("retain")
    assert retained["applied"] is True
    assert retained["mmapped_while_held"] < MIB  # not a block of its own
    assert retained["heap_while_held"] >= 64 * MIB
    assert retained["heap_after_free"] >= 64 * MIB and retained["free_in_heap_after_free"] >= 64 * MIB  # not trimmed
    assert retained["rss_drop"] < 8 * MIB  # the pages stay mapped, ready for the next step


@pytest.mark.skipif(not GLIBC, reason="compares with glibc's default allocator")
def test_without_it_glibc_maps_and_unmaps_the_block() -> None:
    system = _probe("system")
    assert system["applied"] is False
    assert system["mmapped_while_held"] >= 64 * MIB
    assert system["rss_drop"] >= 56 * MIB  # handed back to the kernel: the next step faults it in again


def test_a_cpu_run_records_whether_it_applied(cli, tmp_path: Path) -> None:
    out = tmp_path / "on"
    assert cli("run", TINY, "--out", out, "--max-steps", 1)[0] == 0
    assert json.loads((out / "environment.json").read_text())["retain_memory"] is GLIBC
    off = tmp_path / "off"
    assert cli("run", TINY, "--out", off, "--max-steps", 1, "--set", "training.retain_memory=false")[0] == 0
    assert json.loads((off / "environment.json").read_text())["retain_memory"] is False
