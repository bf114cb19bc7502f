"""torchrun with two CPU processes (gloo): replicas stay identical, outputs are written once, resume is exact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
SETTINGS = ["--set", "training.schedule=joint", "--set", "dataset.train_size=64", "--set", "training.epochs=3"]


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    """Two processes on this host. ``--standalone`` lets the rendezvous store bind port 0 (the system
    picks a free port, no race with other tests); a lost race on an older torch is retried."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ganstack", *args]
    for _attempt in range(3):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600, cwd=os.getcwd())
        if proc.returncode == 0 or "address already in use" not in (proc.stdout + proc.stderr).lower():
            return proc
    return proc


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dist") / "run"
    proc = torchrun("run", str(TINY), "--out", str(out), "--max-steps", "4", *SETTINGS)
    return out, proc.stdout + proc.stderr if proc.returncode == 0 else f"exit {proc.returncode}\n" + proc.stdout + proc.stderr


def test_two_processes_train_in_sync_and_write_once(four_steps: tuple[Path, str], tmp_path: Path) -> None:
    first, output = four_steps
    assert not output.startswith("exit "), output
    out = tmp_path / "run"
    shutil.copytree(first, out)
    assert "2 processes; replicas in sync: True" in output
    assert output.count("Run max_steps reached at step 4") == 1  # rank 0 alone reports
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]  # written once, not once per process
    env_record = json.loads((out / "environment.json").read_text())
    assert env_record["world_size"] == 2
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["position"]["step"] == 4
    # 64 examples over 2 processes in batches of 8: 4 steps an epoch
    assert ckpt["position"]["batch"] == 4
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    # Resumed by one process: the examples already seen this epoch (4 batches x 8 x 2) are skipped.
    proc = subprocess.run([sys.executable, "-m", "ganstack", "run", "--resume", str(out), "--max-steps", "5"],
                          capture_output=True, text=True, env=ENV, timeout=300, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 1 and ckpt["position"]["step"] == 5
    assert (ckpt["position"]["epoch"], ckpt["position"]["batch"]) == (1, 1)


def test_a_two_process_resume_is_exact_every_rank_drawing_its_own_noise(four_steps: tuple[Path, str],
                                                                          tmp_path: Path) -> None:
    full, output = four_steps
    assert not output.startswith("exit "), output
    part = tmp_path / "part"
    proc = torchrun("run", str(TINY), "--out", str(part), "--max-steps", "2", *SETTINGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(torch.load(part / "checkpoints" / "last.pt", weights_only=True)["rng_ranks"]) == 2
    proc = torchrun("run", "--resume", str(part), "--max-steps", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = weights(full), weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
