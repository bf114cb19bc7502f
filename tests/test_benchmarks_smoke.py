"""The speed benchmark runs end to end at tiny sizes and writes every figure its docs table reads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP_KEYS = {"recipe", "stages", "active_stages", "batch", "resolution", "seconds_per_step", "seconds",
             "images_per_s", "peak_memory_mb", "flops_per_step", "flops_by_op", "achieved_gflops",
             "conv_gflops_same_process", "fraction_of_conv", "loadavg_1min"}


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_speed_quick_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    # One thread: with one per core, a busy shared machine (CI, parallel tests) makes each op wait for
    # a descheduled thread and the run several times slower.
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--device", "cpu",
               "--threads", "1", "--json", str(out)]
    # The timeout only catches a hang: the work is fixed (tiny sizes, one iteration), its wall time is
    # not; 120 s was exceeded on a 2-core machine kept busy by other processes (as CI's can be).
    proc = subprocess.run(command, cwd=os.getcwd(), capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "training step" in proc.stdout and "target loader_ratio" in proc.stdout
    report = json.loads(out.read_text(encoding="utf-8"))

    assert report["quick"] is True
    env = report["environment"]
    assert env["device"] == "cpu" and env["threads"] == 1 and len(env["loadavg_start"]) == 3
    assert env["busy_at_start"] == (env["loadavg_start"][0] > env["cpu_count"] - 1 + 0.75)
    machine = report["machine"]
    assert _positive(machine["matmul_gflops"])
    # Attainable is the best conv figure measured anywhere in the run, never below the start/end ones.
    assert machine["conv_attainable_gflops"] == max(machine["conv_gflops_samples"])
    assert machine["conv_attainable_gflops"] >= max(machine["conv_gflops"].values())

    steps = [*report["training"].values(), *report["growth"]["by_stages"], *report["growth"]["by_batch"]]
    for step in steps:
        assert STEP_KEYS <= step.keys()
        assert all(_positive(step[k]) for k in ("seconds_per_step", "images_per_s", "flops_per_step"))
        assert step["flops_per_step"] == sum(step["flops_by_op"].values())
        assert step["fraction_of_conv"] == step["achieved_gflops"] / machine["conv_attainable_gflops"]
    stage1, stage2 = report["training"]["paper_stage1"], report["training"]["paper_stage2"]
    assert (stage1["active_stages"], stage1["resolution"]) == ([1], 64)
    assert (stage2["active_stages"], stage2["resolution"]) == ([2], 256)
    assert "convolution_backward" in stage1["flops_by_op"]
    assert [s["stages"] for s in report["growth"]["by_stages"]] == [1, 2, 3]
    # More stages and bigger batches cost more work: the counted FLOPs must grow.
    flops = [s["flops_per_step"] for s in report["growth"]["by_stages"]]
    assert flops == sorted(flops) and len(set(flops)) == 3
    small, large = report["growth"]["by_batch"][0], report["growth"]["by_batch"][-1]
    assert small["batch"] < large["batch"] and small["flops_per_step"] < large["flops_per_step"]

    assert {g["resolution"] for g in report["generation"].values()} == {64, 256}
    loader = report["loader"]
    assert loader["ratio"] == loader["examples_per_s"] / loader["step_examples_per_s"]
    for name in ("stage1_fraction_of_conv", "loader_ratio"):
        target = report["targets"][name]
        assert target["met"] == (target["value"] >= target["target"])
