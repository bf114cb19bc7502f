"""The docs stay true: generated references are current, every option and hook is documented."""

from __future__ import annotations

import functools
import inspect
import re
import types
from pathlib import Path

import pytest

from ganstack import hookspecs
from ganstack.cli.reference import UNDOCUMENTED, cli_page, default_entries, recipes_page

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _hooks() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, f"{hookspecs.PROJECT}_spec")]


def test_recipe_reference_is_current_and_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    page = recipes_page(default_entries())
    assert UNDOCUMENTED not in page, [line for line in page.splitlines() if UNDOCUMENTED in line][:10]
    assert (DOCS / "recipes.md").read_text(encoding="utf-8") == page, \
        "docs/recipes.md is stale: run `python -m ganstack.cli.reference recipes > docs/recipes.md`"


def test_every_registered_default_option_is_in_the_reference() -> None:
    import attrs

    page = (DOCS / "recipes.md").read_text(encoding="utf-8")
    for entry in default_entries():
        kind_part = page.split(f"\n## {entry.kind}\n", 1)[1].split("\n## ", 1)[0]
        section = kind_part.split(f"### `{entry.name}`", 1)
        assert len(section) == 2, f"{entry.kind} '{entry.name}' has no section"
        for field in attrs.fields(entry.options):
            assert f"| `{field.name}` |" in section[1].split("### ", 1)[0], (entry.kind, entry.name, field.name)


def test_cli_reference_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == cli_page(), \
        "docs/cli.md is stale: run `python -m ganstack.cli.reference cli > docs/cli.md`"


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_is_documented(hook: str) -> None:
    assert f"`{hook}(register)`" in (DOCS / "writing-plugins.md").read_text(encoding="utf-8")
    assert f"def {hook}" in (DOCS / "writing-plugins.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_is_called_by_the_loader_with_what_its_spec_promises(hook: str) -> None:
    """A plugin implementing the hook, loaded the way installed plugins are, gets it called exactly
    once with the spec's arguments (a hook the loader forgot would never run)."""
    from ganstack.components.loader import new_state

    names = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    calls: list[dict[str, object]] = []

    def record(**kwargs: object) -> None:
        calls.append(kwargs)

    impl = functools.wraps(getattr(hookspecs, hook))(record)  # the spec's name and signature
    plugin = types.SimpleNamespace(**{hook: hookspecs.hookimpl(impl)})
    info = new_state().add(plugin, "meta-test-plugin")
    assert info.error is None, info.error
    assert len(calls) == 1 and sorted(calls[0]) == sorted(names), calls


def test_a_registering_plugin_is_usable_after_loading() -> None:
    """What register_components promises: a component registered there resolves by kind and name."""
    import attrs

    from ganstack.components.loader import new_state

    @attrs.define(frozen=True)
    class Options:
        width: int = 3

    def factory(options: Options, ctx: object) -> int:
        return options.width

    class Plugin:
        @hookspecs.hookimpl
        def register_components(self, register) -> None:  # noqa: ANN001
            register("loss", "meta-test-loss", factory, options=Options, summary="for the docs meta-test")

    state = new_state()
    assert state.add(Plugin(), "meta-test-plugin").error is None
    entry = state.registry.get("loss", "meta-test-loss")
    assert entry.factory(entry.options(width=5), None) == 5


def test_there_is_at_least_one_hook() -> None:
    assert _hooks() == ["register_components"]


def test_readme_and_docs_links_resolve() -> None:
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_lists_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[test]" && pytest' in readme
    assert 'pip install -e ".[test]"' in ci and "\npytest" in ci
    assert "ganstack run recipes/shapes_quickstart.yaml" in readme


def _module_tables() -> dict[str, list[str]]:
    """docs/architecture.md's module tables: package folder -> the module paths its rows name."""
    page = (DOCS / "architecture.md").read_text(encoding="utf-8").split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[str]] = {}
    for section in page.split("\n### ")[1:]:
        folder = re.match(r"`([^`]+)/`", section).group(1)
        tables[folder] = [f"{folder}/{m}" for m in re.findall(r"^\| `([^`]+\.py)` \|", section, re.M)]
    return tables


def test_architecture_module_table_and_folders_agree() -> None:
    tables = _module_tables()
    listed = [m for modules in tables.values() for m in modules]
    assert listed and all((ROOT / m).is_file() for m in listed), [m for m in listed if not (ROOT / m).is_file()]
    packages = {p.parent.relative_to(ROOT).as_posix() for base in ("ganstack", "plugins/ganstack_defaults")
                for p in (ROOT / base).rglob("__init__.py")}
    folders_named = set(tables) | {m.rsplit("/", 1)[0] for m in listed}
    assert packages - folders_named == set(), "package folders missing from docs/architecture.md"
    modules = {p.relative_to(ROOT).as_posix() for base in ("ganstack", "plugins/ganstack_defaults")
               for p in (ROOT / base).rglob("*.py") if p.name != "__init__.py"}
    assert modules - set(listed) == set(), "modules missing from docs/architecture.md's tables"
    assert {f for f in folders_named if f != "plugins/ganstack_defaults"} <= packages | {"plugins/ganstack_defaults"}


def test_architecture_reading_order_names_real_files_and_fits_a_screen() -> None:
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    order = page.split("\n## Reading order\n", 1)[1].split("\n## ", 1)[0]
    assert len(order.strip().splitlines()) <= 30
    named = re.findall(r"`((?:ganstack|plugins)/[\w/]+(?:\.py|/))`", order)
    assert len(named) >= 8 and all((ROOT / n).exists() for n in named), named
