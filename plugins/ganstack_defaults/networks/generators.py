"""Generator stages: StackGAN's Stage-I (noise to image) and its refiner (Stage-II, generalised).

A stage owns no conditioner: the stack builds one per stage and passes its ``Condition`` in, so
``ctx.cond_dim`` is all a stage needs to know about it.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Literal

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import Condition, StageContext, StageOutput
from ganstack_defaults.networks.blocks import (
    ResidualBlock,
    conv3x3,
    conv_block,
    down_block,
    four_times_power_of_two,
    image_head,
    init_weights,
    log2_exact,
    power_of_two,
    up_block,
    with_condition,
)


def _halvings(start: int, count: int) -> list[int]:
    """Channels after each of ``count`` halvings of ``start``."""
    return [start >> (i + 1) for i in range(count)]


def _up_path(channels: int, count: int) -> nn.Sequential:
    """``count`` up blocks, each doubling the size and halving the channels."""
    widths = [channels, *_halvings(channels, count)]
    return nn.Sequential(*(up_block(a, b) for a, b in pairwise(widths)))


def _need(ctx: StageContext, field: str, who: str) -> int:
    value = getattr(ctx, field)
    if value is None:
        raise ValueError(f"{who} needs ctx.{field}; the stack must fill it in before building the stage")
    return value


# ------------------------------------------------------------------------------------- Stage-I
def _stage1_widths_fit(instance: Stage1Options, attribute: Any, value: int) -> None:
    ups = log2_exact(value // 4) or 0
    if (8 * instance.ngf) % (1 << ups):
        raise ValueError(f"'out_size' {value} needs {ups} up blocks, each halving 8*ngf = "
                         f"{8 * instance.ngf} channels; make 'ngf' a multiple of {max(1, (1 << ups) // 8)}")


@attrs.define(frozen=True, kw_only=True)
class Stage1Options:
    """Options of the ``stackgan-stage1`` generator stage."""

    ngf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "the fc layer gives `8*ngf` channels at 4x4, halved by each up block (128 in the paper, 192 for COCO)"})
    out_size: int = attrs.field(default=64, validator=[four_times_power_of_two, _stage1_widths_fit], metadata={
        "doc": "side of the image drawn, 4 * 2**k, one up block per doubling (64 in the paper)"})


class Stage1Generator(nn.Module):
    """StackGAN Stage-I: ``cat(z, c)`` -> fc to ``8ngf x 4 x 4`` -> up blocks -> 3x3 conv -> tanh.

    ``features`` is the map before the image head (``ngf/2 x 64 x 64`` at the defaults), which a
    StackGAN-v2 style refiner can take instead of the image.
    """

    def __init__(self, options: Stage1Options, noise_dim: int, cond_dim: int, image_channels: int) -> None:
        super().__init__()
        ups = log2_exact(options.out_size // 4) or 0
        width = 8 * options.ngf
        self.out_size = options.out_size
        self.feature_channels = width >> ups
        self.fc = nn.Sequential(nn.Linear(noise_dim + cond_dim, width * 4 * 4, bias=False),
                                nn.BatchNorm1d(width * 4 * 4), nn.ReLU(inplace=True))
        self.up = _up_path(width, ups)
        self.to_image = image_head(self.feature_channels, image_channels)

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None) -> StageOutput:
        if z is None:
            raise ValueError("stackgan-stage1 draws from noise: it needs z (it must be the first stage)")
        x = self.fc(torch.cat([z, condition.c], dim=1))
        features = self.up(x.reshape(x.shape[0], -1, 4, 4))
        return StageOutput(image=self.to_image(features), features=features)


def build_stage1(options: Stage1Options, ctx: StageContext) -> Stage1Generator:
    """StackGAN Stage-I generator: noise and condition to a low-resolution image (upsample from 4x4)."""
    if ctx.index != 0:
        raise RecipeError(f"stackgan-stage1 is stage {ctx.index + 1}, but it draws from noise and only "
                          "the first stage gets noise",
                          fix="make stackgan-stage1 the first stage; refine it with stackgan-refiner")
    cond_dim = _need(ctx, "cond_dim", "stackgan-stage1")
    return init_weights(Stage1Generator(options, ctx.noise_dim, cond_dim, ctx.image_channels))


# ------------------------------------------------------------------------------------- refiner
def _scale_fits_ngf(instance: RefinerOptions, attribute: Any, value: int) -> None:
    if instance.ngf % value:
        raise ValueError(f"'scale' {value} needs 'ngf' divisible by {value} (the last up block has "
                         f"ngf/scale channels), got ngf {instance.ngf}")


@attrs.define(frozen=True, kw_only=True)
class RefinerOptions:
    """Options of the ``stackgan-refiner`` generator stage (Stage-II and any later one)."""

    ngf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "base width (128 in the paper, 192 for COCO); the residual blocks work at `4*ngf` channels with `input: image`, at `ngf` with `features`"})
    scale: int = attrs.field(default=4, validator=[power_of_two, _scale_fits_ngf], metadata={
        "doc": "output size / input size, a power of two (4 in the paper: 64 to 256)"})
    residual_blocks: int = attrs.field(default=4, validator=attrs.validators.ge(0), metadata={
        "doc": "residual blocks at the working width (4 in the paper, 2 for COCO)"})
    input: Literal["image", "features"] = attrs.field(
        default="image", validator=attrs.validators.in_(("image", "features")), metadata={
        "doc": "refine the previous `image` (StackGAN) or its `features` (StackGAN-v2)"})
    detach_input: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "no gradient into the previous stage (the paper; false trains the stages together, as StackGAN-v2 does)"})


class RefinerGenerator(nn.Module):
    """StackGAN Stage-II, generalised to any power-of-two ``scale`` and to feature input.

    ``input: image`` (the paper): encode the previous image (3x3 conv -> ReLU, then two 4x4 s2
    down blocks with BN/ReLU) to ``4ngf x in/4``, join the spatially replicated ``c`` with a 3x3
    conv -> BN -> ReLU, ``residual_blocks`` residual blocks at ``4ngf``, then ``2 + log2(scale)``
    up blocks halving the channels (256@32, 128@64, 64@128, 32@256 at the defaults), and a 3x3
    conv -> tanh image head.

    ``input: features`` (StackGAN-v2 style): no image encoder; the previous stage's features
    (``in_feature_channels x in``) and the replicated ``c`` are joined by a 3x3 conv -> BN -> ReLU
    to ``ngf`` channels, then ``residual_blocks`` residual blocks at ``ngf``, ``log2(scale)`` up
    blocks halving the channels, and the image head. Both paths end at ``ngf/scale`` channels.
    Set ``detach_input: false`` to train the stages jointly, as StackGAN-v2 does.
    """

    name = "stackgan-refiner"  # its registered name, for messages

    def __init__(self, options: RefinerOptions, in_size: int, in_channels: int, cond_dim: int,
                 image_channels: int) -> None:
        """``in_channels``: channels of what is refined (the previous image or its features)."""
        super().__init__()
        ngf = options.ngf
        self.input = options.input
        self.detach_input = options.detach_input
        self.out_size = in_size * options.scale
        ups = log2_exact(options.scale) or 0
        if options.input == "image":
            self.encode: nn.Module = nn.Sequential(
                conv3x3(in_channels, ngf), nn.ReLU(inplace=True),
                down_block(ngf, 2 * ngf, leaky=False), down_block(2 * ngf, 4 * ngf, leaky=False))
            width, ups, joint_in = 4 * ngf, ups + 2, 4 * ngf
        else:
            self.encode = nn.Identity()
            width, joint_in = ngf, in_channels
        self.joint = conv_block(joint_in + cond_dim, width, leaky=False)
        self.residual = nn.Sequential(*(ResidualBlock(width) for _ in range(options.residual_blocks)))
        self.up = _up_path(width, ups)
        self.feature_channels = width >> ups
        self.to_image = image_head(self.feature_channels, image_channels)

    def source(self, prev: StageOutput | None) -> Tensor:
        """What is refined: the previous stage's image or features (detached with ``detach_input``)."""
        source = None if prev is None else (prev.image if self.input == "image" else prev.features)
        if source is None:
            raise ValueError(f"{self.name} (input: {self.input}) needs the previous stage's {self.input}")
        return source.detach() if self.detach_input else source

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None) -> StageOutput:
        x = self.residual(self.joint(with_condition(self.encode(self.source(prev)), condition.c)))
        features = self.up(x)
        return StageOutput(image=self.to_image(features), features=features)


