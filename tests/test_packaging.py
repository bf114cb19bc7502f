"""pip install, not only a clone: a wheel built from the repository carries the shipped recipes, and an
installed ganstack runs one by name and resolves `base:` on one, from an empty folder far from any
checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import write

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "dataset.train_size=24", "--set", "dataset.test_size=8", "--set", "dataset.holdout_size=8",
         "--set", "training.batch_size=4", "--set", "text_encoder.dim=16", "--set", "text_encoder.max_vocab=64",
         "--set", "stages.0.generator.ngf=4", "--set", "stages.1.generator.ngf=4",
         "--set", "stages.0.discriminator.ndf=4", "--set", "stages.1.discriminator.ndf=4",
         "--set", "training.ema=null", "--set", "training.device=cpu", "--set", "output.sample_count=2",
         "--set", "output.log_every=1"]


def build_wheel(dest: Path) -> Path:
    """A wheel of the repository, built from a copy so no earlier build folder can supply files."""
    source = dest / "source"
    top_level = {".git", ".venv", "build", "dist", "runs", "ganstack.egg-info", ".ganstack-cache"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".pt")}
        return skip | (top_level & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, source, ignore=ignore)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "-w", str(dest), str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = dest.glob("ganstack-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The wheel installed into its own folder; an environment where only that copy is importable.

    ``python -S`` skips the .pth files, so the editable install of this checkout (a .pth and a finder in
    site-packages) cannot shadow the wheel; site-packages comes after the wheel's folder on the path
    for torch and the other dependencies, and the wheel's dist-info, first on the path, gives the entry
    points."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(work / "dist")
    site = work / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                           "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = [str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": os.pathsep.join(path),
            "COLUMNS": "200", "GANSTACK_STRICT_PLUGINS": "1", "SITE": str(site)}


def ganstack(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-m", "ganstack", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_the_wheel_carries_every_shipped_recipe(tmp_path: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    shipped = {p.relative_to(ROOT / "recipes").as_posix() for p in (ROOT / "recipes").rglob("*.yaml")}
    assert "shapes_quickstart.yaml" in shipped and "ablations/no_ca.yaml" in shipped
    assert {n.removeprefix("ganstack/shipped_recipes/") for n in names if n.startswith("ganstack/shipped_recipes/")} \
        == shipped


def test_installed_copy_is_the_one_that_runs(installed: dict[str, str], tmp_path: Path) -> None:
    code = ("import ganstack, ganstack_defaults, importlib.metadata as m; "
            "print(ganstack.__file__); print(ganstack_defaults.__file__); "
            "print(sorted({ep.dist._path.as_posix() for ep in m.entry_points(group='ganstack')}))")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=installed,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    site = Path(installed["SITE"]).as_posix()
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(site) and lines[1].startswith(site), proc.stdout
    assert all(p.startswith(site) for p in json.loads(lines[2].replace("'", '"'))), proc.stdout


def test_installed_ganstack_lists_and_runs_a_shipped_recipe_by_name(installed: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    listing = ganstack(installed, empty, "recipes", "--json")
    assert listing.returncode == 0, listing.stderr
    names = {r["name"]: r["description"] for r in json.loads(listing.stdout)}
    assert names["shapes_quickstart"].startswith("two-stage StackGAN on synthetic shapes")
    assert names["ablations/no_ca"].startswith("Ablation: both stages without Conditioning Augmentation")
    proc = ganstack(installed, empty, "run", "shapes_quickstart", "--max-steps", "2", "--out", "run", *SMALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (empty / "run" / "checkpoints" / "last.pt").is_file()
    assert len((empty / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    again = ganstack(installed, empty, "check", "shapes_ca.yaml", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["name"] == "shapes_ca"


def test_a_recipe_outside_any_checkout_inherits_a_shipped_one(installed: dict[str, str], tmp_path: Path) -> None:
    mine = write(tmp_path / "mine" / "my_shapes.yaml",
                 "base: shapes_quickstart.yaml\nname: my_shapes\ntraining: {batch_size: 4}\n")
    proc = ganstack(installed, tmp_path, "check", str(mine), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["name"] == "my_shapes" and data["training"]["batch_size"] == 4
    assert data["stages"][0]["discriminator"]["type"] == "projection"  # from the shipped quickstart
    missing = write(tmp_path / "mine" / "bad.yaml", "base: no_such_recipe.yaml\n")
    proc = ganstack(installed, tmp_path, "check", str(missing))
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "base recipe 'no_such_recipe.yaml' not found" in message
    assert "the shipped recipes (`ganstack recipes`)" in message
