"""Find, load and call plugins, each on its own so one broken plugin cannot take the rest down."""

from __future__ import annotations

import os
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from ganstack import hookspecs
from ganstack.components.registry import Register, Registry
from ganstack.components.shared import register_builtins
from ganstack.errors import PluginError

STRICT_ENV = "GANSTACK_STRICT_PLUGINS"
DISABLE_ENV = "GANSTACK_DISABLE_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin failed to load; the others were loaded."""


@attrs.define
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    error: str | None = None
    disabled: bool = False


@attrs.define
class PluginState:
    """What loading found: the registry, the plugins, and which failed or were disabled."""

    manager: pluggy.PluginManager
    registry: Registry
    plugins: dict[str, PluginInfo]

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.error]

    def add(self, plugin: Any, name: str, distribution: str | None = None,
            version: str | None = None) -> PluginInfo:
        """Register one plugin object and run its hook, isolating its failure."""
        info = PluginInfo(name, distribution, version)
        self.plugins[name] = info
        try:
            self.manager.register(plugin, name=name)
            for impl in self.manager.hook.register_components.get_hookimpls():
                if impl.plugin_name == name:
                    impl.function(register=Register(self.registry, name, distribution, version))
        except Exception as exc:  # a plugin's bug must not stop the others
            self.registry.remove_plugin(name)
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            _fail(info, exc)
        return info

    def remove(self, name: str) -> None:
        self.registry.remove_plugin(name)
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin)
        self.plugins.pop(name, None)


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _fail(info: PluginInfo, exc: BaseException) -> None:
    info.error = f"{type(exc).__name__}: {exc}"
    if _strict():
        raise PluginError(
            f"plugin '{info.name}' ({info.distribution or 'no distribution'}) failed to load: "
            f"{info.error}",
            fix=f"fix or uninstall the plugin, block it with {DISABLE_ENV}={info.name}, "
            f"or unset {STRICT_ENV} to load the others without it",
        ) from exc
    warnings.warn(f"ganstack plugin '{info.name}' failed to load and was skipped: {info.error}",
                  PluginWarning, stacklevel=3)


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=hookspecs.PROJECT), key=lambda ep: ep.name)


def new_state() -> PluginState:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    register_builtins(registry)
    return PluginState(manager=manager, registry=registry, plugins={})


_STATE: PluginState | None = None


def load_plugins(*, reload: bool = False) -> PluginState:
    """Load every installed plugin once per process (again with ``reload=True``)."""
    global _STATE
    if _STATE is not None and not reload:
        return _STATE
    state = new_state()
    disabled = _disabled()
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist else None
        version = ep.dist.version if ep.dist else None
        if ep.name in disabled:
            state.plugins[ep.name] = PluginInfo(ep.name, dist, version, disabled=True)
            continue
        try:
            module = ep.load()
        except Exception as exc:
            info = PluginInfo(ep.name, dist, version)
            state.plugins[ep.name] = info
            _fail(info, exc)
            continue
        state.add(module, ep.name, dist, version)
    _STATE = state
    return state


def registry() -> Registry:
    """The registry of the loaded plugins."""
    return load_plugins().registry
