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
from ganstack_defaults.networks.gan_int_cls import (
    GanIntClsDiscriminatorOptions,
    GanIntClsGeneratorOptions,
    build_gan_int_cls_discriminator,
    build_gan_int_cls_generator,
)
from ganstack_defaults.networks.gawwn import (
    GawwnBoxDiscriminatorOptions,
    GawwnBoxGeneratorOptions,
    build_gawwn_box_discriminator,
    build_gawwn_box_generator,
)
from ganstack_defaults.networks.gawwn_keypoints import (
    KeypointDiscriminatorOptions,
    KeypointGeneratorOptions,
    build_keypoint_discriminator,
    build_keypoint_generator,
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

    # GAN-INT-CLS (Reed et al., 2016): its DCGAN generator and discriminator
    register("generator_stage", "gan-int-cls", build_gan_int_cls_generator, options=GanIntClsGeneratorOptions,
             summary="GAN-INT-CLS's DCGAN generator: noise and compressed text to 64x64 by transposed convolutions")
    register("discriminator", "gan-int-cls", build_gan_int_cls_discriminator, options=GanIntClsDiscriminatorOptions,
             summary="GAN-INT-CLS's DCGAN discriminator, with its own text compression joined at 4x4")

    # GAWWN (Reed et al., 2016): conditioned on the dataset's box
    register("generator_stage", "gawwn-box", build_gawwn_box_generator, options=GawwnBoxGeneratorOptions,
             summary="GAWWN (Reed et al. 2016): noise, text and the dataset's box to an image, the text placed "
                     "in the box; global and local pathways on a 16x16 grid")
    register("discriminator", "gawwn-box", build_gawwn_box_discriminator, options=GawwnBoxDiscriminatorOptions,
             summary="GAWWN box discriminator: image features with the text over the box (local) and "
                     "the whole image (global)")
    # GAWWN, keypoint-conditioned (gawwn_keypoints.py)
    register("generator_stage", "gawwn-keypoints", build_keypoint_generator, options=KeypointGeneratorOptions,
             summary="GAWWN keypoint generator: noise, text and 15 part locations (local and global "
                     "pathways) to a 128x128 image")
    register("discriminator", "gawwn-keypoints", build_keypoint_discriminator, options=KeypointDiscriminatorOptions,
             summary="GAWWN keypoint discriminator: a local branch masked by the part locations and a "
                     "global 4x4 branch, each with the text")

    # word features (issue #13): an AttnGAN-style stage
    register("generator_stage", "attention-refiner", build_attention_refiner, options=AttentionRefinerOptions,
             summary="StackGAN refiner whose regions attend to the caption's words (AttnGAN): previous image "
                     "(or features), condition and word context to a larger image")
