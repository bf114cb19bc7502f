"""GAWWN's box-conditioned generator and discriminator (Reed et al. 2016, "Learning What and Where to Draw").

Both request the dataset's ``box`` (``(x0, y0, x1, y1)``, fractions of the side, origin top left)
and work on a ``grid x grid`` map (16x16 in the paper). The official Torch code
(``main_cub_bbox.lua``) places features in the box with a spatial transformer. The generator's local
features are squeezed into the box the same way (:func:`gawwn_blocks.place_in_box`); for the
replicated text, which is constant over the grid, warping it into the box and masking it are the
same thing, so a mask of the box (:func:`gawwn_blocks.box_mask`) does it; the discriminator averages
its local features over the box rather than cropping and resampling them.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import BOX, SAVED_BEFORE, Condition, StageContext, StageOutput
from ganstack_defaults.networks.blocks import LEAK, first_stage_cond_dim, init_weights, log2_exact, replicate
from ganstack_defaults.networks.gan_int_cls import Bottleneck
from ganstack_defaults.networks.gawwn_blocks import (
    GRID,
    UPSAMPLING,
    ExampleBoxes,
    box_mask,
    conv_bn,
    deconv_bn,
    double,
    down_to_vector,
    image_global_path,
    image_trunk,
    logit_head,
    masked_mean,
    masked_replicate,
    place_in_box,
    text_compression,
    up_from_vector,
    up_to_image,
)

TEXT_CHANNELS_D = 128  # the paper's nt: the discriminator's compressed text


def _grid(instance: Any, attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 8 or log2_exact(value) is None:
        raise ValueError(f"'grid' must be a power of two >= 8 (8, 16, 32), got {value!r}")


def _out_size_above_grid(instance: GawwnBoxGeneratorOptions, attribute: Any, value: int) -> None:
    if value <= instance.grid or value % instance.grid or log2_exact(value // instance.grid) is None:
        raise ValueError(f"'out_size' must be the grid ({instance.grid}) times a power of two >= 2 "
                         f"(the generator doubles the grid up to the image), got {value}")


def _level_widths(ngf: int, grid: int) -> list[int]:
    """Channels of the generators' pathways at 4x4, 8x8, ..., grid: ``8ngf`` halving, ending at ``2ngf``
    (``8ngf, 4ngf, 2ngf`` on the paper's 16x16 grid)."""
    levels = (grid // 4).bit_length()
    widths = [max(8 * ngf >> i, 2 * ngf) for i in range(levels)]
    widths[-1] = 2 * ngf
    return widths


def _image_widths(ngf: int, ups: int) -> list[int]:
    """Channels of the doublings from the grid to the image: ``2ngf``, then halved, then quartered
    (``256, 128, 32`` at ngf 128 from 16 to 128, as the Torch code)."""
    return [2 * ngf] + [max(1, (2 * ngf) >> (2 * j - 1)) for j in range(1, ups)]


# ----------------------------------------------------------------------------------- generator
@attrs.define(frozen=True, kw_only=True)
class GawwnBoxGeneratorOptions:
    """Options of the ``gawwn-box`` generator stage."""

    ngf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "base width: both pathways start at `8*ngf` channels at 4x4 and reach `2*ngf` on the grid (128 in the paper's CUB model)"})
    grid: int = attrs.field(default=GRID, validator=_grid, metadata={
        "doc": "side of the map the box is placed on (16 in the paper)"})
    out_size: int = attrs.field(default=128, validator=_out_size_above_grid, metadata={
        "doc": "side of the image drawn, the grid times a power of two (128 in the paper)"})
    text_channels: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)),
                                            metadata={
        "doc": "size of the generator's linear compression of the condition, shared by both pathways (default `4*ngf`, as the Torch code)"})
    upsample: Literal["deconv", "nearest"] = attrs.field(default="deconv", validator=attrs.validators.in_(UPSAMPLING),
                                                         metadata={
        "doc": "how each doubling after 4x4 is made: `deconv` (4x4 stride-2 transposed convs, the Torch code) or `nearest` (nearest x2 then a 3x3 conv: no checkerboard pattern, as StackGAN's up blocks)"})
    mask_channel: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "also join the box mask itself to the two pathways' maps, as the keypoint generator joins its keypoint maps (not in the box paper)"})
    text_global: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "also join the compressed text itself to the global pathway's vector, so what lies outside the box (the background) reads the caption directly rather than through the text placed in the box (not in the paper)"})
    placement: Literal["warp", "cut"] = attrs.field(default="warp", validator=attrs.validators.in_(("warp", "cut")),
                                                    metadata={
        "doc": "how the local pathway's map reaches the box: `warp` squeezes the whole map into it (the Torch code's spatial transformer, so the object it draws fills the box) or `cut` keeps the part of the map that lies in the box (ganstack before 2026-12-04, and runs saved then)",
        SAVED_BEFORE: "cut"})


