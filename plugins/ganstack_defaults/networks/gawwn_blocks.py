"""Pieces the GAWWN networks share (Reed et al. 2016, "Learning What and Where to Draw").

Both GAWWN generators (box and keypoints) work on a coarse ``grid x grid`` map (16x16 in the
paper) where the location is known, and both discriminators look at the image on the same grid.
This module holds what they have in common: the location masks and what is done with them, the
layer shapes of the official Torch code (transposed 4x4 convolutions, the discriminator's image
trunk, its 4x4 global path and its logit head). Reed's bottleneck residual is GAN-INT-CLS's
(``gan_int_cls.Bottleneck``), the same block in the same Torch code family.

As elsewhere in ganstack a convolution followed by BatchNorm has no bias (the Torch code has one,
which the BN shift cancels), so parameter counts are a little below the Torch model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstack.interfaces import BOX  # the field a box-conditioned component requests
from ganstack_defaults.networks.blocks import LEAK, replicate

GRID = 16  # the paper's location resolution (16x16 maps for boxes and keypoints)


# ------------------------------------------------------------------------------ locations on the grid
def box_mask(box: Tensor, size: int) -> Tensor:
    """How much of each cell of a ``size x size`` grid the box covers, ``[B, 1, size, size]`` in [0, 1].

    ``box`` is ``[B, 4]``: ``(x0, y0, x1, y1)`` in fractions of the image side, origin top left. A cell
    wholly inside is 1, wholly outside exactly 0, a cell the edge cuts the covered fraction, so a box
    smaller than a cell still shows (the soft edge a spatial transformer's bilinear sampling gives).
    """
    edges = torch.arange(size + 1, device=box.device, dtype=box.dtype) / size
    lo, hi = edges[:-1], edges[1:]

    def overlap(a: Tensor, b: Tensor) -> Tensor:  # [B] and [B] -> [B, size]
        return ((torch.minimum(b[:, None], hi) - torch.maximum(a[:, None], lo)) * size).clamp(0, 1)

    across, down = overlap(box[:, 0], box[:, 2]), overlap(box[:, 1], box[:, 3])
    return (down[:, :, None] * across[:, None, :])[:, None]


def masked_replicate(vector: Tensor, mask: Tensor) -> Tensor:
    """``[B, C]`` tiled over the mask's grid and multiplied by it: ``[B, C, H, W]``, zero outside.

    Reed's spatial transformer places replicated (constant) text features in the box; warping a
    constant map into the box is the same as masking it, which is what this does.
    """
    return replicate(vector, mask) * mask


def place_in_box(x: Tensor, box: Tensor) -> Tensor:
    """The whole map ``x`` ``[B, C, H, W]`` squeezed into the box, zero outside: Reed's spatial transformer.

    The Torch code warps the generator's local features into the box with an affine grid and
    bilinear sampling, so what the local pathway draws over the whole grid (an object and its
    surroundings) lands, scaled, inside the box. Coordinates follow the box's: fractions of the side
    measured from the image's edges (``align_corners=False``), so a box of the top-left quarter on an
    8x8 map holds the 2x2 means of ``x`` in its 4x4 cells.
    """
    b = box.float()
    width = (b[:, 2] - b[:, 0]).clamp_min(1e-3)
    height = (b[:, 3] - b[:, 1]).clamp_min(1e-3)
    theta = torch.zeros(b.shape[0], 2, 3, device=b.device)
    theta[:, 0, 0], theta[:, 0, 2] = 1 / width, (1 - b[:, 0] - b[:, 2]) / width
    theta[:, 1, 1], theta[:, 1, 2] = 1 / height, (1 - b[:, 1] - b[:, 3]) / height
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    placed = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return placed.to(x.dtype)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` ``[B, C, H, W]`` over the mask's cells, weighted by it: ``[B, C]``.

    The discriminator's local pathway crops its features to the box and averages them; with a mask
    this is the mean over the box (an empty mask gives zeros, not a division by zero).
    """
    weight = mask.sum(dim=(2, 3)).clamp_min(1e-6)
    return (x * mask).sum(dim=(2, 3)) / weight


def example_boxes(batch_size: int) -> Tensor:
    """A centred box covering the middle half of the image, ``[batch_size, 4]`` (for size estimates)."""
    return torch.tensor([[0.25, 0.25, 0.75, 0.75]]).expand(batch_size, 4).clone()


class ExampleBoxes:
    """``example_fields`` for a component that requests the box: one for each box-reading module."""

    def example_fields(self, batch_size: int) -> dict[str, Tensor]:
        """A centred box per example, for building and size estimates without data."""
        return {BOX: example_boxes(batch_size)}


# ---------------------------------------------------------------------------------------- layers
def _activation(kind: str | None) -> list[nn.Module]:
    if kind is None:
        return []
    return [nn.ReLU(inplace=True) if kind == "relu" else nn.LeakyReLU(LEAK, inplace=True)]


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0, *,
            act: str | None = "relu", batch_norm: bool = True) -> nn.Sequential:
    """Conv (bias only without BN) -> BN -> ``act`` (``relu``, ``leaky`` or None)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers, *_activation(act))


def deconv_bn(in_channels: int, out_channels: int, kernel: int = 4, stride: int = 2, padding: int = 1, *,
              act: str | None = "relu") -> nn.Sequential:
    """Transposed conv (no bias) -> BN -> ``act``: the Torch code's SpatialFullConvolution blocks.
    The defaults double the size; ``kernel=4, stride=1, padding=0`` turns 1x1 into 4x4."""
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(out_channels), *_activation(act))


UPSAMPLING = ("deconv", "nearest")


def double(in_channels: int, out_channels: int, *, upsample: str = "deconv", act: str | None = "relu") -> nn.Sequential:
    """Double the size, then BN and ``act``: a 4x4 stride-2 transposed conv (``deconv``, the Torch code) or
    nearest x2 and a 3x3 conv (``nearest``, no checkerboard pattern; StackGAN's up blocks)."""
    if upsample == "deconv":
        return deconv_bn(in_channels, out_channels, act=act)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         conv_bn(in_channels, out_channels, 3, padding=1, act=act))


