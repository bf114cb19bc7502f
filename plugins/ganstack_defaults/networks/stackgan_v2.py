"""StackGAN-v2 (StackGAN++) exactly as published: its GLU generator branches and its discriminators.

The module and parameter names follow the official code's (``fc``, ``upsample1``, ``jointConv``,
``residual.0.block.0``, ``img_code_s16``, ``logits``, ...) so that an official checkpoint maps onto
a stage by its prefix (plus ``img_netK.`` -> ``head.`` and ``uncond_logits.`` -> ``uncond_logits_head.``,
as methods have those names here; see :mod:`ganstack_defaults.official.v2`). Differences from StackGAN-v1's
blocks, all from the official code: every activation of G is a GLU (so its convolutions give twice
the channels they keep), the residual block has no ReLU after the add, the condition comes
*first* in every concatenation, the discriminator judges ``condition.mu`` as given (the trainer
detaches it for D's own phase; G's phase keeps the gradient into the CA mean), and weights start
orthogonal. Discriminators return logits; the official code's final sigmoid is in the loss.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import Condition, StageContext, StageOutput
from ganstack_defaults.networks.blocks import LEAK, conv3x3, log2_exact, orthogonal_init, replicate


# ------------------------------------------------------------------------------------ G blocks
def glu_up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """nearest x2 -> 3x3 conv to ``2 * out`` -> BN -> GLU (``upBlock``)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_channels, 2 * out_channels),
                         nn.BatchNorm2d(2 * out_channels), nn.GLU(dim=1))


