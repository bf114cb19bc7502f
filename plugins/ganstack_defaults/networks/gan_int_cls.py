"""GAN-INT-CLS's DCGAN generator stage and discriminator (Reed et al., 2016), at Reed's sizes.

The published model maps onto ganstack's pieces as follows (docs/ablations.md):

- the generator's text compression (Linear 1024 -> 128, LeakyReLU 0.2, no BN) is the stage's
  conditioner, ``linear`` with ``condition_dim: 128, init: uniform``; the stage here gets its output
  as ``condition.c`` and joins it to ``z`` as Reed's generator does;
- the discriminator compresses the raw embedding itself (Linear -> BN -> LeakyReLU), as Reed's does,
  so it reads ``text``, never the generator's condition.

Every convolution here has no bias: Reed's training script zeroes the convolution biases before
each step, so they never leave zero. Convolutions and BatchNorm start as dcgan.torch's init (N(0,
0.02); BN N(1, 0.02) and 0); the linear layers keep PyTorch's default, which is Torch7's.

``residual: true`` adds the released code's bottleneck residual blocks (``main_cls_int.lua``; not
in the paper): in G after the 4x4 and 8x8 maps, in D at 4x4, where the released D also has no
LeakyReLU after its third and fourth convolutions' BN (only after the residual sum).
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import Condition, StageContext, StageOutput
from ganstack_defaults.networks.blocks import (
    LEAK,
    first_stage_cond_dim,
    four_times_power_of_two,
    init_weights,
    log2_exact,
    replicate,
)


def _at_least_8(instance: Any, attribute: Any, value: int) -> None:
    if value < 8:
        raise ValueError(f"'{attribute.name}' must be at least 8 (one stride-2 layer after 4x4), got {value}")


def _activation(leaky: bool) -> nn.Module:
    return nn.LeakyReLU(LEAK, inplace=True) if leaky else nn.ReLU(inplace=True)


class Bottleneck(nn.Module):
    """The released code's residual block: ``x + (1x1 -> BN -> act -> 3x3 -> BN -> act -> 3x3 -> BN)(x)``
    through a quarter of the channels (at least 1); the activation after the sum is the caller's."""

    def __init__(self, channels: int, *, leaky: bool) -> None:
        super().__init__()
        inner = max(1, channels // 4)
        self.body = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False), nn.BatchNorm2d(inner), _activation(leaky),
            nn.Conv2d(inner, inner, 3, padding=1, bias=False), nn.BatchNorm2d(inner), _activation(leaky),
            nn.Conv2d(inner, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


# ------------------------------------------------------------------------------------ generator
@attrs.define(frozen=True, kw_only=True)
class GanIntClsGeneratorOptions:
    """Options of the ``gan-int-cls`` generator stage."""

    ngf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "channels of the last map before the image (128 in Reed's code); each earlier map has twice "
               "the next one's, so 64x64 starts from `8*ngf` at 4x4"})
    out_size: int = attrs.field(default=64, validator=[four_times_power_of_two, _at_least_8], metadata={
        "doc": "side of the image drawn, 4 * 2**k with k >= 1, one stride-2 transposed convolution per "
               "doubling (64 in the paper)"})
    residual: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "add the released code's bottleneck residual blocks after the 4x4 and 8x8 maps "
               "(`main_cls_int.lua`; the paper's DCGAN has none)"})


