"""An AttnGAN-style refiner: each region of the previous stage attends to the caption's words.

AttnGAN (Xu et al., CVPR 2018) makes every later stage look up, for each image region, the words
that region is about: the words are mapped to the regions' channels, each region weighs the words
by a softmax of their inner products with it (over the caption's real words only), and the
weighted sum, a word-context map, is joined to the features before residual blocks and
upsampling. Here that attention sits in a StackGAN refiner (``stackgan-refiner``'s image encoder,
joint convolution, residual blocks and up blocks), so the two differ only by the word context.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import Condition, StageContext, StageOutput
from ganstack_defaults.networks.blocks import init_weights, replicate
from ganstack_defaults.networks.generators import RefinerGenerator, RefinerOptions, check_refiner_context

# The default text encoders that give words (what the ``words`` request needs).
WORD_ENCODERS = "bow, word-gru, or sentence-transformer with words: true"


def word_attention(regions: Tensor, words: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """AttnGAN's attention of regions to words.

    ``regions`` ``[B, C, H, W]``, ``words`` ``[B, L, C]`` (already in the regions' channels),
    ``mask`` ``[B, L]`` bool (True: a real word). Returns the word-context map ``[B, C, H, W]``
    (per region, the words' mean weighted by the region's attention) and the attention weights
    ``[B, H*W, L]``: per region, a softmax over the real words of the inner products, zero at
    padding; a caption without words gives zero weights and a zero context.
    """
    b, c, h, w = regions.shape
    scores = torch.bmm(regions.reshape(b, c, h * w).transpose(1, 2), words.transpose(1, 2))  # [B, HW, L]
    real = mask[:, None, :]
    scores = scores.masked_fill(~real, torch.finfo(scores.dtype).min)  # exp() of it is 0 beside any real word
    weights = torch.softmax(scores, dim=-1) * real  # the product zeroes a caption without words
    context = torch.bmm(weights, words).transpose(1, 2).reshape(b, c, h, w)
    return context, weights


@attrs.define(frozen=True, kw_only=True)
class AttentionRefinerOptions(RefinerOptions):
    """Options of the ``attention-refiner`` generator stage: those of ``stackgan-refiner``, and ``sentence``."""

    sentence: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool), metadata={
        "doc": "also join the spatially replicated sentence condition, as stackgan-refiner does (false: the "
               "word context alone, as AttnGAN's later stages)"})


class AttentionRefiner(RefinerGenerator):
    """``stackgan-refiner`` with AttnGAN's word attention at its working resolution.

    The previous image (``input: image``; ``4ngf x in/4`` after the refiner's image encoder) or
    features (``input: features``) are the regions; the words ``[B, L, word_dim]`` are mapped to
    the regions' channels by a linear layer without bias (AttnGAN's 1x1 convolution), each region
    attends to them (:func:`word_attention`), and the joint 3x3 conv -> BN -> ReLU reads
    ``cat(regions, replicated condition, word context)`` (no condition with ``sentence: false``);
    residual blocks, up blocks and the image head follow as in ``stackgan-refiner``.

    ``last_attention`` keeps the latest call's weights ``[B, H*W, L]`` and ``last_mask`` the word
    mask it received (detached): what a test or an attention-map picture reads.
    """

    name = "attention-refiner"
    requests = frozenset({"words"})

    def __init__(self, options: AttentionRefinerOptions, in_size: int, in_channels: int, cond_dim: int,
                 word_dim: int, image_channels: int) -> None:
        regions = 4 * options.ngf if options.input == "image" else in_channels
        super().__init__(options, in_size, in_channels, (cond_dim if options.sentence else 0) + regions,
                         image_channels)
        self.sentence = options.sentence
        self.project_words = nn.Linear(word_dim, regions, bias=False)
        self.last_attention: Tensor | None = None
        self.last_mask: Tensor | None = None

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None, *,
                fields: dict[str, Tensor]) -> StageOutput:
        regions = self.encode(self.source(prev))
        context, weights = word_attention(regions, self.project_words(fields["words"]), fields["word_mask"])
        self.last_attention, self.last_mask = weights.detach(), fields["word_mask"].detach()
        parts = [regions, replicate(condition.c, regions)] if self.sentence else [regions]
        x = self.residual(self.joint(torch.cat([*parts, context], dim=1)))
        features = self.up(x)
        return StageOutput(image=self.to_image(features), features=features)


def build_attention_refiner(options: AttentionRefinerOptions, ctx: StageContext) -> AttentionRefiner:
    """AttnGAN-style refiner: previous image (or features), condition and word attention to a larger image."""
    in_channels, cond_dim = check_refiner_context(options, ctx, "attention-refiner")
    if not ctx.word_dim:
        raise RecipeError("attention-refiner attends to the caption's words, but the recipe's text encoder "
                          "(text_encoder) gives none", fix=f"use a text encoder that gives words: {WORD_ENCODERS}")
    return init_weights(AttentionRefiner(options, ctx.in_size or 0, in_channels, cond_dim, ctx.word_dim,
                                         ctx.image_channels))

