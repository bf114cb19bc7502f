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
    register("conditioner", "shared-ca", build_ca, options=CAOptions, summary="twin's CA")
"""

OTHER_SHARED = DUPLICATE_CA.replace("another CA", "a third CA").replace("twin's CA", "other's CA")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    fake_distribution(site, "ganstack-broken", "ganstack_broken", "raise RuntimeError('boom at import')\n",
                      entry_name="broken")
    fake_distribution(site, "ganstack-twin", "ganstack_twin", DUPLICATE_CA, entry_name="twin")
    fake_distribution(site, "ganstack-other", "ganstack_other", OTHER_SHARED, entry_name="other")
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
                     "importer"}  # the default plugins register importers (stackgan-pytorch, ...)
    assert all(c["distribution"] == "ganstack" for c in data["components"] if c["plugin"] not in ("twin", "other"))
    assert "plugin 'broken' failed to load" in proc.stderr  # the warning names it


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path) -> None:
    proc = run_cli("plugins", site=site, GANSTACK_STRICT_PLUGINS="1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "plugin 'broken' (ganstack-broken) failed to load" in " ".join(proc.stderr.split())


def test_disabled_plugins_are_not_loaded(site: Path) -> None:
    proc = run_cli("plugins", "--json", site=site, GANSTACK_DISABLE_PLUGINS="broken,twin,other",
                   GANSTACK_STRICT_PLUGINS="1")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert plugins["broken"]["disabled"] and not plugins["broken"]["error"]


def test_a_plugin_reusing_a_builtin_name_leaves_shipped_recipes_working(site: Path, tmp_path: Path) -> None:
    # Before #15 this was an error, and one `pip install` made every shipped recipe and run unusable.
    proc = run_cli("check", str(TINY), "--json", site=site)
    assert proc.returncode == 0, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "stages[0].conditioner.type: conditioner 'ca' is registered by more than one plugin" in message
    assert "ganstack 0.1.0" in message and "ganstack-twin 1.2.3" in message and "ganstack-other 1.2.3" in message
    assert "using ganstack's own 'stackgan:ca'" in message and "write 'other:ca' or 'twin:ca'" in message
    assert json.loads(proc.stdout)["stages"][0]["conditioner"]["type"] == "ca"  # check prints it as written
    qualified = write(tmp_path / "q.yaml", TINY.read_text().replace("type: ca,", "type: twin:ca,"))
    proc = run_cli("check", str(qualified), "--json", site=site)
    assert proc.returncode == 0, proc.stderr
    assert "more than one plugin" not in proc.stderr
    assert json.loads(proc.stdout)["stages"][0]["conditioner"]["type"] == "twin:ca"


def test_duplicate_third_party_name_needs_qualifying(site: Path, tmp_path: Path) -> None:
    shared = write(tmp_path / "s.yaml", TINY.read_text().replace("type: ca,", "type: shared-ca,", 1))
    proc = run_cli("check", str(shared), site=site)
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "conditioner 'shared-ca' is registered by more than one plugin" in message
    assert "ganstack-twin 1.2.3" in message and "ganstack-other 1.2.3" in message
    assert "'twin:shared-ca'" in message and "stages[0].conditioner.type" in message
    proc = run_cli("check", str(shared), "--set", "stages.0.conditioner.type=other:shared-ca", site=site)
    assert proc.returncode == 0, proc.stderr


def test_a_qualified_name_whose_plugin_is_gone_says_who_has_it(cli, tmp_path: Path) -> None:
    code, _out, err = cli("check", TINY, "--set", "stages.0.conditioner.type=gone:ca")
    message = " ".join(err.split())
    assert code == 2 and "no plugin 'gone' registers conditioner 'ca'; it is registered by stackgan" in message
    assert "install the plugin 'gone'" in message and "'stackgan:ca'" in message


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


class _Solo:
    """A third-party plugin whose conditioner name only it registers (until a rival comes along)."""

    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        from ganstack_defaults.networks.conditioners import CAOptions, build_ca

        register("conditioner", "solo", build_ca, options=CAOptions, summary="CA under another name")


def test_a_run_records_each_components_plugin_and_resolves_to_it_later(cli, tmp_path: Path) -> None:
    import torch
    import yaml

    out = tmp_path / "run"
    sets = ("--set", "stages.0.conditioner.type=solo", "--set", "stages.0.conditioner.condition_dim=8")
    with registered_plugin(_Solo(), "acme"):
        code, stdout, err = cli("run", TINY, *sets, "--out", out, "--max-steps", "1")
        assert code == 0, stdout + err
    saved = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))
    stored = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["recipe"]
    for recipe in (saved, stored):
        assert recipe["stages"][0]["conditioner"]["type"] == "acme:solo"
        assert recipe["stages"][1]["conditioner"]["type"] == "stackgan:ca"
        assert recipe["text_encoder"]["type"] == "text-encoders:bow" and recipe["dataset"]["type"] == "datasets:shapes"
    # A rival plugin now registers 'solo' too: the bare name is ambiguous, the run is not.
    with registered_plugin(_Solo(), "acme"), registered_plugin(_Solo(), "rival"):
        code, _o, err = cli("check", TINY, *sets)
        assert code == 2 and "conditioner 'solo' is registered by more than one plugin" in " ".join(err.split())
        code, stdout, err = cli("sample", out, "--text", "a red circle", "--out", tmp_path / "s")
        assert code == 0, stdout + err
        code, stdout, err = cli("run", "--resume", out, "--max-steps", "2")
        assert code == 0, stdout + err
    # Without the plugin the run was made with, the message names it and who else has the name.
    with registered_plugin(_Solo(), "rival"):
        code, _o, err = cli("sample", out, "--text", "a red circle", "--out", tmp_path / "s2")
        message = " ".join(err.split())
        assert code == 2 and "stages[0].conditioner.type: no plugin 'acme' registers conditioner 'solo'" in message


class _MuteEncoder:
    """A text encoder that forgets to declare `can_encode_text`, which interfaces.TextEncoder asks for."""

    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        import torch

        class Mute(torch.nn.Module):
            dim = 16
            trainable = False

            def forward(self, batch):  # noqa: ANN001, ANN202
                return torch.zeros(len(batch["caption"]), 16)

        register("text_encoder", "mute", lambda options, ctx: Mute(), summary="no can_encode_text")


def test_a_component_missing_a_declared_attribute_is_refused_by_name(cli) -> None:
    with registered_plugin(_MuteEncoder(), "mute-plugin"):
        code, _out, err = cli("check", TINY, "--params", "--set", "text_encoder=mute")
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert "text_encoder: text encoder 'mute' of plugin mute-plugin does not offer 'can_encode_text'" in message
    assert "ganstack.interfaces.TextEncoder declares" in message