def check_refiner_context(options: RefinerOptions, ctx: StageContext, name: str) -> tuple[int, int]:
    """The channels a refiner named ``name`` refines and its condition size, or why it cannot be built here."""
    if ctx.in_size is None:
        raise RecipeError(f"{name} refines a previous stage, so it cannot be the first stage",
                          fix="put a stage such as stackgan-stage1 before it")
    if options.input == "image" and ctx.in_size % 4:
        raise RecipeError(f"{name} with input: image encodes the previous image by 4, but that "
                          f"image is {ctx.in_size}x{ctx.in_size}",
                          fix="give the previous stage an output size divisible by 4, or use input: features")
    in_channels = ctx.image_channels if options.input == "image" else ctx.in_feature_channels
    if in_channels is None:
        raise RecipeError(f"{name} with input: features, but the previous stage gives no features",
                          fix="use input: image, or a previous stage that outputs features")
    return in_channels, _need(ctx, "cond_dim", name)


def build_refiner(options: RefinerOptions, ctx: StageContext) -> RefinerGenerator:
    """StackGAN Stage-II refiner: previous image (or features) and condition to a larger image."""
    in_channels, cond_dim = check_refiner_context(options, ctx, "stackgan-refiner")
    return init_weights(RefinerGenerator(options, ctx.in_size or 0, in_channels, cond_dim, ctx.image_channels))
