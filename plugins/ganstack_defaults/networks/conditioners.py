"""Conditioners: a text embedding to the condition a generator stage (and its D) sees.

``ca`` is StackGAN's Conditioning Augmentation; ``identity`` and ``linear`` are the
deterministic alternatives the paper's ablation compares it with.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import Tensor, nn

from ganstack.interfaces import Condition, StageContext
from ganstack_defaults.networks.blocks import LEAK, init_weights, orthogonal_init

CA_ACTIVATIONS = ("relu", "leaky_relu", "glu")


@attrs.define(frozen=True, kw_only=True)
class CAOptions:
    """Options of the ``ca`` conditioner (Conditioning Augmentation)."""

    condition_dim: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "size of the condition `c` the generator and discriminator see, and of its mean and "
               "log-variance (128 in the paper; the shapes recipes use 8 to 32)"})
    activation: Literal["relu", "leaky_relu", "glu"] = attrs.field(
        default="relu", validator=attrs.validators.in_(CA_ACTIVATIONS), metadata={
            "doc": "what follows the linear layer that gives the mean and log-variance: `relu` (the "
                   "official PyTorch port), `leaky_relu` (the TensorFlow code) or `glu` (StackGAN-v2, "
                   "whose gate halves a layer twice as wide)"})
    init: Literal["normal", "orthogonal"] = attrs.field(
        default="normal", validator=attrs.validators.in_(("normal", "orthogonal")), metadata={
            "doc": "the weights' starting values: `normal` (N(0, 0.02), StackGAN) or `orthogonal` (StackGAN-v2)"})


class ConditioningAugmentation(nn.Module):
    """Conditioning Augmentation: ``c ~ N(mu(text), exp(logvar(text)))``, sampled by reparametrisation.

    Sampling ``c`` around the embedding smooths the conditioning manifold for the few captions
    per image; the loss adds a KL term on ``mu``/``logvar``. With ``glu`` the linear layer is
    twice as wide and the GLU gate halves it, as in StackGAN-v2.
    """

    def __init__(self, text_dim: int, options: CAOptions) -> None:
        super().__init__()
        self.out_dim = options.condition_dim
        width = 2 * self.out_dim * (2 if options.activation == "glu" else 1)
        activation = {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(LEAK), "glu": nn.GLU(dim=1)}
        self.net = nn.Sequential(nn.Linear(text_dim, width), activation[options.activation])

    def forward(self, text: Tensor, eps: Tensor | None = None) -> Condition:
        mu, logvar = self.net(text).chunk(2, dim=1)
        if eps is None:
            eps = torch.randn_like(mu)
        return Condition(c=mu + torch.exp(0.5 * logvar) * eps, mu=mu, logvar=logvar)


class IdentityConditioner(nn.Module):
    """The raw text embedding as the condition: no augmentation (the paper's "no CA" ablation)."""

    def __init__(self, text_dim: int) -> None:
        super().__init__()
        self.out_dim = text_dim

    def forward(self, text: Tensor, eps: Tensor | None = None) -> Condition:
        return Condition(c=text, mu=text, logvar=None)


class NoTextConditioner(nn.Module):
    """An empty condition: the stage sees no text (the paper's "text twice: no" ablation of Stage-II)."""

    out_dim = 0

    def forward(self, text: Tensor, eps: Tensor | None = None) -> Condition:
        empty = text.new_zeros(text.shape[0], 0)
        return Condition(c=empty, mu=empty, logvar=None)


@attrs.define(frozen=True, kw_only=True)
class LinearOptions:
    """Options of the ``linear`` conditioner."""

    condition_dim: int = attrs.field(default=128, validator=attrs.validators.ge(1), metadata={
        "doc": "size of the compressed embedding the stage sees (128 matches `ca`'s `c`)"})
    init: Literal["normal", "uniform"] = attrs.field(
        default="normal", validator=attrs.validators.in_(("normal", "uniform")), metadata={
            "doc": "the starting values: `normal` (weights N(0, 0.02), bias 0, as StackGAN's layers) or "
                   "`uniform` (weights and bias U(-1/sqrt(text_dim), 1/sqrt(text_dim)), PyTorch's and "
                   "Torch7's default, which GAN-INT-CLS's compression keeps)"})


class LinearConditioner(nn.Module):
    """A deterministic compression of the embedding: Linear -> LeakyReLU(0.2), no sampling.

    GAN-INT-CLS's generator compression exactly (Linear 1024 -> 128, LeakyReLU 0.2, no BN; with
    ``init: uniform`` its starting values too), and StackGAN's ablation of CA at the same width.
    """

    def __init__(self, text_dim: int, options: LinearOptions) -> None:
        super().__init__()
        self.out_dim = options.condition_dim
        self.net = nn.Sequential(nn.Linear(text_dim, self.out_dim), nn.LeakyReLU(LEAK))

    def forward(self, text: Tensor, eps: Tensor | None = None) -> Condition:
        c = self.net(text)
        return Condition(c=c, mu=c, logvar=None)


def build_ca(options: CAOptions, ctx: StageContext) -> ConditioningAugmentation:
    """Conditioning Augmentation: c = mu + sigma * eps from the text embedding (StackGAN)."""
    init = orthogonal_init if options.init == "orthogonal" else init_weights
    return init(ConditioningAugmentation(ctx.text_dim, options))


def build_identity(options: attrs.AttrsInstance, ctx: StageContext) -> IdentityConditioner:
    """The text embedding itself as the condition (no CA; the paper's ablation)."""
    return IdentityConditioner(ctx.text_dim)


def build_no_text(options: attrs.AttrsInstance, ctx: StageContext) -> NoTextConditioner:
    """No text for this stage: an empty condition (pair it with a discriminator on ``condition: text``)."""
    return NoTextConditioner()


def build_linear(options: LinearOptions, ctx: StageContext) -> LinearConditioner:
    """Linear + LeakyReLU compression of the text embedding, deterministic (no CA)."""
    return init_weights(LinearConditioner(ctx.text_dim, options), linear=options.init == "normal")
