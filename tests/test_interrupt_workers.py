"""Ctrl-C at a terminal and SLURM's SIGTERM reach every process of the job, the data-loading workers
too; a run with workers must still stop as one without: finish the step, write the checkpoint, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_stops_a_run_with_workers_cleanly(tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    # a session of its own: the signal goes to the run and its workers, as a terminal or scancel sends it
    proc = subprocess.Popen([sys.executable, "-m", "ganstack", "run", str(TINY), "--out", str(run), "--set",
                             "training.epochs=50", "--set", "training.num_workers=2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=os.getcwd(), start_new_session=True,
                            env={**os.environ, "COLUMNS": "200"})
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (
            log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in output, output
    assert f"{signal.Signals(sig).name} received" in output
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["resumable"] is True and ckpt["position"]["step"] >= 2
