"""Plugins load one by one: a broken one is reported by name, strict mode makes it fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from conftest import TINY, write
from ganstack.hookspecs import hookimpl
from ganstack.testing import registered_plugin


def fake_distribution(site: Path, dist: str, module: str, source: str, entry_name: str | None = None) -> None:
    """An installed distribution (dist-info on a path entry) whose entry point names ``module``."""
    write(site / f"{module}.py", source)
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    write(info / "entry_points.txt", f"[ganstack]\n{entry_name or dist} = {module}\n")


def run_cli(*args: str, site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "ganstack", *args], capture_output=True, text=True,
                          env=environ, timeout=180)


DUPLICATE_CA = """
import attrs
from ganstack.hookspecs import hookimpl

@hookimpl
def register_components(register):
    from ganstack_defaults.networks.conditioners import build_ca, CAOptions
    register("conditioner", "ca", build_ca, options=CAOptions, summary="another CA")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    fake_distribution(site, "ganstack-broken", "ganstack_broken", "raise RuntimeError('boom at import')\n",
                      entry_name="broken")
    fake_distribution(site, "ganstack-twin", "ganstack_twin", DUPLICATE_CA, entry_name="twin")
    return site


def test_broken_plugin_does_not_break_listing(site: Path) -> None:
    proc = run_cli("plugins", "--json", site=site)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    failed = {p["name"]: p for p in data["plugins"] if p["error"]}
    assert "RuntimeError: boom at import" in failed["broken"]["error"]
    assert failed["broken"]["distribution"] == "ganstack-broken"
    kinds = {c["kind"] for c in data["components"]}
    assert kinds == {"text_encoder", "conditioner", "generator_stage", "discriminator", "loss", "dataset", "metric",
                     "importer"}
    assert all(c["distribution"] == "ganstack" for c in data["components"] if c["plugin"] != "twin")
    assert "plugin 'broken' failed to load" in proc.stderr  # the warning names it


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path) -> None:
    proc = run_cli("plugins", site=site, GANSTACK_STRICT_PLUGINS="1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "plugin 'broken' (ganstack-broken) failed to load" in " ".join(proc.stderr.split())


def test_disabled_plugins_are_not_loaded(site: Path) -> None:
    proc = run_cli("plugins", "--json", site=site, GANSTACK_DISABLE_PLUGINS="broken,twin",
                   GANSTACK_STRICT_PLUGINS="1")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert plugins["broken"]["disabled"] and not plugins["broken"]["error"]


def test_duplicate_name_needs_qualifying(site: Path, tmp_path: Path) -> None:
    proc = run_cli("check", str(TINY), site=site)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "conditioner 'ca' is registered by more than one plugin" in message
    assert "ganstack 0.1.0" in message and "ganstack-twin 1.2.3" in message
    assert "'stackgan:ca'" in message and "stages[0].conditioner.type" in message
    qualified = write(tmp_path / "q.yaml", TINY.read_text().replace("type: ca,", "type: twin:ca,"))
    proc = run_cli("check", str(qualified), site=site)
    assert proc.returncode == 0, proc.stderr


@attrs.define(frozen=True)
class _EchoOptions:
    gain: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))


class _Plugin:
    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        register("loss", "echo", lambda options, ctx: options, options=_EchoOptions, summary="test")


def test_registered_plugin_context_manager() -> None:
    from ganstack.components.loader import load_plugins

    registry = load_plugins().registry
    with registered_plugin(_Plugin(), "echo-plugin") as info:
        assert info.error is None
        entry = registry.get("loss", "echo")
        assert entry.plugin == "echo-plugin" and entry.summary == "test"
    assert "echo" not in registry.names("loss")


def test_plugin_failing_in_its_hook_is_isolated() -> None:
    class Bad:
        @hookimpl
        def register_components(self, register) -> None:  # noqa: ANN001
            register("loss", "half", lambda o, c: None)
            raise ValueError("oops")

    from ganstack.components.loader import PluginWarning, load_plugins

    with pytest.warns(PluginWarning, match="'bad' failed to load"), registered_plugin(Bad(), "bad") as info:
        assert "ValueError: oops" in info.error
        assert "half" not in load_plugins().registry.names("loss")  # partial registrations removed


def test_unknown_kind_is_reported() -> None:
    class WrongKind:
        @hookimpl
        def register_components(self, register) -> None:  # noqa: ANN001
            register("generator", "g", lambda o, c: None)

    from ganstack.components.loader import PluginWarning

    with pytest.warns(PluginWarning), registered_plugin(WrongKind(), "wrongkind") as info:
        assert "unknown kind 'generator'" in info.error and "generator_stage" in info.error
