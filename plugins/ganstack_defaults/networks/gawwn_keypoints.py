"""GAWWN's keypoint-conditioned generator and discriminator (Reed et al. 2016, "Learning What and
Where to Draw"), at the sizes of the authors' Torch code (nips2016, ``main_cub_keypoints.lua``).

Both request the dataset field ``keypoints`` (``[B, K, 3]``: x, y as fractions of the image side,
origin top left, and visible 1/0) and turn it into ``K x 16 x 16`` maps: a one at the cell holding
each visible part, nothing for an invisible one (:func:`keypoint_maps`). The *mask* is the sum of
the maps over the parts, clamped to [0, 1] (:func:`keypoint_mask`): where any part is.

Generator: noise and text each through a linear layer, joined (``8ngf``); a *local* pathway (a
linear layer to ``4ngf``, replicated to 16x16 and multiplied by the mask, so the text is written
only where parts are) and a *global* pathway (the maps convolved to a ``4ngf`` vector, joined with
the noise-and-text vector and upsampled 1 -> 16); the two and the raw maps are concatenated, refined
at 16x16 (with a residual block), and upsampled to 128x128. Discriminator: the image down to 16x16;
a local branch (those features with the replicated text, masked by the keypoints, then the maps
added, averaged over space) and a global branch (further down to 4x4, with the text); the two
vectors joined, one logit.

Layers are the Torch code's: convolutions with biases, transposed convolutions where it has
``SpatialFullConvolution``, its init (:func:`gawwn_init`).
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError, UserError
from ganstack.interfaces import Condition, StageContext, StageOutput
from ganstack_defaults.networks.blocks import LEAK, replicate

GRID = 16  # side of the keypoint maps (Reed's keypoint_dim; his networks are built for 16)
OUT_SIZE = 128  # the image side both networks are built for
CUB_PARTS = 15  # CUB-200-2011's part count (parts/parts.txt)
FIELD = "keypoints"


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
    kp = None if fields is None else fields.get(FIELD)
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


# ----------------------------------------------------------------------------------- layers, init
def gawwn_init(module: nn.Module) -> nn.Module:
    """The Torch code's init: (transposed) convolution weights ~ N(0, 0.02) with zero biases,
    BatchNorm weights ~ N(1, 0.02) with zero biases; linear layers keep their default (uniform in
    +-1/sqrt(fan_in), the same in Torch and PyTorch)."""
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def _conv(a: int, b: int, k: int, stride: int = 1, pad: int = 0) -> nn.Conv2d:
    return nn.Conv2d(a, b, k, stride, pad)


def _deconv(a: int, b: int, k: int, stride: int = 1, pad: int = 0) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(a, b, k, stride, pad)


def _bn_relu(layer: nn.Module, channels: int) -> list[nn.Module]:
    return [layer, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


def _bn_leaky(layer: nn.Module, channels: int) -> list[nn.Module]:
    return [layer, nn.BatchNorm2d(channels), nn.LeakyReLU(LEAK, inplace=True)]


def _check_parts(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"'{attribute.name}' is the number of keypoints per image (15 for CUB), got {value!r}")


# ------------------------------------------------------------------------------------ generator
@attrs.define(frozen=True, kw_only=True)
class KeypointGeneratorOptions:
    """Options of the ``gawwn-keypoints`` generator stage."""

    ngf: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "base width: noise and text each to `4ngf`, the pathways at `4ngf` and `ngf`, `ngf` at 64x64 "
               "(128, Reed's default and his CUB training script's)"})
    parts: int = attrs.field(default=CUB_PARTS, validator=_check_parts, metadata={
        "doc": "keypoints per image, one map each (15 for CUB's parts)"})


class KeypointGenerator(nn.Module):
    """GAWWN's keypoint generator: noise, text and keypoints to a 128x128 image (module docstring).

    ``features`` is the ``ngf x 64 x 64`` map before the last up-convolution.
    """

    requests = frozenset({FIELD})

    def __init__(self, options: KeypointGeneratorOptions, noise_dim: int, cond_dim: int,
                 image_channels: int) -> None:
        super().__init__()
        ngf, parts = options.ngf, options.parts
        self.parts = parts
        self.out_size = OUT_SIZE
        self.feature_channels = ngf
        # noise and text to 8ngf, shared by both pathways (one module in the Torch code)
        self.noise_fc = nn.Linear(noise_dim, 4 * ngf)
        self.text_fc = nn.Linear(cond_dim, 4 * ngf)
        self.local_fc = nn.Sequential(nn.Linear(8 * ngf, 4 * ngf), nn.BatchNorm1d(4 * ngf), nn.ReLU(inplace=True))
        self.local_conv = nn.Sequential(*_bn_relu(_deconv(4 * ngf, 4 * ngf, 3, 1, 1), 4 * ngf))
        self.global_fc = nn.Sequential(nn.Linear(8 * ngf, 4 * ngf), nn.BatchNorm1d(4 * ngf), nn.ReLU(inplace=True))
        self.keypoint_encoder = nn.Sequential(  # 16 -> 8 -> 4 -> 1
            *_bn_relu(_conv(parts, ngf, 4, 2, 1), ngf), *_bn_relu(_conv(ngf, 2 * ngf, 4, 2, 1), 2 * ngf),
            *_bn_relu(_conv(2 * ngf, 4 * ngf, 4), 4 * ngf))
        self.global_up = nn.Sequential(  # 1 -> 4 -> 8 -> 16
            *_bn_relu(_deconv(8 * ngf, 4 * ngf, 4), 4 * ngf), *_bn_relu(_deconv(4 * ngf, 2 * ngf, 4, 2, 1), 2 * ngf),
            *_bn_relu(_deconv(2 * ngf, ngf, 4, 2, 1), ngf))
        self.join = nn.Sequential(*_bn_relu(_deconv(5 * ngf + parts, 4 * ngf, 3, 1, 1), 4 * ngf),
                                  _deconv(4 * ngf, 4 * ngf, 3, 1, 1), nn.BatchNorm2d(4 * ngf))
        self.residual = nn.Sequential(*_bn_relu(_conv(4 * ngf, ngf, 1), ngf), *_bn_relu(_conv(ngf, ngf, 3, 1, 1), ngf),
                                      _conv(ngf, 4 * ngf, 3, 1, 1), nn.BatchNorm2d(4 * ngf))
        self.up = nn.Sequential(*_bn_relu(_deconv(4 * ngf, 2 * ngf, 4, 2, 1), 2 * ngf),  # 16 -> 32 -> 64
                                *_bn_relu(_deconv(2 * ngf, ngf, 4, 2, 1), ngf))
        self.to_image = nn.Sequential(_deconv(ngf, image_channels, 4, 2, 1), nn.Tanh())  # 64 -> 128

    def example_fields(self, batch_size: int) -> dict[str, Tensor]:
        return {FIELD: example_keypoints(batch_size, self.parts)}

    def masked_text(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """The local pathway before its convolution: the ``4ngf`` text-and-noise vector replicated over
        the grid and multiplied by the mask (zero wherever no part is)."""
        vector = self.local_fc(hidden)
        return replicate(vector, mask) * mask

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None, *,
                fields: dict[str, Tensor] | None = None) -> StageOutput:
        if z is None:
            raise ValueError("gawwn-keypoints draws from noise: it needs z (it must be the first stage)")
        maps = _maps_of(fields, self.parts, "the gawwn-keypoints generator").to(z.dtype)
        hidden = torch.relu(torch.cat([self.noise_fc(z), self.text_fc(condition.c)], dim=1))
        local = self.local_conv(self.masked_text(hidden, keypoint_mask(maps)))
        where = self.keypoint_encoder(maps).flatten(1)
        glob = self.global_up(torch.cat([self.global_fc(hidden), where], dim=1)[:, :, None, None])
        x = self.join(torch.cat([glob, local, maps], dim=1))
        features = self.up(torch.relu(x + self.residual(x)))
        return StageOutput(image=self.to_image(features), features=features)


def build_keypoint_generator(options: KeypointGeneratorOptions, ctx: StageContext) -> KeypointGenerator:
    """GAWWN keypoint generator: noise, text and part locations to a 128x128 image."""
    if ctx.index != 0:
        raise RecipeError(f"gawwn-keypoints is stage {ctx.index + 1}, but it draws from noise and only the "
                          "first stage gets noise", fix="make gawwn-keypoints the first stage")
    if ctx.cond_dim is None:
        raise ValueError("gawwn-keypoints needs ctx.cond_dim; the stack must fill it in")
    return gawwn_init(KeypointGenerator(options, ctx.noise_dim, ctx.cond_dim, ctx.image_channels))


# -------------------------------------------------------------------------------- discriminator
@attrs.define(frozen=True, kw_only=True)
class KeypointDiscriminatorOptions:
    """Options of the ``gawwn-keypoints`` discriminator."""

    ndf: int = attrs.field(default=64, validator=attrs.validators.ge(1), metadata={
        "doc": "base width: `ndf` at 64x64 and 32x32, `2ndf` at 16x16, `8ndf` at 4x4 (64, Reed's default; "
               "his CUB training script sets 128)"})
    condition_dim: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "size D compresses the raw text embedding to, for both branches (128 in the Torch code)"})
    parts: int = attrs.field(default=CUB_PARTS, validator=_check_parts, metadata={
        "doc": "keypoints per image, one map each (15 for CUB's parts)"})


class KeypointDiscriminator(nn.Module):
    """GAWWN's keypoint discriminator (module docstring); returns logits (the losses apply the sigmoid).

    ``features`` runs every image-only layer once: the ``2ndf x 16 x 16`` map the local branch
    starts from and the ``8ndf x 4 x 4`` map of the global branch, flattened and concatenated into
    one ``[B, N]`` tensor (so a batch slice of it is a slice of both).
    """

    requests = frozenset({FIELD})

    def __init__(self, options: KeypointDiscriminatorOptions, image_channels: int, text_dim: int) -> None:
        super().__init__()
        ndf, nt, parts = options.ndf, options.condition_dim, options.parts
        self.parts = parts
        self._local_shape = (2 * ndf, GRID, GRID)
        self._global_shape = (8 * ndf, 4, 4)
        self.image_path = nn.Sequential(  # 128 -> 64 -> 32 -> 16, then a 3x3 at 16
            _conv(image_channels, ndf, 4, 2, 1), nn.LeakyReLU(LEAK, inplace=True),
            _conv(ndf, ndf, 4, 2, 1), nn.LeakyReLU(LEAK, inplace=True),
            *_bn_leaky(_conv(ndf, 2 * ndf, 4, 2, 1), 2 * ndf), *_bn_leaky(_conv(2 * ndf, 2 * ndf, 3, 1, 1), 2 * ndf))
        self.global_path = nn.Sequential(  # 16 -> 8 -> 4
            *_bn_leaky(_conv(2 * ndf, 4 * ndf, 4, 2, 1), 4 * ndf), *_bn_leaky(_conv(4 * ndf, 8 * ndf, 4, 2, 1), 8 * ndf))
        self.compress_text = nn.Sequential(nn.Linear(text_dim, nt), nn.LeakyReLU(LEAK))
        self.local_text = nn.Sequential(*_bn_leaky(_conv(2 * ndf + nt, 2 * ndf, 3, 1, 1), 2 * ndf))
        self.local_head = nn.Sequential(*_bn_leaky(_conv(2 * ndf + parts, 2 * ndf, 1), 2 * ndf),
                                        _conv(2 * ndf, ndf, 1))
        self.global_head = nn.Sequential(*_bn_leaky(_conv(8 * ndf + nt, 4 * ndf, 1), 4 * ndf),
                                         *_bn_leaky(_conv(4 * ndf, ndf, 4), ndf))
        self.classifier = nn.Sequential(nn.Linear(2 * ndf, ndf), nn.BatchNorm1d(ndf), nn.LeakyReLU(LEAK),
                                        nn.Linear(ndf, 1))

    def example_fields(self, batch_size: int) -> dict[str, Tensor]:
        return {FIELD: example_keypoints(batch_size, self.parts)}

    def features(self, image: Tensor) -> Tensor:
        local = self.image_path(image)
        return torch.cat([local.flatten(1), self.global_path(local).flatten(1)], dim=1)

    def split_features(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`features`' tensor back into the 16x16 and the 4x4 maps."""
        n_local = self._local_shape[0] * GRID * GRID
        return (features[:, :n_local].reshape(-1, *self._local_shape),
                features[:, n_local:].reshape(-1, *self._global_shape))

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor, *,
                    fields: dict[str, Tensor] | None = None) -> Tensor:
        local, glob = self.split_features(features)
        maps = _maps_of(fields, self.parts, "the gawwn-keypoints discriminator").to(local.dtype)
        words = self.compress_text(text)
        x = self.local_text(torch.cat([local, replicate(words, local)], dim=1)) * keypoint_mask(maps)
        x = self.local_head(torch.cat([x, maps], dim=1))
        local_vector = nn.functional.leaky_relu(x.mean(dim=(2, 3)), LEAK)
        global_vector = self.global_head(torch.cat([glob, replicate(words, glob)], dim=1)).flatten(1)
        return self.classifier(torch.cat([local_vector, global_vector], dim=1)).reshape(-1)

    def uncond_logits(self, features: Tensor, *, fields: dict[str, Tensor] | None = None) -> Tensor | None:
        return None  # GAWWN's discriminator has no image-only head


def build_keypoint_discriminator(options: KeypointDiscriminatorOptions,
                                 ctx: StageContext) -> KeypointDiscriminator:
    """GAWWN keypoint discriminator: image, text and part locations to one logit."""
    if ctx.image_size != OUT_SIZE:
        raise RecipeError(f"the gawwn-keypoints discriminator judges {OUT_SIZE}x{OUT_SIZE} images, but this "
                          f"stage draws {ctx.image_size}x{ctx.image_size}",
                          fix="use it with the gawwn-keypoints generator (128x128)")
    return gawwn_init(KeypointDiscriminator(options, ctx.image_channels, ctx.text_dim))
