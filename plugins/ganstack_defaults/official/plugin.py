"""The ``official`` plugin: the ``stackgan-pytorch`` importer (``ganstack import stackgan-pytorch``)."""

from __future__ import annotations

from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack_defaults.official.stackgan_pytorch import StackGANPytorchOptions, import_stackgan_pytorch


@hookimpl
def register_components(register: Register) -> None:
    register("importer", "stackgan-pytorch", import_stackgan_pytorch, options=StackGANPytorchOptions,
             summary="official StackGAN-Pytorch netG/netD files (any PyTorch version) to a ganstack run folder")
