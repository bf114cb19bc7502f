"""The ``stackgan`` plugin: StackGAN's conditioners, generator stages and discriminator.

The networks live in the ``nets_*`` modules; this module only tells ganstack their names.
"""

from __future__ import annotations

from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack_defaults.networks.attention import AttentionRefinerOptions, build_attention_refiner
from ganstack_defaults.networks.conditioners import (
    CAOptions,
    LinearOptions,
    build_ca,
    build_identity,
    build_linear,
    build_no_text,
)
from ganstack_defaults.networks.discriminators import (
    MatchingAwareOptions,
    ProjectionOptions,
    build_matching_aware,
    build_projection,
)
from ganstack_defaults.networks.generators import RefinerOptions, Stage1Options, build_refiner, build_stage1


@hookimpl
def register_components(register: Register) -> None:
    register("conditioner", "ca", build_ca, options=CAOptions,
             summary="Conditioning Augmentation: c = mu + sigma * eps from the text embedding (StackGAN)")
    register("conditioner", "identity", build_identity,
             summary="the text embedding itself as the condition (no CA; the paper's ablation)")
    register("conditioner", "none", build_no_text,
             summary="no text for this stage: an empty condition (the paper's 'text twice: no' ablation)")
    register("conditioner", "linear", build_linear, options=LinearOptions,
             summary="Linear + LeakyReLU compression of the text embedding, deterministic (no CA)")
    register("generator_stage", "stackgan-stage1", build_stage1, options=Stage1Options,
             summary="StackGAN Stage-I: noise and condition to a low-resolution image, upsampled from 4x4")
    register("generator_stage", "stackgan-refiner", build_refiner, options=RefinerOptions,
             summary="StackGAN Stage-II refiner: previous image (or features) and condition to a larger "
                     "image")
    register("discriminator", "matching-aware", build_matching_aware, options=MatchingAwareOptions,
             summary="StackGAN matching-aware discriminator: conditional and optional unconditional logit")
    register("discriminator", "projection", build_projection, options=ProjectionOptions,
             summary="projection discriminator: image logit plus <text projection, image features>")

    # word features (issue #13): an AttnGAN-style stage
    register("generator_stage", "attention-refiner", build_attention_refiner, options=AttentionRefinerOptions,
             summary="StackGAN refiner whose regions attend to the caption's words (AttnGAN): previous image "
                     "(or features), condition and word context to a larger image")
