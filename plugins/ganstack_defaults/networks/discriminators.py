"""Discriminators on StackGAN's down path, for any image size 4 * 2**k (k >= 1): StackGAN's
matching-aware one, which concatenates the text to the 4x4 features, and a projection one."""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Literal

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import BOX, Condition, StageContext
from ganstack_defaults.networks.blocks import (
    LEAK,
    conv_block,
    down_block,
    init_weights,
    log2_exact,
    with_condition,
)
from ganstack_defaults.networks.gawwn_blocks import ExampleBoxes, box_mask, masked_mean

TEXT_CONDITION_DIM = 128  # the TF code's compressed embedding size, when the stage's is unknown


def _only_for_text(instance: MatchingAwareOptions, attribute: Any, value: int | None) -> None:
    if value is not None and instance.condition != "text":
        raise ValueError(f"'condition_dim' sizes D's own text compression, used only with condition: text "
                         f"(condition is '{instance.condition}'); remove it or set condition: text")


@attrs.define(frozen=True, kw_only=True)
class MatchingAwareOptions:
    """Options of the ``matching-aware`` discriminator."""

    ndf: int = attrs.field(default=64, validator=attrs.validators.ge(1), metadata={
        "doc": "width of the first down block, doubled by each further one (64 in the paper, 96 for COCO)"})
    condition: Literal["mu", "text"] = attrs.field(default="mu", validator=attrs.validators.in_(("mu", "text")), metadata={
        "doc": "`mu` (the stage's CA mean, detached; PyTorch port) or `text` (D compresses the raw embedding itself; TF code)"})
    unconditional_head: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "add the image-only logit (the port's Stage-II)"})
    condition_dim: int | None = attrs.field(
        default=None, validator=[attrs.validators.optional(attrs.validators.ge(1)), _only_for_text], metadata={
        "doc": "size of that compression (`condition: text` only; default the stage's condition size, else 128)"})


def _image_path(image_size: int, image_channels: int, ndf: int) -> tuple[nn.Sequential, int]:
    """The down path to 4x4 and its output channels.

    One 4x4 stride-2 down block per halving, ``log2(image_size / 4)`` in all, with ``ndf * 2**i``
    channels (the first without BN). Where that ends above ``8ndf``, 3x3 conv -> BN -> LeakyReLU
    blocks halve the channels back to ``8ndf``: this gives StackGAN's 64x64 D (64, 128, 256, 512),
    its 256x256 D (64 ... 2048, then 1024, 512) and StackGAN-v2's 128x128 D (64 ... 1024, then
    512) from one rule. Below 64x64 the path ends at ``ndf * 2**(downs - 1)`` channels.
    """
    downs = log2_exact(image_size // 4) or 0
    widths = [ndf << i for i in range(downs)]
    layers = [down_block(image_channels, ndf, batch_norm=False)]
    layers += [down_block(a, b) for a, b in pairwise(widths)]
    channels = widths[-1]
    while channels > 8 * ndf:
        layers.append(conv_block(channels, channels // 2, leaky=True))
        channels //= 2
    return nn.Sequential(*layers), channels


class MatchingAwareDiscriminator(nn.Module):
    """StackGAN's discriminator: image features at 4x4, judged with the text (and optionally alone).

    ``cond_logits``: the condition replicated to 4x4 and concatenated after the features, 3x3
    conv -> BN -> LeakyReLU(0.2) at the feature width, 4x4 conv stride 4 -> one logit.
    ``uncond_logits``: a 4x4 conv stride 4 on the features alone (or ``None`` without that head).
    Logits, not probabilities: the losses apply the sigmoid.
    """

    def __init__(self, options: MatchingAwareOptions, image_size: int, image_channels: int, text_dim: int,
                 cond_dim: int) -> None:
        """``cond_dim``: the stage's condition size (``mu``) or D's own compressed size (``text``)."""
        super().__init__()
        self.condition = options.condition
        self.image_path, self.feature_channels = _image_path(image_size, image_channels, options.ndf)
        self.compress_text = (nn.Sequential(nn.Linear(text_dim, cond_dim), nn.LeakyReLU(LEAK))
                              if options.condition == "text" else None)
        width = self.feature_channels
        self.cond_head = nn.Sequential(conv_block(width + cond_dim, width, leaky=True),
                                       nn.Conv2d(width, 1, kernel_size=4, stride=4))
        self.uncond_head = nn.Conv2d(width, 1, kernel_size=4, stride=4) if options.unconditional_head else None

    def features(self, image: Tensor) -> Tensor:
        return self.image_path(image)

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor) -> Tensor:
        vector = condition.mu.detach() if self.compress_text is None else self.compress_text(text)
        return self.cond_head(with_condition(features, vector)).reshape(-1)

    def uncond_logits(self, features: Tensor) -> Tensor | None:
        return None if self.uncond_head is None else self.uncond_head(features).reshape(-1)


def _check_size(ctx: StageContext) -> None:
    if ctx.image_size is None:
        raise ValueError("the discriminator needs ctx.image_size; the stack must fill it in before building D")
    if ctx.image_size < 8 or ctx.image_size % 4 or log2_exact(ctx.image_size // 4) is None:
        raise RecipeError(f"the discriminator halves the image down to 4x4, which {ctx.image_size}x"
                          f"{ctx.image_size} does not reach",
                          fix="use image sizes that are 4 times a power of two: 8, 16, 32, 64, 128, 256, ...")


def build_matching_aware(options: MatchingAwareOptions, ctx: StageContext) -> MatchingAwareDiscriminator:
    """StackGAN matching-aware discriminator: conditional (and optional unconditional) logit."""
    _check_size(ctx)
    if options.condition == "text":
        cond_dim = options.condition_dim or ctx.cond_dim or TEXT_CONDITION_DIM
    elif ctx.cond_dim is None:
        raise ValueError("matching-aware with condition: mu needs ctx.cond_dim; the stack must fill it in")
    else:
        cond_dim = ctx.cond_dim
    return init_weights(MatchingAwareDiscriminator(options, ctx.image_size, ctx.image_channels, ctx.text_dim,
                                                   cond_dim))


@attrs.define(frozen=True, kw_only=True)
class ProjectionOptions:
    """Options of the ``projection`` discriminator."""

    ndf: int = attrs.field(default=64, validator=attrs.validators.ge(1), metadata={
        "doc": "width of the first down block, as `matching-aware`"})
    condition: Literal["mu", "text"] = attrs.field(default="text", validator=attrs.validators.in_(("mu", "text")), metadata={
        "doc": "`text` (the raw embedding, projected by D) or `mu` (the stage's condition mean, detached)"})
    unconditional_head: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "also report the image-only logit to losses that use it"})
    box: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "also read the example's bounding box (the dataset's `box` field): its 8x8 coverage map projected onto the image features as the text is (is the object there?), and the text projected onto the features averaged over the box (does it look as the caption says?); for box-conditioned stacks such as shapes_gawwn, not in the paper"})
    box_join: int = attrs.field(default=0, validator=attrs.validators.ge(0), metadata={
        "doc": "with `box`: hidden width of a small MLP on the text beside the features averaged inside and outside the box, one more logit term that can tell which colour lies where (0: off; not in the paper)"})

    def __attrs_post_init__(self) -> None:
        if self.box_join and not self.box:
            raise ValueError("'box_join' joins the text with the features in and around the box, so it needs "
                             "box: true; set box: true or remove box_join")


