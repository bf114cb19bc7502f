"""The whole contract between ganstack and its plugins.

A plugin is a module (or object) named by an entry point in the ``ganstack`` group of its
package's ``pyproject.toml``::

    [project.entry-points.ganstack]
    my-plugin = "my_package.plugin"

The module implements the hooks below with :data:`hookimpl`. Hooks receive a ``register``
callback instead of relying on import side effects, so a plugin that fails is reported by name
and the others still load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ganstack.components.registry import Register

PROJECT = "ganstack"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_components(register: Register) -> None:
    """Register the plugin's components.

    Call ``register(kind, name, factory, options=OptionsClass, summary="...")`` once per
    component. ``kind`` is one of ``text_encoder``, ``conditioner``, ``generator_stage``,
    ``discriminator``, ``loss``, ``dataset``, ``metric``. ``factory(options, ctx)`` builds the
    component from an instance of the attrs class ``options`` (the recipe's keys, defaults
    filled in, validators run) and a context object from :mod:`ganstack.interfaces` that carries
    what the parent knows (sizes, stage index). The contract each kind's object must meet is
    in :mod:`ganstack.interfaces`.
    """
