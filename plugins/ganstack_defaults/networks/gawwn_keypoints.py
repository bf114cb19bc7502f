"""GAWWN's keypoint-conditioned generator and discriminator (Reed et al. 2016, "Learning What and
Where to Draw"), with the layers of the authors' Torch code (nips2016, ``main_cub_keypoints.lua``).

Both request the dataset field ``keypoints`` (``[B, K, 3]``: x, y as fractions of the image side,
origin top left, and visible 1/0) and turn it into ``K x 16 x 16`` maps: a one at the cell holding
each visible part, nothing for an invisible one (:func:`keypoint_maps`). The *mask* is the sum of
the maps over the parts, clamped to [0, 1] (:func:`keypoint_mask`): where any part is.

The layer shapes the box networks share with these are in :mod:`gawwn_blocks`, Reed's residual in
:mod:`gan_int_cls` (as there, a convolution followed by BatchNorm has no bias, so the counts are a
little below the Torch model's).
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError, UserError
from ganstack.interfaces import KEYPOINTS, Condition, StageContext, StageOutput
from ganstack_defaults.networks.blocks import LEAK, first_stage_cond_dim, init_weights, replicate
from ganstack_defaults.networks.gan_int_cls import Bottleneck
from ganstack_defaults.networks.gawwn_blocks import (
    GRID,
    conv_bn,
    deconv_bn,
    down_to_vector,
    image_global_path,
    image_trunk,
    logit_head,
    masked_replicate,
    text_compression,
    up_from_vector,
    up_to_image,
)

OUT_SIZE = 128  # the image side both networks are built for (16x16 maps, three doublings)
CUB_PARTS = 15  # CUB-200-2011's part count (parts/parts.txt)
TEXT_CHANNELS_D = 128  # the Torch code's nt: the discriminator's compressed text


# ----------------------------------------------------------------------------------- keypoint maps
def keypoint_maps(keypoints: Tensor, size: int = GRID) -> Tensor:
    """``[B, K, 3]`` keypoints to ``[B, K, size, size]`` maps: a one in the cell holding each visible
    part (row ``floor(y * size)``, column ``floor(x * size)``, clamped to the grid), zeros for a part
    with ``visible < 0.5``.

    The Torch code rounds ``x * 16`` onto its 1-based grid, which puts a part half a cell up and to
    the left of the cell that holds it; here the cell is the one the point lies in.
    """
    x, y, visible = keypoints.unbind(-1)
    cells = torch.arange(size, device=keypoints.device)
    col = (x * size).floor().clamp(0, size - 1)
    row = (y * size).floor().clamp(0, size - 1)
    in_col = (col[..., None] == cells).to(keypoints.dtype)  # [B, K, size]
    in_row = (row[..., None] == cells).to(keypoints.dtype)
    on = (visible > 0.5).to(keypoints.dtype)[..., None, None]
    return in_row[..., :, None] * in_col[..., None, :] * on


def keypoint_mask(maps: Tensor) -> Tensor:
    """``[B, K, H, W]`` maps to the ``[B, 1, H, W]`` mask: their sum over parts, clamped to [0, 1]."""
    return maps.sum(dim=1, keepdim=True).clamp(0, 1)


def example_keypoints(batch_size: int, parts: int = CUB_PARTS) -> Tensor:
    """Keypoints where no data is at hand (``check --params``): every part visible, spread left to
    right across the middle of the image."""
    x = torch.linspace(0.25, 0.75, parts)
    one = torch.stack([x, torch.full_like(x, 0.5), torch.ones_like(x)], dim=1)
    return one.expand(batch_size, parts, 3).clone()


def _maps_of(fields: dict[str, Tensor] | None, parts: int, who: str) -> Tensor:
    """The keypoint maps of ``fields``, after checking that they hold ``[B, parts, 3]``."""
    kp = None if fields is None else fields.get(KEYPOINTS)
    if kp is None:
        raise UserError(f"{who} draws where the parts are, but no keypoints were given",
                        fix="train on a dataset that yields keypoints (stackgan-birds does); "
                            "to sample, give `ganstack sample --keypoints FILE.json`")
    if kp.dim() != 3 or kp.shape[1:] != (parts, 3):
        raise UserError(f"{who} is built for {parts} parts (option 'parts'), but got keypoints of shape "
                        f"{tuple(kp.shape)}, not [batch, {parts}, 3]",
                        fix=f"give {parts} [x, y, visible] triples per image, or set 'parts' to the "
                            "dataset's part count")
    return keypoint_maps(kp.float())


# ---------------------------------------------------------------------------------------- options
def _check_parts(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"'{attribute.name}' is the number of keypoints per image (15 for CUB), got {value!r}")


# ------------------------------------------------------------------------------------ generator
@attrs.define(frozen=True, kw_only=True)
class KeypointGeneratorOptions:
    """Options of the ``gawwn-keypoints`` generator stage."""

    ngf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "base width: noise and text each to `4ngf`, the local pathway at `4ngf`, the global one "
               "ending at `ngf` on the 16x16 grid (128, the Torch code's default and its CUB training script's)"})
    parts: int = attrs.field(default=CUB_PARTS, validator=_check_parts, metadata={
        "doc": "keypoints per image, one map each (15 for CUB's parts)"})


class KeypointGenerator(nn.Module):
    """GAWWN's keypoint generator: noise, text and keypoints to a 128x128 image.

    Noise and the condition ``c`` (the raw text embedding with an ``identity`` conditioner, as in the
    paper) each go through a linear layer to ``4ngf``, joined and ReLU'd (``h``, ``8ngf``), which both
    pathways read:

    - local: Linear -> BN -> ReLU to ``4ngf``, replicated over the 16x16 grid and multiplied by the
      keypoint mask (the text is written only where parts are), then a 3x3 transposed conv;
    - global: the keypoint maps read down to a ``4ngf`` vector (4x4 stride-2 convs, a 4x4 valid
      conv), joined with Linear -> BN -> ReLU of ``h`` (``4ngf``), upsampled from 1x1 to the grid
      (``4ngf`` at 4x4, ``2ngf`` at 8x8, ``ngf`` at 16x16);
    - joined with the raw maps (``5ngf + K``): two 3x3 transposed convs to ``4ngf``, Reed's
      bottleneck residual (``gan_int_cls.Bottleneck``, through ``ngf`` channels) and a ReLU,
      doublings to 32 (``2ngf``) and 64 (``ngf``), a last transposed conv to RGB at 128 and tanh.

    ``features`` is ``None``: the last layer goes straight to the image (as ``gawwn-box``).
    """

    requests = frozenset({KEYPOINTS})
    feature_channels = 0

    def __init__(self, options: KeypointGeneratorOptions, noise_dim: int, cond_dim: int,
                 image_channels: int) -> None:
        super().__init__()
        n, parts = options.ngf, options.parts
        self.parts = parts
        self.out_size = OUT_SIZE
        self.noise = nn.Linear(noise_dim, 4 * n)
        self.text = nn.Linear(cond_dim, 4 * n)  # one module in the Torch code, read by both pathways
        self.local_vector = nn.Sequential(nn.Linear(8 * n, 4 * n), nn.BatchNorm1d(4 * n), nn.ReLU(inplace=True))
        self.local_conv = deconv_bn(4 * n, 4 * n, 3, 1, 1)
        self.global_vector = nn.Sequential(nn.Linear(8 * n, 4 * n), nn.BatchNorm1d(4 * n), nn.ReLU(inplace=True))
        self.global_keypoints = down_to_vector(parts, [n, 2 * n, 4 * n])
        self.global_up = up_from_vector(8 * n, [4 * n, 2 * n, n])
        self.joint = nn.Sequential(deconv_bn(5 * n + parts, 4 * n, 3, 1, 1), deconv_bn(4 * n, 4 * n, 3, 1, 1, act=None),
                                   Bottleneck(4 * n, leaky=False), nn.ReLU(inplace=True))  # Reed's residual
        self.to_image = up_to_image([4 * n, 2 * n, n], image_channels)

    def example_fields(self, batch_size: int) -> dict[str, Tensor]:
        """Keypoints across the middle of the image, for building and size estimates without data."""
        return {KEYPOINTS: example_keypoints(batch_size, self.parts)}

    def masked_text(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """The local pathway before its convolution: ``h``'s ``4ngf`` vector replicated over the grid
        and multiplied by the mask (zero wherever no part is)."""
        return masked_replicate(self.local_vector(hidden), mask)

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None, *,
                fields: dict[str, Tensor] | None = None) -> StageOutput:
        if z is None:
            raise ValueError("gawwn-keypoints draws from noise, so it must be the first stage")
        maps = _maps_of(fields, self.parts, "the gawwn-keypoints generator").to(z.dtype)
        hidden = torch.relu(torch.cat([self.noise(z), self.text(condition.c)], dim=1))
        local_map = self.local_conv(self.masked_text(hidden, keypoint_mask(maps)))
        where = self.global_keypoints(maps).flatten(1)
        global_map = self.global_up(torch.cat([self.global_vector(hidden), where], dim=1)[:, :, None, None])
        image = self.to_image(self.joint(torch.cat([global_map, local_map, maps], dim=1)))
        return StageOutput(image=image, features=None)


def build_keypoint_generator(options: KeypointGeneratorOptions, ctx: StageContext) -> KeypointGenerator:
    """GAWWN keypoint generator: noise, text and part locations to a 128x128 image."""
    cond_dim = first_stage_cond_dim("gawwn-keypoints", ctx)
    return init_weights(KeypointGenerator(options, ctx.noise_dim, cond_dim, ctx.image_channels))


# -------------------------------------------------------------------------------- discriminator
@attrs.define(frozen=True, kw_only=True)
class KeypointDiscriminatorOptions:
    """Options of the ``gawwn-keypoints`` discriminator."""

    ndf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "base width: the image trunk gives `2*ndf` channels on the 16x16 grid, the global path `8*ndf` "
               "at 4x4 (128 in the Torch code's CUB keypoint training script; its default is 64)"})
    text_channels: int = attrs.field(default=TEXT_CHANNELS_D, validator=attrs.validators.ge(1), metadata={
        "doc": "size of D's own text compression, read by both pathways (128 in the Torch code)"})
    parts: int = attrs.field(default=CUB_PARTS, validator=_check_parts, metadata={
        "doc": "keypoints per image, one map each (15 for CUB's parts)"})


class KeypointDiscriminator(nn.Module):
    """GAWWN's keypoint discriminator: a local pathway masked by the keypoints and a global one.

    ``features``: the image trunk (128 down to the 16x16 grid, ``2ndf`` channels). With the text
    ``t`` (D's own Linear -> LeakyReLU compression to ``text_channels``) and the keypoint maps:

    - local: ``cat(features, t replicated)`` -> 3x3 conv -> BN -> LeakyReLU, multiplied by the
      keypoint mask, joined with the maps, 1x1 convs to ``2ndf`` and ``ndf``, averaged over the grid,
      LeakyReLU;
    - global: the features down to ``8ndf`` at 4x4, joined with ``t`` replicated, a 1x1 conv to
      ``4ndf`` and a 4x4 valid conv to ``ndf``;
    - both ``ndf`` vectors joined: Linear -> BN -> LeakyReLU -> Linear to one logit (the Torch code's
      sigmoid is in the losses).

    No unconditional head (the paper has none): ``uncond_logits`` is ``None``.
    """

    requests = frozenset({KEYPOINTS})

    def __init__(self, options: KeypointDiscriminatorOptions, image_channels: int, text_dim: int) -> None:
        super().__init__()
        d, nt, parts = options.ndf, options.text_channels, options.parts
        self.parts = parts
        self.trunk = image_trunk(OUT_SIZE, GRID, d, image_channels)
        self.compress_text = text_compression(text_dim, nt)
        self.local_join = conv_bn(2 * d + nt, 2 * d, 3, padding=1, act="leaky")
        self.local_read = nn.Sequential(conv_bn(2 * d + parts, 2 * d, 1, act="leaky"), nn.Conv2d(2 * d, d, 1))
        self.global_image = image_global_path(d, GRID)
        self.global_read = nn.Sequential(conv_bn(8 * d + nt, 4 * d, 1, act="leaky"), conv_bn(4 * d, d, 4, act="leaky"))
        self.head = logit_head(d)

    def example_fields(self, batch_size: int) -> dict[str, Tensor]:
        """Keypoints across the middle of the image, for building and size estimates without data."""
        return {KEYPOINTS: example_keypoints(batch_size, self.parts)}

    def features(self, image: Tensor) -> Tensor:
        return self.trunk(image)

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor, *,
                    fields: dict[str, Tensor] | None = None) -> Tensor:
        maps = _maps_of(fields, self.parts, "the gawwn-keypoints discriminator").to(features.dtype)
        t = self.compress_text(text)
        joined = self.local_join(torch.cat([features, replicate(t, features)], dim=1)) * keypoint_mask(maps)
        local = nn.functional.leaky_relu(self.local_read(torch.cat([joined, maps], dim=1)).mean(dim=(2, 3)), LEAK)
        global_map = self.global_image(features)
        global_ = self.global_read(torch.cat([global_map, replicate(t, global_map)], dim=1)).flatten(1)
        return self.head(torch.cat([local, global_], dim=1)).reshape(-1)

    def uncond_logits(self, features: Tensor, *, fields: dict[str, Tensor] | None = None) -> Tensor | None:
        return None


def build_keypoint_discriminator(options: KeypointDiscriminatorOptions,
                                 ctx: StageContext) -> KeypointDiscriminator:
    """GAWWN keypoint discriminator: image, text and part locations to one logit."""
    if ctx.image_size != OUT_SIZE:
        raise RecipeError(f"the gawwn-keypoints discriminator judges {OUT_SIZE}x{OUT_SIZE} images, but this "
                          f"stage draws {ctx.image_size}x{ctx.image_size}",
                          fix="use it with the gawwn-keypoints generator (128x128)")
    return init_weights(KeypointDiscriminator(options, ctx.image_channels, ctx.text_dim))