BOX_GRID = 8  # side of the box coverage map the projection D reads with ``box: true``


class ProjectionDiscriminator(ExampleBoxes, nn.Module):
    """Projection discriminator (Miyato and Koyama, 2018) on StackGAN's down path.

    The 4x4 feature map is flattened to ``h`` (not summed over space as in the paper, so that
    positions such as "top left" stay visible); the conditional logit is ``w.h + <V y, h>``, where
    ``y`` is the text (or the condition mean). The inner product asks every feature whether the
    image agrees with the text, a stronger signal than concatenating the text at 4x4, so
    text-image alignment is learnt in fewer steps (docs/benchmarks.md).

    With ``box`` (D requests the ``box`` field), two terms more: ``<U m, h>``, the box's coverage
    ``m`` of an 8x8 grid projected as the text is (is the object where the box says?), and
    ``<W y, mean of the 4x4 features over the box>`` (does what lies in the box match the text?),
    the one place where text, box and picture meet, as in GAWWN's local pathway.
    """

    def __init__(self, options: ProjectionOptions, image_size: int, image_channels: int, y_dim: int) -> None:
        super().__init__()
        self.condition = options.condition
        self.image_path, self.feature_channels = _image_path(image_size, image_channels, options.ndf)
        width = self.feature_channels * 16
        self.image_head = nn.Linear(width, 1)
        self.project = nn.Linear(y_dim, width, bias=False)
        self.report_uncond = options.unconditional_head
        self.project_box = nn.Linear(BOX_GRID * BOX_GRID, width, bias=False) if options.box else None
        self.project_in_box = nn.Linear(y_dim, self.feature_channels, bias=False) if options.box else None
        self.requests = frozenset({BOX}) if options.box else frozenset()
        self.join = nn.Sequential(nn.Linear(y_dim + 2 * self.feature_channels, options.box_join),
                                  nn.LeakyReLU(LEAK, inplace=True),
                                  nn.Linear(options.box_join, 1)) if options.box_join else None

    def features(self, image: Tensor) -> Tensor:
        return self.image_path(image).flatten(1)

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor, *,
                    fields: dict[str, Tensor] | None = None) -> Tensor:
        y = condition.mu.detach() if self.condition == "mu" else text
        logits = self.image_head(features).reshape(-1) + (self.project(y) * features).sum(dim=1)
        if self.project_box is not None:
            if fields is None or BOX not in fields:
                raise ValueError("projection with box: true needs fields['box']; the core passes what it requests")
            box = fields[BOX].to(features.dtype)
            logits = logits + (self.project_box(box_mask(box, BOX_GRID).flatten(1)) * features).sum(dim=1)
            grid, mask = features.view(len(features), self.feature_channels, 4, 4), box_mask(box, 4)
            in_box = masked_mean(grid, mask)
            logits = logits + (self.project_in_box(y) * in_box).sum(dim=1)
            if self.join is not None:
                joined = torch.cat([y, in_box, masked_mean(grid, 1 - mask)], dim=1)
                logits = logits + self.join(joined).reshape(-1)
        return logits

    def uncond_logits(self, features: Tensor, *, fields: dict[str, Tensor] | None = None) -> Tensor | None:
        return self.image_head(features).reshape(-1) if self.report_uncond else None


def build_projection(options: ProjectionOptions, ctx: StageContext) -> ProjectionDiscriminator:
    """Projection discriminator: image logit plus the inner product of text and image features."""
    _check_size(ctx)
    if options.condition == "mu" and ctx.cond_dim is None:
        raise ValueError("projection with condition: mu needs ctx.cond_dim; the stack must fill it in")
    y_dim = ctx.text_dim if options.condition == "text" else ctx.cond_dim
    return init_weights(ProjectionDiscriminator(options, ctx.image_size, ctx.image_channels, y_dim))
