"""torchrun with two CPU processes (gloo): replicas stay identical, outputs are written once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from conftest import TINY


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_in_sync_and_write_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "ganstack", "run", str(TINY), "--out", str(out), "--max-steps", "4",
           "--set", "training.schedule=joint", "--set", "dataset.train_size=64", "--set", "training.epochs=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=os.getcwd())
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
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
                          capture_output=True, text=True, env=env, timeout=300, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 1 and ckpt["position"]["step"] == 5
    assert (ckpt["position"]["epoch"], ckpt["position"]["batch"]) == (1, 1)
