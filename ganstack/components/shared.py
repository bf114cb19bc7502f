"""The ``shared`` conditioner: a stage that uses an earlier stage's conditioner, the same module.

StackGAN-v2 draws one Conditioning Augmentation sample per step for all its branches (one eps, one
KL term). A recipe says so with ``conditioner: {type: shared, stage: 1}`` on the later stages; the
stack builder (:func:`ganstack.build.stack.build_stack`) then gives them stage 1's module object
and runs it once per forward. It is part of the core, not a plugin, because only the builder can
resolve it.
"""

from __future__ import annotations

from typing import Any

import attrs

from ganstack.components.registry import Entry, Registry

SHARED = "shared"


@attrs.define(frozen=True, kw_only=True)
class SharedConditionerOptions:
    """Options of the ``shared`` conditioner.

    ``stage``: the earlier stage (1-based, as in ``stage1``) whose conditioner this stage uses
    """

    stage: int = attrs.field(default=1, validator=attrs.validators.ge(1))


def _resolved_by_builder(options: SharedConditionerOptions, ctx: Any) -> None:
    raise ValueError("the shared conditioner is resolved by the stack builder and is never built on its own")


def register_builtins(registry: Registry) -> None:
    """Add the core's own components (``shared``) to a fresh registry."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("ganstack")
    except PackageNotFoundError:  # a source tree that is not installed
        ours = None
    registry.add(Entry("conditioner", SHARED, _resolved_by_builder, SharedConditionerOptions,
                       "an earlier stage's conditioner, the same module: one sample and one KL term for all "
                       "the stages sharing it (StackGAN-v2)", "ganstack", "ganstack", ours))
