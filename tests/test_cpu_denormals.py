"""On CPU the trainer computes with subnormal floats flushed to zero (a 1.6x slower quickstart step
without it), and says so in environment.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TINY

# In a fresh process: a subnormal survives arithmetic before the trainer is built, and not after.
PROBE = """
import json, sys, torch
from pathlib import Path
from ganstack.recipe.resolve import load_recipe
from ganstack.train.trainer import Trainer
tiny = torch.tensor([1e-39])
before = float(tiny * 1.0)
Trainer(load_recipe(sys.argv[1]), Path(sys.argv[2]), report=lambda *a: None)
print(json.dumps({"before": before, "after": float(tiny * 1.0)}))
"""


def test_a_cpu_run_flushes_subnormals_and_records_it(tmp_path: Path, cli) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(TINY), str(tmp_path / "probe")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    values = json.loads(proc.stdout.strip().splitlines()[-1])
    assert values["before"] > 0 and values["after"] == 0.0
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 1)[0] == 0
    assert json.loads((out / "environment.json").read_text())["flush_denormals"] is True