class GanIntClsGenerator(nn.Module):
    """Reed's DCGAN generator: ``cat(z, c)`` as a 1x1 map -> 4x4 transposed conv to ``ngf * 2**(k-1)``
    channels -> BN -> ReLU, then 4x4 stride-2 transposed convs halving the channels with BN and ReLU
    to ``ngf x out/2``, and a last one to the image with tanh.

    ``features`` is the ``ngf x out/2`` map before the last layer.
    """

    def __init__(self, options: GanIntClsGeneratorOptions, noise_dim: int, cond_dim: int,
                 image_channels: int) -> None:
        super().__init__()
        ups = (log2_exact(options.out_size // 4) or 1)  # stride-2 layers after 4x4, the last to the image
        widths = [options.ngf << (ups - 1 - i) for i in range(ups)]  # 1024, 512, 256, 128 at the paper's sizes
        self.out_size = options.out_size
        self.feature_channels = options.ngf
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            if i == 0:
                layers += [nn.ConvTranspose2d(noise_dim + cond_dim, width, 4, bias=False)]
            else:
                layers += [nn.ConvTranspose2d(widths[i - 1], width, 4, stride=2, padding=1, bias=False)]
            layers.append(nn.BatchNorm2d(width))
            if options.residual and i < 2:  # the released code's blocks at 4x4 and 8x8
                layers.append(Bottleneck(width, leaky=False))
            layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.to_image = nn.Sequential(
            nn.ConvTranspose2d(options.ngf, image_channels, 4, stride=2, padding=1, bias=False), nn.Tanh())

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None) -> StageOutput:
        if z is None:
            raise ValueError("gan-int-cls draws from noise: it needs z (it must be the first stage)")
        x = torch.cat([z, condition.c], dim=1)[:, :, None, None]
        features = self.body(x)
        return StageOutput(image=self.to_image(features), features=features)


def build_gan_int_cls_generator(options: GanIntClsGeneratorOptions, ctx: StageContext) -> GanIntClsGenerator:
    """GAN-INT-CLS's DCGAN generator: noise and the compressed text to an image by transposed convolutions."""
    cond_dim = first_stage_cond_dim("gan-int-cls", ctx)
    return init_weights(GanIntClsGenerator(options, ctx.noise_dim, cond_dim, ctx.image_channels), linear=False)


# -------------------------------------------------------------------------------- discriminator
@attrs.define(frozen=True, kw_only=True)
class GanIntClsDiscriminatorOptions:
    """Options of the ``gan-int-cls`` discriminator."""

    ndf: int = attrs.field(default=64, validator=attrs.validators.ge(1), metadata={
        "doc": "channels of the first stride-2 convolution, doubled by each further one (64 in Reed's code: "
               "64, 128, 256, 512 for 64x64)"})
    condition_dim: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "size of D's own compression of the text embedding (Linear -> BN -> LeakyReLU; 128 in Reed's "
               "code), replicated over the 4x4 map"})
    residual: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "the released code's D: a bottleneck residual block at 4x4, and no LeakyReLU after the last two "
               "convolutions' BN (`main_cls_int.lua`; the paper's DCGAN has a LeakyReLU after each)"})


class GanIntClsDiscriminator(nn.Module):
    """Reed's DCGAN discriminator: 4x4 stride-2 convs to ``ndf * 2**(k-1) x 4 x 4`` (LeakyReLU 0.2, BN
    after all but the first); the text compressed by D's own Linear -> BN -> LeakyReLU, replicated to
    4x4 and concatenated after the image features; 1x1 conv -> BN -> LeakyReLU; 4x4 conv -> one logit.

    Logits, not probabilities (Reed's sigmoid is in the losses). ``uncond_logits`` is ``None``: it
    has no image-only head.
    """

    def __init__(self, options: GanIntClsDiscriminatorOptions, image_size: int, image_channels: int,
                 text_dim: int) -> None:
        super().__init__()
        downs = log2_exact(image_size // 4) or 1
        widths = [options.ndf << i for i in range(downs)]
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers.append(nn.Conv2d(widths[i - 1] if i else image_channels, width, 4, stride=2, padding=1,
                                    bias=False))
            if i:
                layers.append(nn.BatchNorm2d(width))
            # the released D: no activation after the last two convolutions' BN but the first's
            if not (options.residual and i and i >= downs - 2):
                layers.append(nn.LeakyReLU(LEAK, inplace=True))
        if options.residual:
            layers += [Bottleneck(widths[-1], leaky=True), nn.LeakyReLU(LEAK, inplace=True)]
        self.image_path = nn.Sequential(*layers)
        self.feature_channels = width = widths[-1]
        self.compress_text = nn.Sequential(nn.Linear(text_dim, options.condition_dim),
                                           nn.BatchNorm1d(options.condition_dim), nn.LeakyReLU(LEAK))
        self.cond_head = nn.Sequential(
            nn.Conv2d(width + options.condition_dim, width, 1, bias=False), nn.BatchNorm2d(width),
            nn.LeakyReLU(LEAK, inplace=True), nn.Conv2d(width, 1, 4, bias=False))

    def features(self, image: Tensor) -> Tensor:
        return self.image_path(image)

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor) -> Tensor:
        text_map = replicate(self.compress_text(text), features)
        return self.cond_head(torch.cat([features, text_map], dim=1)).reshape(-1)

    def uncond_logits(self, features: Tensor) -> Tensor | None:
        return None


def build_gan_int_cls_discriminator(options: GanIntClsDiscriminatorOptions,
                                    ctx: StageContext) -> GanIntClsDiscriminator:
    """GAN-INT-CLS's DCGAN discriminator with its own text compression, joined at 4x4."""
    size = ctx.image_size
    if size is None:
        raise ValueError("the discriminator needs ctx.image_size; the stack must fill it in before building D")
    if size < 8 or size % 4 or log2_exact(size // 4) is None:
        raise RecipeError(f"the gan-int-cls discriminator halves the image down to 4x4, which {size}x{size} "
                          "does not reach", fix="use an image size 4 times a power of two: 8, 16, 32, 64, ...")
    return init_weights(GanIntClsDiscriminator(options, size, ctx.image_channels, ctx.text_dim), linear=False)
