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
    assert len(blocks) >= 10, "the guide lost its file blocks"
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
    assert set(mine) == {("conditioner", "fixed-noise"), ("discriminator", "pooled-projection"),
                         ("text_encoder", "tiny-words"), ("loss", "feature-matching"), ("loss", "wrong-class")}
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
    # The recipe inherits the shipped quickstart from outside any checkout: its sample captions came along.
    saved = (out / "recipe.yaml").read_text(encoding="utf-8")
    assert "a large yellow square on a purple background" in saved and "type: example:tiny-words" in saved
    # tiny-words' vocabulary travelled in the checkpoint (get_extra_state), so new sentences read as trained.
    import torch

    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    vocabulary = state["text_encoder._extra_state"]["vocabulary"]
    assert {"red", "circle", "background"} <= set(vocabulary) and len(vocabulary) <= 64
    sample = subprocess.run([sys.executable, "-m", "ganstack", "sample", str(out), "--text", "a red circle",
                             "--out", str(tmp_path / "drawn")], capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)
    assert sample.returncode == 0, sample.stdout + sample.stderr
    assert (tmp_path / "drawn" / "contact_sheet.png").is_file()


def test_the_guides_own_tests_pass(installed: tuple[Path, dict[str, str]]) -> None:
    project, env = installed
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_show_prints_the_plugins_option_docs(installed: tuple[Path, dict[str, str]]) -> None:
    _project, env = installed
    proc = subprocess.run([sys.executable, "-m", "ganstack", "plugins", "show", "tiny-words"], capture_output=True,
                          text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "text_encoder 'tiny-words'" in proc.stdout and "distribution:  ganstack-example 0.1.0" in proc.stdout
    assert "      default:  256\n      checks:   >= 1\n      doc:      vocabulary size:" in proc.stdout


def test_an_error_names_the_recipe_and_the_components_place(installed: tuple[Path, dict[str, str]],
                                                            tmp_path: Path) -> None:
    project, env = installed
    proc = subprocess.run([sys.executable, "-m", "ganstack", "check", str(project / "recipes" / "example_shapes.yaml"),
                           "--params", "--set", "stages.0.conditioner.condition_dim=4096"], capture_output=True,
                          text=True, env=env, timeout=180, cwd=tmp_path)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("example_shapes.yaml: stages[0].conditioner.condition_dim: condition_dim 4096 is more than 8 times the "
            "text embedding's 16. Fix: use at most 128") in message


def test_a_loss_that_requests_wrong_class_images_gets_them(installed: tuple[Path, dict[str, str]],
                                                           tmp_path: Path) -> None:
    project, env = installed
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "ganstack", "run", str(project / "recipes" / "example_wrong_class.yaml"),
                           "--max-steps", "2", "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["stage1/wrong_class_hinge"] >= 0 and "stage1/d_real" in last
