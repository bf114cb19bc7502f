"""Registries of components, keyed by kind and name, filled by plugins."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import attrs

from ganstack.errors import PluginError, did_you_mean

OWN_DISTRIBUTION = "ganstack"  # the default plugins' distribution: a bare name shared with it means it

KINDS: tuple[str, ...] = (
    "text_encoder",
    "conditioner",
    "generator_stage",
    "discriminator",
    "loss",
    "dataset",
    "metric",
    "importer",
)


class NameClashWarning(UserWarning):
    """A bare name is registered by ganstack and another plugin; ganstack's own was used."""


@attrs.define(frozen=True)
class NoOptions:
    """Options class of a component that takes none."""


@attrs.frozen
class Entry:
    """One registered component: what builds it and who registered it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type
    summary: str
    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"

    def source(self) -> str:
        """'plugin (distribution version)', for messages and listings."""
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version or ''})".replace(" )", ")")
        return self.plugin


class Registry:
    """All entries of all kinds. Several plugins may register one name; lookup resolves it."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in KINDS}

    def add(self, entry: Entry) -> None:
        if entry.kind not in KINDS:
            raise PluginError(
                f"plugin '{entry.plugin}' registered '{entry.name}' under unknown kind "
                f"'{entry.kind}'{did_you_mean(entry.kind, KINDS)}",
                fix=f"use one of: {', '.join(KINDS)}",
            )
        if not attrs.has(entry.options):
            raise PluginError(
                f"plugin '{entry.plugin}' registered {entry.kind} '{entry.name}' with options "
                f"{entry.options!r}, which is not an attrs class",
                fix="decorate the options class with @attrs.define (or pass no options)",
            )
        same = self._entries[entry.kind].setdefault(entry.name, [])
        if any(e.plugin == entry.plugin for e in same):
            raise PluginError(
                f"plugin '{entry.plugin}' registered {entry.kind} '{entry.name}' twice",
                fix="register each name once per plugin",
            )
        same.append(entry)

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything one plugin registered (it failed half way, or a test ended)."""
        for by_name in self._entries.values():
            for name in list(by_name):
                by_name[name] = [e for e in by_name[name] if e.plugin != plugin]
                if not by_name[name]:
                    del by_name[name]

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = KINDS if kind is None else (kind,)
        return [e for k in kinds for name in sorted(self._entries[k]) for e in self._entries[k][name]]

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def get(self, kind: str, name: str, *, where: str | None = None) -> Entry:
        """Resolve ``name`` or ``plugin:name`` to one entry, or explain why it cannot be.

        A bare name that several plugins register resolves to ganstack's own component when one of
        them is (with a :class:`NameClashWarning` saying how to pick another), so installing a plugin
        never breaks the shipped recipes or existing runs; among third-party plugins only, it is an
        error. ``where`` (file and key path) starts the warning.
        """
        plugin, _, short = name.rpartition(":")
        candidates = self._entries[kind].get(short, [])
        label = kind.replace("_", " ")
        if plugin:
            chosen = [e for e in candidates if e.plugin == plugin]
            if not chosen and candidates:
                raise PluginError(
                    f"no plugin '{plugin}' registers {label} '{short}'; it is registered by "
                    + " and ".join(e.source() for e in candidates),
                    fix=f"install the plugin '{plugin}' (the recipe, or the run it was saved with, used "
                    "it), or name another: " + " or ".join(f"'{e.qualified_name}'" for e in candidates),
                )
            candidates = chosen
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            known = self.names(kind)
            raise PluginError(
                f"unknown {label} '{name}'{did_you_mean(short, known)}",
                fix=f"use one of the registered {label}s: {', '.join(known) or '(none)'}; "
                f"`ganstack plugins` lists them with the plugin that provides each",
            )
        sources = " and ".join(e.source() for e in candidates)
        own = [e for e in candidates if e.distribution == OWN_DISTRIBUTION]
        if len(own) == 1:
            others = " or ".join(f"'{e.qualified_name}'" for e in candidates if e is not own[0])
            warnings.warn(NameClashWarning(
                f"{where + ': ' if where else ''}{label} '{short}' is registered by more than one plugin: "
                f"{sources}; using ganstack's own '{own[0].qualified_name}'. To use another plugin's, write "
                f"{others}"), stacklevel=2)
            return own[0]
        raise PluginError(
            f"{label} '{name}' is registered by more than one plugin: {sources}",
            fix="qualify the name with its plugin, as "
            + " or ".join(f"'{e.qualified_name}'" for e in candidates),
        )


class Register:
    """The callback a plugin's ``register_components`` hook receives, bound to that plugin."""

    def __init__(self, registry: Registry, plugin: str, distribution: str | None = None,
                 version: str | None = None) -> None:
        self._registry = registry
        self.plugin = plugin
        self.distribution = distribution
        self.version = version

    def __call__(self, kind: str, name: str, factory: Callable[..., Any], *,
                 options: type | None = None, summary: str = "") -> None:
        if not summary and factory.__doc__:
            summary = factory.__doc__.strip().splitlines()[0]
        self._registry.add(Entry(kind=kind, name=name, factory=factory, options=options or NoOptions,
                                 summary=summary, plugin=self.plugin,
                                 distribution=self.distribution, version=self.version))
