"""The speed benchmark runs end to end at tiny sizes and writes every figure its docs table reads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP_KEYS = {
    "recipe",
    "stages",
    "active_stages",
    "batch",
    "resolution",
    "seconds_per_step",
    "seconds",
    "images_per_s",
    "peak_memory_mb",
    "flops_per_step",
    "achieved_gflops",
    "fraction_of_conv",
    "loadavg_1min",
}


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_speed_quick_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "speed.py"),
            "--quick",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
        cwd=os.getcwd(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # No wall-clock bound: a shared CI machine may be busy; the content is what is checked.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))

    assert report["quick"] is True
    env = report["environment"]
    assert env["device"] == "cpu" and env["threads"] >= 1 and len(env["loadavg_start"]) == 3
    machine = report["machine"]
    assert machine["conv_attainable_gflops"] == max(machine["conv_gflops"].values())
    assert _positive(machine["matmul_gflops"])

    steps = [*report["training"].values(), *report["growth"]["by_stages"], *report["growth"]["by_batch"]]
    for step in steps:
        assert STEP_KEYS <= step.keys()
        assert all(_positive(step[k]) for k in ("seconds_per_step", "images_per_s", "flops_per_step"))
        assert step["fraction_of_conv"] == step["achieved_gflops"] / machine["conv_attainable_gflops"]
    stage1, stage2 = report["training"]["paper_stage1"], report["training"]["paper_stage2"]
    assert (stage1["active_stages"], stage1["resolution"]) == ([1], 64)
    assert (stage2["active_stages"], stage2["resolution"]) == ([2], 256)
    assert [s["stages"] for s in report["growth"]["by_stages"]] == [1, 2, 3]
    # More stages and bigger batches cost more work: the counted FLOPs must grow.
    flops = [s["flops_per_step"] for s in report["growth"]["by_stages"]]
    assert flops == sorted(flops) and len(set(flops)) == 3
    by_batch = report["growth"]["by_batch"]
    assert (
        by_batch[0]["batch"] < by_batch[-1]["batch"]
        and by_batch[0]["flops_per_step"] < by_batch[-1]["flops_per_step"]
    )

    assert {g["resolution"] for g in report["generation"].values()} == {64, 256}
    loader = report["loader"]
    assert loader["ratio"] == loader["examples_per_s"] / loader["step_examples_per_s"]
    for name in ("stage1_fraction_of_conv", "loader_ratio"):
        target = report["targets"][name]
        assert target["met"] == (target["value"] >= target["target"])