class GawwnBoxGenerator(ExampleBoxes, nn.Module):
    """GAWWN's box generator: a global and a local pathway meet on the grid, then upsample to the image.

    The condition ``c`` (the raw text embedding with an ``identity`` conditioner, as in the paper) is
    compressed by one linear layer to ``t`` (``text_channels``), which both pathways use:

    - global: ``t`` replicated over the grid and masked by the box, read down to a ``4ngf`` vector
      (4x4 stride-2 convs, a 4x4 valid conv, BN, ReLU), joined with ReLU(Linear(z)) and upsampled
      from 1x1 to the grid (``8ngf`` at 4x4, ``4ngf`` at 8x8, ``2ngf`` at 16x16);
    - local: ReLU(cat(Linear(z), t)) upsampled from 1x1 with Reed's bottleneck residual at each size
      but the last, to ``2ngf`` on the grid, then squeezed into the box (``placement: warp``, the
      spatial transformer) or cut to it (``cut``) and ReLU'd: what it draws over the whole grid is
      what lies in the box;
    - joined (``4ngf``): a 3x3 conv to ``2ngf``, doublings to the image (``ngf``, ``ngf/4``), a last
      transposed conv to RGB and tanh.

    ``features`` is ``None``: the last layer goes straight to the image (refine it with
    ``stackgan-refiner`` ``input: image``).
    """

    requests = frozenset({BOX})
    feature_channels = 0

    def __init__(self, options: GawwnBoxGeneratorOptions, noise_dim: int, cond_dim: int,
                 image_channels: int) -> None:
        super().__init__()
        n, grid = options.ngf, options.grid
        self.grid = grid
        self.out_size = options.out_size
        text_channels = options.text_channels or 4 * n
        widths = _level_widths(n, grid)
        self.text = nn.Linear(cond_dim, text_channels)
        self.noise_global = nn.Linear(noise_dim, 4 * n)
        self.noise_local = nn.Linear(noise_dim, 4 * n)
        self.global_text = down_to_vector(text_channels, [4 * n] * len(widths))
        self.text_global = options.text_global
        self.global_up = up_from_vector(8 * n + text_channels * options.text_global, widths, upsample=options.upsample)
        local: list[nn.Module] = [deconv_bn(4 * n + text_channels, widths[0], 4, 1, 0, act=None)]
        for i, width in enumerate(widths):
            if i:
                local.append(double(widths[i - 1], width, upsample=options.upsample, act=None))
            if i < len(widths) - 1:
                local += [Bottleneck(width, leaky=False), nn.ReLU(inplace=True)]  # Reed's residual, then ReLU
        self.local_up = nn.Sequential(*local)
        self.placement = options.placement
        self.mask_channel = options.mask_channel
        self.joint = conv_bn(4 * n + int(options.mask_channel), 2 * n, 3, padding=1)
        ups = log2_exact(options.out_size // grid) or 0
        self.to_image = up_to_image(_image_widths(n, ups), image_channels, upsample=options.upsample)

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None, *,
                fields: dict[str, Tensor]) -> StageOutput:
        if z is None:
            raise ValueError("gawwn-box draws from noise, so it must be the first stage")
        mask = box_mask(fields[BOX].to(z.dtype), self.grid)
        t = self.text(condition.c)
        placed = masked_replicate(t, mask)
        parts = [torch.relu(self.noise_global(z)), self.global_text(placed).flatten(1)]
        global_vector = torch.cat([*parts, t] if self.text_global else parts, dim=1)
        global_map = self.global_up(global_vector[:, :, None, None])
        local_vector = torch.relu(torch.cat([self.noise_local(z), t], dim=1))
        local_map = self.local_up(local_vector[:, :, None, None])
        placed_map = place_in_box(local_map, fields[BOX]) if self.placement == "warp" else local_map * mask
        local_map = torch.relu(placed_map)
        maps = [global_map, local_map, mask] if self.mask_channel else [global_map, local_map]
        image = self.to_image(self.joint(torch.cat(maps, dim=1)))
        return StageOutput(image=image, features=None)


