"""The ``official-v2`` plugin: registers the ``stackgan-v2`` importer (see :mod:`.v2`)."""

from __future__ import annotations

from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack_defaults.official.v2 import V2ImportOptions, import_stackgan_v2


@hookimpl
def register_components(register: Register) -> None:
    register("importer", "stackgan-v2", import_stackgan_v2, options=V2ImportOptions,
             summary="the authors' StackGAN-v2 netG_N.pth (and netD0-2.pth) as a run folder of a "
                     "StackGAN-v2 recipe")