def glu_conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Same-size 3x3 conv to ``2 * out`` -> BN -> GLU (``Block3x3_relu``, the joint conv)."""
    return nn.Sequential(conv3x3(in_channels, 2 * out_channels), nn.BatchNorm2d(2 * out_channels), nn.GLU(dim=1))


class GLUResidualBlock(nn.Module):
    """conv (C -> 2C) -> BN -> GLU -> conv (C -> C) -> BN, plus the input; no activation after the add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(conv3x3(channels, 2 * channels), nn.BatchNorm2d(2 * channels), nn.GLU(dim=1),
                                   conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ImageHead(nn.Module):
    """3x3 conv to RGB -> tanh, kept as ``img`` (``GET_IMAGE_G``)."""

    def __init__(self, channels: int, image_channels: int) -> None:
        super().__init__()
        self.img = nn.Sequential(conv3x3(channels, image_channels), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.img(x)


def _need(ctx: StageContext, field: str, who: str) -> int:
    value = getattr(ctx, field)
    if value is None:
        raise ValueError(f"{who} needs ctx.{field}; the stack must fill it in before building the stage")
    return int(value)


# ----------------------------------------------------------------------------- the first branch
def _first_sizes_fit(instance: FirstBranchOptions, attribute: Any, value: int) -> None:
    ups = log2_exact(value // 4) if value >= 8 and value % 4 == 0 else None
    if ups is None:
        raise ValueError(f"'out_size' must be 4 times a power of two (8, 16, 32, 64, ...), got {value!r}")
    if (16 * instance.gf_dim) % (1 << ups):
        raise ValueError(f"'out_size' {value} needs {ups} up blocks, each halving 16*gf_dim = "
                         f"{16 * instance.gf_dim} channels; make 'gf_dim' a multiple of {max(1, (1 << ups) // 16)}")


@attrs.define(frozen=True, kw_only=True)
class FirstBranchOptions:
    """Options of the ``stackgan-v2-stage1`` generator stage (the official ``h_net1`` + ``img_net1``).

    ``gf_dim``: G's base width (GF_DIM, 64 for birds): the fc gives ``16*gf_dim`` channels at 4x4,
    halved by each up block; ``out_size``: side of the image, one up block per doubling from 4 (64)
    """

    gf_dim: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    out_size: int = attrs.field(default=64, validator=_first_sizes_fit)


class FirstBranch(nn.Module):
    """``cat(c, z)`` -> Linear (no bias) -> BN1d -> GLU to ``16gf x 4 x 4`` -> GLU up blocks; image head."""

    def __init__(self, options: FirstBranchOptions, noise_dim: int, cond_dim: int, image_channels: int) -> None:
        super().__init__()
        self.ngf = 16 * options.gf_dim
        self.out_size = options.out_size
        ups = log2_exact(options.out_size // 4) or 0
        self.fc = nn.Sequential(nn.Linear(cond_dim + noise_dim, 2 * self.ngf * 16, bias=False),
                                nn.BatchNorm1d(2 * self.ngf * 16), nn.GLU(dim=1))
        for i in range(ups):
            self.add_module(f"upsample{i + 1}", glu_up_block(self.ngf >> i, self.ngf >> (i + 1)))
        self.ups = ups
        self.feature_channels = self.ngf >> ups
        self.head = ImageHead(self.feature_channels, image_channels)

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None) -> StageOutput:
        if z is None:
            raise ValueError("stackgan-v2-stage1 draws from noise, so it must be the first stage")
        x = self.fc(torch.cat([condition.c, z], dim=1)).view(-1, self.ngf, 4, 4)
        for i in range(self.ups):
            x = getattr(self, f"upsample{i + 1}")(x)
        return StageOutput(image=self.head(x), features=x)


# ------------------------------------------------------------------------------- later branches
@attrs.define(frozen=True, kw_only=True)
class NextBranchOptions:
    """Options of the ``stackgan-v2-next`` generator stage (the official ``h_net2``/``h_net3``).

    It works at the previous stage's feature width and halves it while doubling the size.
    ``residual_blocks``: residual blocks after the joint conv (R_NUM, 2 for birds)
    """

    residual_blocks: int = attrs.field(default=2, validator=attrs.validators.ge(0))


class NextBranch(nn.Module):
    """``cat(c, h)`` -> joint GLU conv -> residual blocks -> GLU up block; image head.

    It continues the previous stage's features (not its image), undetached: StackGAN-v2 trains
    every branch jointly, each branch's loss reaching the branches below it.
    """

    def __init__(self, options: NextBranchOptions, in_size: int, in_channels: int, cond_dim: int,
                 image_channels: int) -> None:
        super().__init__()
        ngf = in_channels
        self.out_size = 2 * in_size
        self.jointConv = glu_conv_block(cond_dim + ngf, ngf)  # noqa: N815 - the official name, kept for import
        self.residual = nn.Sequential(*(GLUResidualBlock(ngf) for _ in range(options.residual_blocks)))
        self.upsample = glu_up_block(ngf, ngf // 2)
        self.feature_channels = ngf // 2
        self.head = ImageHead(self.feature_channels, image_channels)

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None) -> StageOutput:
        if prev is None or prev.features is None:
            raise ValueError("stackgan-v2-next continues the previous stage's features; it has none")
        h = prev.features
        x = self.upsample(self.residual(self.jointConv(torch.cat([replicate(condition.c, h), h], dim=1))))
        return StageOutput(image=self.head(x), features=x)


def build_first_branch(options: FirstBranchOptions, ctx: StageContext) -> FirstBranch:
    """StackGAN-v2's first branch: condition and noise to a 64x64 image through GLU up blocks."""
    if ctx.in_size is not None:
        raise RecipeError("stackgan-v2-stage1 draws from noise, so it must be the first stage",
                          fix="use stackgan-v2-next for the stages after the first")
    cond_dim = _need(ctx, "cond_dim", "stackgan-v2-stage1")
    return orthogonal_init(FirstBranch(options, ctx.noise_dim, cond_dim, ctx.image_channels))


def build_next_branch(options: NextBranchOptions, ctx: StageContext) -> NextBranch:
    """StackGAN-v2's next branch: the previous features and the condition to twice the size."""
    if ctx.in_size is None or ctx.in_feature_channels is None:
        raise RecipeError("stackgan-v2-next continues a previous stage's features, so it cannot be first "
                          "and the stage before it must give features",
                          fix="put stackgan-v2-stage1 (or another stackgan-v2 stage) before it")
    if ctx.in_feature_channels < 2 or ctx.in_feature_channels % 2:
        raise RecipeError(f"stackgan-v2-next halves the previous stage's {ctx.in_feature_channels} feature "
                          f"channels, which must be even", fix="give the first stage a larger gf_dim")
    cond_dim = _need(ctx, "cond_dim", "stackgan-v2-next")
    return orthogonal_init(NextBranch(options, ctx.in_size, ctx.in_feature_channels, cond_dim,
                                      ctx.image_channels))


# --------------------------------------------------------------------------------- discriminator
@attrs.define(frozen=True, kw_only=True)
class V2DiscriminatorOptions:
    """Options of the ``stackgan-v2`` discriminator (the official ``D_NET64``/``D_NET128``/``D_NET256``).

    ``df_dim``: width of the first down block, doubled by each further one (DF_DIM, 64 for birds).
    The layout follows the stage's image size (64 * 2**k): four down blocks to 1/16, one more per
    further halving, then 3x3 conv blocks halving the channels back to ``8*df_dim``
    """

    df_dim: int = attrs.field(default=64, validator=attrs.validators.ge(1))


def _leaky_conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv -> BN -> LeakyReLU(0.2) (``Block3x3_leakRelu``)."""
    return nn.Sequential(conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.LeakyReLU(LEAK))


def _down_block(in_channels: int, out_channels: int, *, batch_norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return [*layers, nn.LeakyReLU(LEAK)]


class V2Discriminator(nn.Module):
    """Image to ``8df x 4 x 4`` features; conditional logit on ``cat(c, x)``, unconditional on ``x``."""

    def __init__(self, options: V2DiscriminatorOptions, image_size: int, image_channels: int,
                 cond_dim: int) -> None:
        super().__init__()
        ndf = options.df_dim
        self.cond_dim = cond_dim
        self.img_code_s16 = nn.Sequential(
            *_down_block(image_channels, ndf, batch_norm=False), *_down_block(ndf, 2 * ndf),
            *_down_block(2 * ndf, 4 * ndf), *_down_block(4 * ndf, 8 * ndf))
        self.path: list[str] = ["img_code_s16"]
        extra = (log2_exact(image_size // 64) or 0)
        channels, scale = 8 * ndf, 16
        for _ in range(extra):
            scale *= 2
            name = f"img_code_s{scale}"
            self.add_module(name, nn.Sequential(*_down_block(channels, 2 * channels)))
            self.path.append(name)
            channels *= 2
        for j in range(extra):
            name = f"img_code_s{scale}_{j + 1}"
            self.add_module(name, _leaky_conv_block(channels, channels // 2))
            self.path.append(name)
            channels //= 2
        self.logits = nn.Sequential(nn.Conv2d(8 * ndf, 1, kernel_size=4, stride=4))
        self.jointConv = _leaky_conv_block(8 * ndf + cond_dim, 8 * ndf)  # noqa: N815 - the official name
        self.uncond_logits_head = nn.Sequential(nn.Conv2d(8 * ndf, 1, kernel_size=4, stride=4))

    def features(self, image: Tensor) -> Tensor:
        x = image
        for name in self.path:
            x = getattr(self, name)(x)
        return x

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor) -> Tensor:
        joint = self.jointConv(torch.cat([replicate(condition.mu, features), features], dim=1))
        return self.logits(joint).reshape(-1)

    def uncond_logits(self, features: Tensor) -> Tensor:
        return self.uncond_logits_head(features).reshape(-1)


def build_v2_discriminator(options: V2DiscriminatorOptions, ctx: StageContext) -> V2Discriminator:
    """StackGAN-v2's discriminator for the stage's image size, conditional and unconditional logits."""
    size = _need(ctx, "image_size", "stackgan-v2 discriminator")
    if size < 64 or log2_exact(size // 64) is None or size % 64:
        raise RecipeError(f"the stackgan-v2 discriminator judges images of 64 * 2**k pixels (64, 128, 256, "
                          f"...), but this stage draws {size}x{size}",
                          fix="give the stage a 64, 128 or 256 output, or use the matching-aware discriminator")
    cond_dim = _need(ctx, "cond_dim", "stackgan-v2 discriminator")
    if cond_dim < 1:
        raise RecipeError("the stackgan-v2 discriminator judges the stage's condition, but it is empty",
                          fix="give the stage a ca conditioner (shared with the first stage in StackGAN-v2)")
    return orthogonal_init(V2Discriminator(options, size, ctx.image_channels, cond_dim))