def build_gawwn_box_generator(options: GawwnBoxGeneratorOptions, ctx: StageContext) -> GawwnBoxGenerator:
    """GAWWN box generator: noise, text and a box to an image, the text placed in the box."""
    cond_dim = first_stage_cond_dim("gawwn-box", ctx)
    return init_weights(GawwnBoxGenerator(options, ctx.noise_dim, cond_dim, ctx.image_channels))


# ------------------------------------------------------------------------------- discriminator
@attrs.define(frozen=True, kw_only=True)
class GawwnBoxDiscriminatorOptions:
    """Options of the ``gawwn-box`` discriminator."""

    ndf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "base width: the image trunk gives `2*ndf` channels on the grid, the global path `8*ndf` at 4x4 (128 in the published CUB run; the Torch script's default is 64)"})
    grid: int = attrs.field(default=GRID, validator=_grid, metadata={
        "doc": "side of the map the box is placed on, as the generator's (16 in the paper)"})
    text_channels: int = attrs.field(default=TEXT_CHANNELS_D, validator=attrs.validators.ge(1), metadata={
        "doc": "size of D's own text compression (128 in the paper); with `condition: mu` the condition's size is used"})
    condition: Literal["text", "mu"] = attrs.field(default="text", validator=attrs.validators.in_(("text", "mu")),
                                                   metadata={
        "doc": "`text` (D compresses the raw embedding itself, as the paper) or `mu` (the stage's condition mean, detached)"})
    mask_channel: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "also join the box mask itself to the local pathway's input, as the keypoint discriminator joins its keypoint maps (not in the box paper)"})
    projection: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "add the inner product of the projected text with the joined local and global vectors to the logit (Miyato and Koyama's projection; not in the paper): D learns what the words mean sooner, as the quickstart's `projection` D does"})