def up_from_vector(in_channels: int, widths: Sequence[int], *, upsample: str = "deconv") -> nn.Sequential:
    """``[B, in, 1, 1]`` -> ``widths[0]`` at 4x4 (4x4 transposed conv), then one doubling (:func:`double`) per
    further width (BN and ReLU after each): the generators' global pathway."""
    layers = [deconv_bn(in_channels, widths[0], 4, 1, 0)]
    layers += [double(a, b, upsample=upsample) for a, b in pairwise(widths)]
    return nn.Sequential(*layers)


def down_to_vector(in_channels: int, widths: Sequence[int], *, act: str = "relu") -> nn.Sequential:
    """A ``4 * 2**(len(widths) - 1)`` map -> ``[B, widths[-1], 1, 1]``: 4x4 stride-2 convs down to 4x4,
    then a 4x4 valid conv (BN and ``act`` after each): how the Torch code reads a location map."""
    channels = [in_channels, *widths]
    layers = [conv_bn(a, b, 4, 2, 1, act=act) for a, b in pairwise(channels[:-1])]
    layers.append(conv_bn(channels[-2], channels[-1], 4, act=act))
    return nn.Sequential(*layers)


def up_to_image(widths: Sequence[int], image_channels: int, *, upsample: str = "deconv") -> nn.Sequential:
    """Doublings (:func:`double`) through ``widths`` (BN, ReLU), then a last doubling straight to the image
    and tanh, as the Torch generators end (``len(widths)`` doublings in all)."""
    layers: list[nn.Module] = [double(a, b, upsample=upsample) for a, b in pairwise(widths)]
    if upsample == "deconv":
        layers.append(nn.ConvTranspose2d(widths[-1], image_channels, 4, 2, 1))
    else:
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[-1], image_channels, 3, 1, 1)]
    return nn.Sequential(*layers, nn.Tanh())


def image_trunk(image_size: int, grid: int, ndf: int, image_channels: int) -> nn.Sequential:
    """The discriminators' image path: ``image_size`` down to ``grid``, ``2ndf`` channels out.

    One 4x4 stride-2 conv per halving, all at ``ndf`` but the last at ``2ndf`` (BN from the third
    on), LeakyReLU(0.2), then a 3x3 conv -> BN -> LeakyReLU: at 128 -> 16 the official ``ndf, ndf,
    2ndf, 2ndf``.
    """
    downs = (image_size // grid).bit_length() - 1
    widths = [image_channels] + [ndf] * (downs - 1) + [2 * ndf] * (downs > 0)
    layers = [conv_bn(a, b, 4, 2, 1, act="leaky", batch_norm=i >= 2) for i, (a, b) in enumerate(pairwise(widths))]
    layers.append(conv_bn(widths[-1], 2 * ndf, 3, padding=1, act="leaky"))
    return nn.Sequential(*layers)


def image_global_path(ndf: int, grid: int) -> nn.Sequential:
    """The trunk's ``2ndf x grid`` features down to ``8ndf x 4 x 4`` (4x4 stride-2 convs, BN,
    LeakyReLU; widths doubling, at most ``8ndf``): the discriminators' global image pathway."""
    halvings = (grid // 4).bit_length() - 1
    widths = [2 * ndf] + [min(8 * ndf, (4 * ndf) << i) for i in range(halvings)]
    widths[-1] = 8 * ndf
    return nn.Sequential(*(conv_bn(a, b, 4, 2, 1, act="leaky") for a, b in pairwise(widths)))


def text_compression(text_dim: int, out_dim: int) -> nn.Sequential:
    """The discriminators' own text compression: Linear -> LeakyReLU(0.2) (``nt`` = 128 in the paper)."""
    return nn.Sequential(nn.Linear(text_dim, out_dim), nn.LeakyReLU(LEAK))


def logit_head(ndf: int) -> nn.Sequential:
    """The local and global ``ndf`` vectors, joined, to a logit: Linear(2ndf, ndf) -> BN -> LeakyReLU ->
    Linear(ndf, 1). (The Torch code ends in a sigmoid; ganstack's losses take logits.)"""
    return nn.Sequential(nn.Linear(2 * ndf, ndf), nn.BatchNorm1d(ndf), nn.LeakyReLU(LEAK), nn.Linear(ndf, 1))
