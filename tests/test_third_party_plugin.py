"""A plugin package written only from docs/writing-plugins.md installs, lists and trains."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```[a-z]*\n(?P<body>.*?)```", re.S)


def package_from_doc(dest: Path) -> Path:
    """Write every file the guide shows (marked `<!-- file: PATH -->`) under ``dest``."""
    blocks = FILE_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "the guide lost its file blocks"
    for rel, body in blocks:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    return dest / "ganstack-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("plugin")
    project = package_from_doc(work)
    site = work / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--quiet", "--target", str(site), str(project)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "GANSTACK_STRICT_PLUGINS": "1", "COLUMNS": "200"}
    return project, env


def test_installed_plugin_is_listed(installed: tuple[Path, dict[str, str]]) -> None:
    _project, env = installed
    proc = subprocess.run([sys.executable, "-m", "ganstack", "plugins", "--json"], capture_output=True,
                          text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    mine = {(c["kind"], c["name"]): c for c in json.loads(proc.stdout)["components"] if c["plugin"] == "example"}
    assert set(mine) == {("conditioner", "fixed-noise"), ("loss", "feature-matching")}
    assert mine[("loss", "feature-matching")]["distribution"] == "ganstack-example"
    assert mine[("loss", "feature-matching")]["version"] == "0.1.0"


def test_installed_plugin_trains_in_a_recipe(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    project, env = installed
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "ganstack", "run", str(project / "recipes" / "example_shapes.yaml"),
                           "--max-steps", "2", "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    assert lines[-1]["stage1/feature_matching"] >= 0
    assert "stage1/kl" in lines[-1] and "stage1/d_real" in lines[-1]
    assert (out / "checkpoints" / "last.pt").is_file()