class GawwnBoxDiscriminator(ExampleBoxes, nn.Module):
    """GAWWN's box discriminator: a local pathway over the box and a global one, joined to a logit.

    ``features``: the image trunk (4x4 stride-2 convs to the grid, ``2ndf`` channels). With the text
    ``t`` (D's own Linear -> LeakyReLU compression to ``text_channels``) and the box's mask:

    - local: ``cat(features, t replicated)`` -> 3x3 conv -> BN -> LeakyReLU, cut to the box, two 1x1
      convs (``2ndf`` then ``ndf``), averaged over the box, LeakyReLU;
    - global: the features down to ``8ndf`` at 4x4, joined with ``t`` replicated over the grid,
      masked by the box and convolved down to ``ndf`` at 4x4; a 1x1 conv to ``4ndf`` and a 4x4 valid
      conv to ``ndf``;
    - both ``ndf`` vectors joined: Linear -> BN -> LeakyReLU -> Linear to one logit (with ``projection``,
      plus the inner product of the joined vector and a linear projection of ``t``).

    No unconditional head (the paper has none): ``uncond_logits`` is ``None``.
    """

    requests = frozenset({BOX})

    def __init__(self, options: GawwnBoxDiscriminatorOptions, image_size: int, image_channels: int,
                 text_dim: int) -> None:
        super().__init__()
        d, nt, grid = options.ndf, options.text_channels, options.grid
        self.grid = grid
        self.condition = options.condition
        self.trunk = image_trunk(image_size, grid, d, image_channels)
        self.compress_text = text_compression(text_dim, nt) if options.condition == "text" else None
        self.mask_channel = options.mask_channel
        self.local_join = conv_bn(2 * d + nt + int(options.mask_channel), 2 * d, 3, padding=1, act="leaky")
        self.local_read = nn.Sequential(conv_bn(2 * d, 2 * d, 1, act="leaky"), nn.Conv2d(2 * d, d, 1))
        self.global_image = image_global_path(d, grid)
        halvings = (grid // 4).bit_length() - 1
        text_widths = [nt] + [4 * d] * (halvings - 1) + [d] * (halvings > 0)
        self.global_text = nn.Sequential(*(conv_bn(a, b, 4, 2, 1) for a, b in zip(text_widths, text_widths[1:],
                                                                                   strict=False)))
        self.global_read = nn.Sequential(conv_bn(8 * d + text_widths[-1], 4 * d, 1, act="leaky"),
                                         conv_bn(4 * d, d, 4, act="leaky"))
        self.head = logit_head(d)
        self.project = nn.Linear(nt, 2 * d, bias=False) if options.projection else None

    def features(self, image: Tensor) -> Tensor:
        return self.trunk(image)

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor, *,
                    fields: dict[str, Tensor]) -> Tensor:
        mask = box_mask(fields[BOX].to(features.dtype), self.grid)
        t = condition.mu.detach() if self.compress_text is None else self.compress_text(text)
        parts = [features, replicate(t, features), mask] if self.mask_channel else [features, replicate(t, features)]
        joined = self.local_join(torch.cat(parts, dim=1))
        local = nn.functional.leaky_relu(masked_mean(self.local_read(joined * mask), mask), LEAK)
        text_map = self.global_text(masked_replicate(t, mask))
        global_ = self.global_read(torch.cat([self.global_image(features), text_map], dim=1)).flatten(1)
        joined = torch.cat([local, global_], dim=1)
        logits = self.head(joined).reshape(-1)
        if self.project is not None:
            logits = logits + (self.project(t) * joined).sum(dim=1)
        return logits

    def uncond_logits(self, features: Tensor, *, fields: dict[str, Tensor] | None = None) -> Tensor | None:
        return None


def build_gawwn_box_discriminator(options: GawwnBoxDiscriminatorOptions,
                                  ctx: StageContext) -> GawwnBoxDiscriminator:
    """GAWWN box discriminator: image, text and box to a logit, with a local pathway over the box."""
    size, grid = ctx.image_size, options.grid
    if size is None:
        raise ValueError("gawwn-box needs ctx.image_size; the stack must fill it in before building D")
    if size < grid or size % grid or log2_exact(size // grid) is None:
        raise RecipeError(f"the gawwn-box discriminator halves the image down to its {grid}x{grid} grid, which "
                          f"{size}x{size} does not reach", path="grid",
                          fix=f"use an image side that is {grid} times a power of two, or another grid")
    if options.condition == "mu" and ctx.cond_dim is None:
        raise ValueError("gawwn-box with condition: mu needs ctx.cond_dim; the stack must fill it in")
    text_dim = ctx.text_dim if options.condition == "text" else ctx.cond_dim
    if options.condition == "mu" and options.text_channels != ctx.cond_dim:
        options = attrs.evolve(options, text_channels=ctx.cond_dim)
    return init_weights(GawwnBoxDiscriminator(options, size, ctx.image_channels, text_dim))
