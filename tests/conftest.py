"""Shared fixtures: a tiny recipe on the synthetic shapes data, and a CLI runner."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

from ganstack.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "recipes" / "tiny_shapes.yaml"
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"  # training.retain_memory applies


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in a fresh folder sharing one data cache, so tests never write into the repo."""
    cache = tmp_path_factory.getbasetemp() / "shared-cache"
    cache.mkdir(exist_ok=True)
    work = tmp_path_factory.mktemp("cwd")
    (work / ".ganstack-cache").symlink_to(cache, target_is_directory=True)
    monkeypatch.chdir(work)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``ganstack ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def tiny_recipe() -> Path:
    return TINY


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


os.environ.setdefault("COLUMNS", "200")


class MeanMetric:
    """A plugin with one metric, ``mean-brightness``: the last stage's mean pixel over test captions."""

    from ganstack.hookspecs import hookimpl

    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        class Mean:
            def evaluate(self, source, n):  # noqa: ANN001
                captions = [source.dataset("test")[i]["caption"] for i in range(n)]
                return {"brightness": float(source.generate(captions)[-1].mean())}

        register("metric", "mean-brightness", lambda options, ctx: Mean())
