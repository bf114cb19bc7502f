"""The ``stackgan-v2`` plugin: StackGAN-v2's generator branches and discriminator (see :mod:`.stackgan_v2`).

Its CA is the ``ca`` conditioner with ``activation: glu, init: orthogonal``, shared by the later
stages with ``conditioner: {type: shared, stage: 1}``; its loss is the ``stackgan-v2`` loss.
"""

from __future__ import annotations

from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack_defaults.networks.stackgan_v2 import (
    FirstBranchOptions,
    NextBranchOptions,
    V2DiscriminatorOptions,
    build_first_branch,
    build_next_branch,
    build_v2_discriminator,
)


@hookimpl
def register_components(register: Register) -> None:
    register("generator_stage", "stackgan-v2-stage1", build_first_branch, options=FirstBranchOptions,
             summary="StackGAN-v2's first branch: condition and noise to a 64x64 image through GLU up blocks")
    register("generator_stage", "stackgan-v2-next", build_next_branch, options=NextBranchOptions,
             summary="StackGAN-v2's next branch: the previous features and the condition to twice the size")
    register("discriminator", "stackgan-v2", build_v2_discriminator, options=V2DiscriminatorOptions,
             summary="StackGAN-v2's discriminator for 64/128/256 images: conditional and unconditional logits")
