"""One direction of imports: no module imports one that imports it back, each layer of the core imports
only the layers below it, the core never imports a plugin, and commands that do not train never load
the trainer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY
from import_graph import ROOT, cycles, function_imports, import_graph, module_files, module_imports, reachable

# The core's layers, lowest first: a module may import its own layer and those below it.
LAYERS = ("foundation", "components", "recipe", "build", "run_folder", "sample", "evaluate", "train", "cli")
FOUNDATIONS = {"errors", "atomic", "reading", "safe_pickle", "interfaces", "hookspecs"}
ABOVE_ALL = {"testing", "__main__"}  # tools for plugin tests and `python -m`; nothing in the core imports them
MAIN = ROOT / "ganstack" / "cli" / "main.py"
NOT_TRAINING = ("check", "plugins", "recipes", "sample", "eval", "data", "import")
TRAINING = ("run", "pretrain-encoder")


def layer(module: str) -> int:
    part = module.split(".")[1]
    if part in FOUNDATIONS:
        return 0
    if part in ABOVE_ALL:
        return len(LAYERS)
    return LAYERS.index(part)


def plugin_modules() -> set[str]:
    """The entry-point modules of the default plugins: every command that loads plugins imports them."""
    from importlib.metadata import entry_points

    return {ep.value for ep in entry_points(group="ganstack") if ep.dist and ep.dist.name == "ganstack"}


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_the_graph_sees_lazy_imports_and_cycles(graph: dict[str, dict[str, int]]) -> None:
    assert "ganstack.components.loader" in graph["ganstack.recipe.resolve"]  # imported inside a function
    assert "ganstack.components.registry" not in graph["ganstack.interfaces"]  # only under TYPE_CHECKING
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back(graph: dict[str, dict[str, int]]) -> None:
    assert cycles(graph) == []


def test_each_core_layer_imports_only_the_layers_below(graph: dict[str, dict[str, int]]) -> None:
    upward = []
    for module, targets in graph.items():
        if not module.startswith("ganstack."):
            continue
        for target, line in targets.items():
            if target.startswith("ganstack_defaults"):
                upward.append(f"{module}:{line} imports the plugin {target}")
            elif target.startswith("ganstack.") and layer(target) > layer(module):
                upward.append(f"{module}:{line} ({LAYERS[layer(module)]}) imports {target}")
    assert upward == []
    # The root package is the public facade: `ganstack.load` reaches up to sampling, and nothing else.
    assert set(graph["ganstack"]) == {"ganstack.sample.draw"}
    assert [m for m, t in graph.items() if "ganstack" in t and not (
        m.startswith("ganstack.") and layer(m) >= LAYERS.index("run_folder"))] == []  # `__version__` from above


def test_plugins_use_the_core_but_not_the_trainer_or_the_cli(graph: dict[str, dict[str, int]]) -> None:
    wrong = [f"{m}:{line} imports {t}" for m, targets in graph.items() if m.startswith("ganstack_defaults")
             for t, line in targets.items() if t.startswith(("ganstack.train", "ganstack.cli", "ganstack.testing"))]
    assert wrong == []
    assert plugin_modules() <= set(module_files())


def _command_modules(command: str) -> set[str]:
    """What running ``ganstack COMMAND`` imports first: the CLI's module-level imports, the command
    function's own imports, and the plugins (every command may load them)."""
    return module_imports(MAIN) | function_imports(MAIN, f"cmd_{command.replace('-', '_')}") | plugin_modules()


@pytest.mark.parametrize("command", NOT_TRAINING)
def test_commands_that_do_not_train_never_import_the_trainer(graph: dict[str, dict[str, int]], command: str) -> None:
    chains = reachable(graph, _command_modules(command))
    assert {" -> ".join(c) for m, c in chains.items() if m.startswith("ganstack.train")} == set()


@pytest.mark.parametrize("command", TRAINING)
def test_the_training_commands_do_reach_the_trainer(graph: dict[str, dict[str, int]], command: str) -> None:
    assert any(m.startswith("ganstack.train") for m in reachable(graph, _command_modules(command)))


def test_running_the_non_training_commands_loads_no_trainer(tmp_path: Path) -> None:
    from ganstack.cli.main import main

    run = tmp_path / "run"
    assert main(["run", str(TINY), "--out", str(run), "--max-steps", "1"]) == 0  # in this process, not the one below
    script = (
        "import sys\n"
        "from ganstack.cli.main import main\n"
        f"assert main(['sample', {str(run)!r}, '--text', 'a red circle', '--out', 'drawn']) == 0\n"
        f"assert main(['eval', {str(run)!r}, '--metric', 'r-precision', '--option', 'encoder_checkpoint=no.pt']) == 2\n"
        f"assert main(['check', {str(TINY)!r}, '--params']) == 0\n"
        "assert main(['plugins']) == 0\n"
        "assert main(['recipes']) == 0\n"
        "assert main(['import']) == 0\n"
        f"assert main(['data', 'preview', {str(TINY)!r}, '--n', '2', '--out', 'preview']) == 0\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('ganstack.train')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout[-2000:]
