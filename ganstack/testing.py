"""Helpers for testing plugins: register one for the duration of a test."""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ganstack.components.loader import PluginInfo, load_plugins
from ganstack.hookspecs import PROJECT
from ganstack.interfaces import MetricContext


def _registrable(plugin: Any) -> Any:
    """pluggy registers an object once; a plugin already loaded from its installed entry point is
    registered again (under the test's name) through a stand-in holding its hook implementations."""
    if not load_plugins().manager.is_registered(plugin):
        return plugin
    hooks = {n: getattr(plugin, n) for n in dir(plugin) if hasattr(getattr(plugin, n, None), f"{PROJECT}_impl")}
    return types.SimpleNamespace(**hooks)


@contextmanager
def registered_plugin(plugin: Any, name: str = "test-plugin") -> Iterator[PluginInfo]:
    """Register ``plugin`` (a module or object with hook implementations) while the block runs.

    >>> with registered_plugin(MyPlugin(), "mine"):
    ...     run_recipe(...)
    """
    state = load_plugins()
    if name in state.plugins:
        raise ValueError(f"a plugin named '{name}' is already loaded")
    info = state.add(_registrable(plugin), name)
    try:
        yield info
    finally:
        state.remove(name)


def metric_context(**fields: Any) -> MetricContext:
    """A :class:`MetricContext` as ganstack builds one (the loaded registry, the recipe converter), to
    call a metric factory directly in a test; ``fields`` override (``device``, ``recipe_dir``)."""
    from ganstack.recipe.resolve import CONVERTER

    return MetricContext(**{"registry": load_plugins().registry, "converter": CONVERTER, **fields})


try:  # a pytest fixture, for suites that use pytest
    import pytest

    @pytest.fixture
    def ganstack_plugin() -> Iterator[Any]:
        """Fixture: call ``ganstack_plugin(obj, name)`` to register a plugin for this test."""
        names: list[str] = []
        state = load_plugins()

        def add(plugin: Any, name: str = "test-plugin") -> PluginInfo:
            names.append(name)
            return state.add(_registrable(plugin), name)

        yield add
        for name in names:
            state.remove(name)
except ImportError:  # pragma: no cover - pytest is only needed for tests
    pass
