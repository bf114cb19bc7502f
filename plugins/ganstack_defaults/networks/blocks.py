"""StackGAN's building blocks, its weight init, and the size rules its options share.

Every convolution here has no bias, as in the official code: a BatchNorm follows it, so a bias
would only duplicate the BN shift. Layers are plain ``nn.Sequential`` so that parameter names
stay short and every op works on channels_last tensors.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import StageContext

LEAK = 0.2  # LeakyReLU slope of every StackGAN discriminator
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def init_weights(module: ModuleT, *, linear: bool = True) -> ModuleT:
    """Apply the reference init to ``module`` and its children, and return it.

    Conv/linear weights ~ N(0, 0.02), linear biases 0, BatchNorm weights ~ N(1, 0.02) and biases 0:
    the DCGAN-style init StackGAN's results were obtained with. Conv biases keep PyTorch's default,
    as in the official port. ``linear=False`` leaves linear layers at PyTorch's default, which is
    Torch7's (``U(-1/sqrt(in), 1/sqrt(in))`` for weights and biases): dcgan.torch's init, which
    GAN-INT-CLS uses, touches only convolutions and BatchNorm.
    """
    kinds = (nn.modules.conv._ConvNd, nn.Linear) if linear else (nn.modules.conv._ConvNd,)
    for m in module.modules():
        if isinstance(m, kinds):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def orthogonal_init(module: ModuleT) -> ModuleT:
    """StackGAN-v2's init on ``module`` and its children, and return it.

    Conv and linear weights orthogonal (gain 1), linear biases 0, BatchNorm weights ~ N(1, 0.02)
    and biases 0; conv biases keep PyTorch's default, as in the official code. Tensors on the
    meta device (parameter counting without memory) are left alone.
    """
    for m in module.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            if not m.weight.is_meta:
                nn.init.orthogonal_(m.weight, 1.0)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, size-preserving, no bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the size: nearest x2 -> 3x3 conv -> BN -> ReLU (nearest avoids checkerboard artefacts)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_channels, out_channels),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def down_block(in_channels: int, out_channels: int, *, batch_norm: bool = True,
               leaky: bool = True) -> nn.Sequential:
    """Halve the size: 4x4 conv stride 2 -> BN -> LeakyReLU(0.2) (ReLU with ``leaky=False``).

    The first block of a discriminator has ``batch_norm=False``; the refiner's image encoder uses
    ``leaky=False``.
    """
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                                         bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(LEAK, inplace=True) if leaky else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv_block(in_channels: int, out_channels: int, *, leaky: bool) -> nn.Sequential:
    """Same-size 3x3 conv -> BN -> LeakyReLU(0.2) (discriminators) or ReLU (generators)."""
    act = nn.LeakyReLU(LEAK, inplace=True) if leaky else nn.ReLU(inplace=True)
    return nn.Sequential(conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), act)


def image_head(in_channels: int, image_channels: int) -> nn.Sequential:
    """Features to an image in [-1, 1]: 3x3 conv (no bias) -> tanh."""
    return nn.Sequential(conv3x3(in_channels, image_channels), nn.Tanh())


class ResidualBlock(nn.Module):
    """3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, add the input, ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                                  conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.body(x))


def replicate(vector: Tensor, like: Tensor) -> Tensor:
    """Tile ``[B, D]`` over the spatial size of ``like`` (``[B, C, H, W]``) to ``[B, D, H, W]``."""
    return vector[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


def with_condition(features: Tensor, vector: Tensor) -> Tensor:
    """Concatenate image features and a spatially replicated condition (features first)."""
    return torch.cat([features, replicate(vector, features)], dim=1)


# ------------------------------------------------------------------------------------ size rules
def log2_exact(n: int) -> int | None:
    """``k`` with ``2**k == n``, or None when ``n`` is not a positive power of two."""
    return n.bit_length() - 1 if n > 0 and n & (n - 1) == 0 else None


def power_of_two(instance: Any, attribute: Any, value: int) -> None:
    """attrs validator: ``value`` is a power of two, at least 2."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2 or log2_exact(value) is None:
        raise ValueError(f"'{attribute.name}' must be a power of two >= 2 (2, 4, 8, ...), got {value!r}")


def four_times_power_of_two(instance: Any, attribute: Any, value: int) -> None:
    """attrs validator: ``value`` is 4 * 2**k (4, 8, 16, ..., 64, 128, 256), the sizes up/down blocks reach."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 4 or value % 4 \
            or log2_exact(value // 4) is None:
        raise ValueError(f"'{attribute.name}' must be 4 times a power of two (4, 8, 16, 32, 64, 128, "
                         f"256, ...), got {value!r}")


def first_stage_cond_dim(name: str, ctx: StageContext) -> int:
    """The condition size for a generator stage that draws from noise, which only the first stage gets:
    a later place is the recipe's mistake; a context without ``cond_dim`` is the core's."""
    if ctx.index != 0 or ctx.in_size is not None:
        raise RecipeError(f"{name} is stage {ctx.index + 1}, but it draws from noise, so it can only be the "
                          "first stage", fix="make it stage 1, and refine its image with stackgan-refiner (input: image)")
    if ctx.cond_dim is None:
        raise ValueError(f"{name} needs ctx.cond_dim; the stack must fill it in before building the stage")
    return ctx.cond_dim
