"""StackGAN's networks as built through the plugin registry: sizes, shapes, options, init."""

from __future__ import annotations

from typing import Any

import attrs
import cattrs
import pytest
import torch
from torch import nn

from ganstack.components.loader import load_plugins
from ganstack.errors import RecipeError
from ganstack.interfaces import (
    Condition,
    Conditioner,
    Discriminator,
    GeneratorStage,
    StageContext,
    StageOutput,
)
from ganstack_defaults.networks.blocks import init_weights
from ganstack_defaults.networks.conditioners import CAOptions, LinearOptions
from ganstack_defaults.networks.discriminators import MatchingAwareOptions
from ganstack_defaults.networks.generators import RefinerOptions, Stage1Options

TEXT, NOISE = 16, 10  # tiny sizes for shape tests


def build(kind: str, name: str, ctx: StageContext, **options: Any) -> nn.Module:
    """Build a component exactly as the stack does: registry entry, options class, factory."""
    entry = load_plugins().registry.get(kind, name)
    return entry.factory(entry.options(**options), ctx)


def count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def ctx(index: int = 0, *, text_dim: int = TEXT, noise_dim: int = NOISE, **fields: Any) -> StageContext:
    return StageContext(index=index, num_stages=3, text_dim=text_dim, noise_dim=noise_dim, **fields)


# --------------------------------------------------------------------- paper-size parameter counts
PAPER = {"text_dim": 1024, "noise_dim": 100}


def test_stage1_generator_with_its_ca_has_the_official_parameter_count() -> None:
    ca = build("conditioner", "ca", ctx(**PAPER))
    assert count(ca) == 262_400
    g = build("generator_stage", "stackgan-stage1", ctx(**PAPER, cond_dim=ca.out_dim))
    assert count(ca, g) == 10_301_248


def test_stage1_discriminator_has_the_official_parameter_count() -> None:
    d = build("discriminator", "matching-aware", ctx(**PAPER, cond_dim=128, image_size=64))
    assert count(d) == 5_715_713


def test_stage2_refiner_with_its_ca_has_the_official_parameter_count() -> None:
    c = ctx(1, **PAPER, in_size=64, in_feature_channels=64)
    ca = build("conditioner", "ca", c)
    g = build("generator_stage", "stackgan-refiner", attrs.evolve(c, cond_dim=ca.out_dim))
    assert g.out_size == 256
    assert count(ca, g) == 26_290_080


def test_stage2_discriminator_with_both_heads_has_the_official_parameter_count() -> None:
    d = build("discriminator", "matching-aware", ctx(1, **PAPER, cond_dim=128, image_size=256),
              unconditional_head=True)
    assert count(d) == 71_269_122


# ----------------------------------------------------------------------------------------- shapes
def stage_chain(specs: list[tuple[str, dict[str, Any]]], batch: int = 2) -> list[StageOutput]:
    """Build and run generator stages in order, each with its own CA, filling contexts as a stack would."""
    torch.manual_seed(0)
    text, z = torch.randn(batch, TEXT), torch.randn(batch, NOISE)
    outputs: list[StageOutput] = []
    prev_stage: Any = None
    for i, (name, options) in enumerate(specs):
        c = ctx(i, in_size=prev_stage and prev_stage.out_size,
                in_feature_channels=prev_stage and prev_stage.feature_channels)
        ca = build("conditioner", "ca", c, condition_dim=6)
        stage = build("generator_stage", name, attrs.evolve(c, cond_dim=ca.out_dim), **options)
        assert isinstance(stage, GeneratorStage)
        out = stage(z if i == 0 else None, ca(text), outputs[-1] if outputs else None)
        size = stage.out_size
        assert out.image.shape == (batch, 3, size, size)
        assert out.features.shape == (batch, stage.feature_channels, size, size)
        assert out.image.abs().max() <= 1
        d = build("discriminator", "matching-aware", attrs.evolve(c, cond_dim=6, image_size=size),
                  ndf=4, unconditional_head=True)
        feats = d.features(out.image)
        assert feats.shape[2:] == (4, 4)
        assert d.cond_logits(feats, ca(text), text).shape == (batch,)
        assert d.uncond_logits(feats).shape == (batch,)
        outputs.append(out)
        prev_stage = stage
    return outputs


def test_stage1_makes_64x64_images_and_features() -> None:
    (out,) = stage_chain([("stackgan-stage1", {"ngf": 8})])
    assert out.features.shape[1] == 4  # 8ngf halved four times


def test_refiner_with_image_input_doubles_64_to_128() -> None:
    stage_chain([("stackgan-stage1", {"ngf": 8}), ("stackgan-refiner", {"ngf": 8, "scale": 2})])


def test_refiner_with_image_input_quadruples_64_to_256_like_the_paper() -> None:
    stage_chain([("stackgan-stage1", {"ngf": 4, "out_size": 16}),
                 ("stackgan-refiner", {"ngf": 8, "scale": 4, "residual_blocks": 1})])


def test_v2_style_chain_refines_features_64_to_128_to_256() -> None:
    opts = {"input": "features", "scale": 2, "residual_blocks": 1, "detach_input": False}
    outs = stage_chain([("stackgan-stage1", {"ngf": 8}), ("stackgan-refiner", {"ngf": 8, **opts}),
                        ("stackgan-refiner", {"ngf": 4, **opts})])
    assert [o.image.shape[-1] for o in outs] == [64, 128, 256]
    assert [o.features.shape[1] for o in outs] == [4, 4, 2]


def test_refiner_detaches_its_input_only_when_asked() -> None:
    c = ctx(1, cond_dim=4, in_size=16, in_feature_channels=3)
    prev_image = torch.randn(2, 3, 16, 16, requires_grad=True)
    cond = Condition(torch.randn(2, 4), torch.randn(2, 4), None)
    for detach in (True, False):
        g = build("generator_stage", "stackgan-refiner", c, ngf=4, scale=2, residual_blocks=0,
                  detach_input=detach)
        g(None, cond, StageOutput(prev_image, None)).image.sum().backward()
        assert (prev_image.grad is None) == detach
        prev_image.grad = None


def test_discriminator_depth_follows_the_image_size_with_3x3_convs_back_to_8ndf() -> None:
    def channels(size: int) -> list[int]:
        d = build("discriminator", "matching-aware", ctx(cond_dim=4, image_size=size), ndf=2)
        return [m.out_channels for m in d.image_path.modules() if isinstance(m, nn.Conv2d)]

    assert channels(64) == [2, 4, 8, 16]
    assert channels(128) == [2, 4, 8, 16, 32, 16]  # StackGAN-v2's 128x128 D
    assert channels(256) == [2, 4, 8, 16, 32, 64, 32, 16]  # the port's Stage-II D
    assert channels(16) == [2, 4]


def test_discriminator_first_down_block_has_no_batch_norm() -> None:
    d = build("discriminator", "matching-aware", ctx(cond_dim=4, image_size=32), ndf=2)
    first, second = d.image_path[0], d.image_path[1]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in first.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in second.modules())
    assert d.uncond_logits(d.features(torch.randn(2, 3, 32, 32))) is None


def test_networks_accept_channels_last_inputs() -> None:
    torch.manual_seed(0)
    d = build("discriminator", "matching-aware", ctx(cond_dim=4, image_size=32), ndf=2).eval()
    g = build("generator_stage", "stackgan-refiner", ctx(1, cond_dim=4, in_size=8), ngf=4, scale=4).eval()
    image = torch.randn(2, 3, 32, 32)
    cond = Condition(torch.randn(2, 4), torch.randn(2, 4), None)
    fast = image.to(memory_format=torch.channels_last)
    torch.testing.assert_close(d.features(fast), d.features(image))
    small = image[:, :, :8, :8]
    out = g(None, cond, StageOutput(small.to(memory_format=torch.channels_last), None))
    torch.testing.assert_close(out.image, g(None, cond, StageOutput(small.contiguous(), None)).image)


# ----------------------------------------------------------------------------------- conditioners
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "glu"])
def test_ca_is_deterministic_given_eps_and_samples_otherwise(activation: str) -> None:
    torch.manual_seed(0)
    ca = build("conditioner", "ca", ctx(), condition_dim=5, activation=activation)
    assert isinstance(ca, Conditioner) and ca.out_dim == 5
    assert ca.net[0].out_features == (20 if activation == "glu" else 10)
    text, eps = torch.randn(3, TEXT), torch.randn(3, 5)
    a, b = ca(text, eps), ca(text, eps)
    torch.testing.assert_close(a.c, b.c)
    assert a.c.shape == a.mu.shape == a.logvar.shape == (3, 5)
    torch.testing.assert_close(a.c, a.mu + torch.exp(0.5 * a.logvar) * eps)
    torch.testing.assert_close(ca(text, torch.zeros(3, 5)).c, a.mu)
    assert not torch.allclose(ca(text).c, ca(text).c)


def test_identity_and_linear_conditioners_are_deterministic_without_logvar() -> None:
    text = torch.randn(3, TEXT)
    ident = build("conditioner", "identity", ctx())
    assert ident.out_dim == TEXT and count(ident) == 0
    out = ident(text)
    assert out.c is text and out.mu is text and out.logvar is None
    lin = build("conditioner", "linear", ctx(), condition_dim=7)
    a, b = lin(text), lin(text, torch.randn(3, 7))
    assert lin.out_dim == 7 and a.logvar is None
    torch.testing.assert_close(a.c, b.c)
    torch.testing.assert_close(a.c, nn.functional.leaky_relu(lin.net[0](text), 0.2))


def test_no_text_conditioner_gives_an_empty_condition_that_stages_accept() -> None:
    none = build("conditioner", "none", ctx())
    cond = none(torch.randn(3, TEXT))
    assert none.out_dim == 0 and cond.c.shape == (3, 0) and cond.logvar is None
    refiner = build("generator_stage", "stackgan-refiner", ctx(index=1, cond_dim=0, in_size=16,
                                                                in_feature_channels=8), ngf=8, scale=2,
                    residual_blocks=1)
    prev = StageOutput(torch.randn(3, 3, 16, 16), None)
    assert refiner(None, cond, prev).image.shape == (3, 3, 32, 32)


# --------------------------------------------------------------------------------- discriminators
def test_mu_discriminator_uses_the_detached_mu_and_ignores_text() -> None:
    torch.manual_seed(0)
    d = build("discriminator", "matching-aware", ctx(cond_dim=4, image_size=16), ndf=2).eval()
    feats = d.features(torch.randn(2, 3, 16, 16))
    mu = torch.randn(2, 4, requires_grad=True)
    cond = Condition(torch.randn(2, 4), mu, None)
    logits = d.cond_logits(feats, cond, torch.randn(2, TEXT))
    torch.testing.assert_close(logits, d.cond_logits(feats, cond, torch.randn(2, TEXT)))
    logits.sum().backward()
    assert mu.grad is None
    other = d.cond_logits(feats, Condition(cond.c, torch.randn(2, 4), None), torch.randn(2, TEXT))
    assert not torch.allclose(logits, other)


def test_text_discriminator_compresses_the_raw_embedding_itself() -> None:
    torch.manual_seed(0)
    d = build("discriminator", "matching-aware", ctx(cond_dim=4, image_size=16), ndf=2, condition="text",
              condition_dim=3).eval()
    assert isinstance(d, Discriminator)
    assert d.compress_text[0].in_features == TEXT and d.compress_text[0].out_features == 3
    feats = d.features(torch.randn(2, 3, 16, 16))
    text = torch.randn(2, TEXT)
    garbage = Condition(torch.randn(2, 9), torch.randn(2, 9), None)  # ignored: D uses text
    logits = d.cond_logits(feats, garbage, text)
    assert logits.shape == (2,)
    assert not torch.allclose(logits, d.cond_logits(feats, garbage, torch.randn(2, TEXT)))
    default = build("discriminator", "matching-aware", ctx(cond_dim=None, image_size=16), condition="text")
    assert default.compress_text[0].out_features == 128


def test_projection_discriminator_scores_text_by_inner_product_with_image_features() -> None:
    torch.manual_seed(0)
    d = build("discriminator", "projection", ctx(cond_dim=4, image_size=16), ndf=2).eval()
    assert isinstance(d, Discriminator)
    image, text = torch.randn(3, 3, 16, 16), torch.randn(3, TEXT)
    feats = d.features(image)
    garbage = Condition(torch.randn(3, 9), torch.randn(3, 9), None)  # ignored: condition is text
    logits = d.cond_logits(feats, garbage, text)
    image_only = d.image_head(feats).reshape(-1)
    torch.testing.assert_close(logits - image_only, (d.project(text) * feats).sum(1))
    # linear in the text: the text's part of the logit doubles with the text, the image's does not
    torch.testing.assert_close(d.cond_logits(feats, garbage, 2 * text) - image_only, 2 * (logits - image_only))
    assert d.uncond_logits(feats) is None
    both = build("discriminator", "projection", ctx(cond_dim=4, image_size=16), ndf=2,
                 unconditional_head=True).eval()
    torch.testing.assert_close(both.uncond_logits(feats), both.image_head(feats).reshape(-1))


def test_projection_discriminator_keeps_where_things_are() -> None:
    """Its features are the 4x4 map flattened, not pooled: moving the image moves the score."""
    torch.manual_seed(0)
    d = build("discriminator", "projection", ctx(cond_dim=4, image_size=16), ndf=2).eval()
    image = torch.zeros(1, 3, 16, 16)
    image[..., 2:6, 2:6] = 1
    moved = image.roll(shifts=(8, 8), dims=(2, 3))
    text = torch.randn(1, TEXT)
    none = Condition(torch.zeros(1, 1), None, None)
    assert d.features(image).shape == (1, d.feature_channels * 4 * 4)
    assert not torch.allclose(d.cond_logits(d.features(image), none, text),
                              d.cond_logits(d.features(moved), none, text))


def test_projection_discriminator_can_use_the_detached_condition_mean() -> None:
    torch.manual_seed(0)
    d = build("discriminator", "projection", ctx(cond_dim=4, image_size=16), ndf=2, condition="mu").eval()
    feats = d.features(torch.randn(2, 3, 16, 16))
    mu = torch.randn(2, 4, requires_grad=True)
    logits = d.cond_logits(feats, Condition(torch.randn(2, 4), mu, None), torch.randn(2, TEXT))
    logits.sum().backward()
    assert mu.grad is None and d.project.in_features == 4


# ------------------------------------------------------------------------------------------- init
def test_init_weights_follows_the_reference_statistics() -> None:
    torch.manual_seed(0)
    d = build("discriminator", "matching-aware", ctx(text_dim=1024, cond_dim=128, image_size=64),
              condition="text")
    bn = torch.cat([m.weight.detach() for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1) < 0.005 and abs(bn.std().item() - 0.02) < 0.005
    assert all(m.bias.abs().sum() == 0 for m in d.modules() if isinstance(m, nn.BatchNorm2d))
    conv = torch.cat([m.weight.detach().flatten() for m in d.modules() if isinstance(m, nn.Conv2d)])
    assert abs(conv.std().item() - 0.02) < 0.001 and abs(conv.mean().item()) < 0.001
    assert d.compress_text[0].bias.abs().sum() == 0
    linear = init_weights(nn.Linear(500, 500))
    assert linear.bias.abs().sum() == 0 and abs(linear.weight.std().item() - 0.02) < 0.001


# ---------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(("cls", "values", "field"), [
    (CAOptions, {"condition_dim": 0}, "condition_dim"),
    (CAOptions, {"activation": "gelu"}, "activation"),
    (LinearOptions, {"condition_dim": -1}, "condition_dim"),
    (Stage1Options, {"ngf": 0}, "ngf"),
    (Stage1Options, {"out_size": 65}, "out_size"),
    (Stage1Options, {"out_size": 48}, "out_size"),
    (Stage1Options, {"ngf": 1, "out_size": 64}, "ngf"),
    (RefinerOptions, {"scale": 3}, "scale"),
    (RefinerOptions, {"scale": 1}, "scale"),
    (RefinerOptions, {"ngf": 6, "scale": 4}, "ngf"),
    (RefinerOptions, {"residual_blocks": -1}, "residual_blocks"),
    (RefinerOptions, {"input": "pixels"}, "input"),
    (RefinerOptions, {"detach_input": "yes"}, "detach_input"),
    (MatchingAwareOptions, {"ndf": 0}, "ndf"),
    (MatchingAwareOptions, {"condition": "c"}, "condition"),
    (MatchingAwareOptions, {"unconditional_head": 1}, "unconditional_head"),
    (MatchingAwareOptions, {"condition": "text", "condition_dim": 0}, "condition_dim"),
    (MatchingAwareOptions, {"condition_dim": 64}, "condition_dim"),  # meaningless with condition: mu
])
def test_options_reject_bad_values_naming_the_field(cls: type, values: dict[str, Any], field: str) -> None:
    with pytest.raises((ValueError, TypeError), match=f"'{field}'"):
        cls(**values)


def test_options_structure_from_yaml_like_dicts() -> None:
    conv = cattrs.Converter(forbid_extra_keys=True)
    assert conv.structure({"activation": "glu"}, CAOptions) == CAOptions(activation="glu")
    assert conv.structure({"input": "features", "scale": 2}, RefinerOptions).scale == 2
    opts = conv.structure({"condition": "text", "condition_dim": 64}, MatchingAwareOptions)
    assert opts.condition_dim == 64
    assert conv.structure({}, Stage1Options) == Stage1Options(ngf=128, out_size=64)


def test_stage_combinations_that_cannot_work_are_recipe_errors() -> None:
    with pytest.raises(RecipeError, match="first stage"):
        build("generator_stage", "stackgan-refiner", ctx(cond_dim=4))
    with pytest.raises(RecipeError, match="noise"):
        build("generator_stage", "stackgan-stage1", ctx(1, cond_dim=4, in_size=64))
    with pytest.raises(RecipeError, match="divisible by 4"):
        build("generator_stage", "stackgan-refiner", ctx(1, cond_dim=4, in_size=6))
    with pytest.raises(RecipeError, match="no features"):
        build("generator_stage", "stackgan-refiner", ctx(1, cond_dim=4, in_size=64), input="features")
    with pytest.raises(RecipeError, match="100x100"):
        build("discriminator", "matching-aware", ctx(cond_dim=4, image_size=100))
    with pytest.raises(RecipeError, match="100x100"):
        build("discriminator", "projection", ctx(cond_dim=4, image_size=100))


# --------------------------------------------------------------------------------------- registry
def test_every_stackgan_component_is_registered_with_a_summary_and_builds_with_defaults() -> None:
    registry = load_plugins().registry
    names = {(e.kind, e.name) for e in registry.entries() if e.plugin == "stackgan" and e.summary}
    assert names == {("conditioner", "ca"), ("conditioner", "identity"), ("conditioner", "linear"),
                     ("conditioner", "none"), ("generator_stage", "stackgan-stage1"), ("generator_stage", "stackgan-refiner"),
                     ("discriminator", "matching-aware"), ("discriminator", "projection"),
                     ("generator_stage", "gan-int-cls"), ("discriminator", "gan-int-cls"),
                     ("generator_stage", "gawwn-box"), ("discriminator", "gawwn-box"),
                     ("generator_stage", "gawwn-keypoints"), ("discriminator", "gawwn-keypoints"),
                     ("generator_stage", "attention-refiner")}
    protocols = {"conditioner": Conditioner, "generator_stage": GeneratorStage, "discriminator": Discriminator}
    small = {"generator_stage": {"ngf": 8}, "discriminator": {"ndf": 4}}
    refiners = {"stackgan-refiner", "attention-refiner"}
    for kind, name in sorted(names):
        refiner = name in refiners
        c = ctx(1 if refiner else 0, cond_dim=8, in_size=16 if refiner else None, in_feature_channels=None,
                image_size=128 if name == "gawwn-keypoints" else 32, word_dim=4)  # the keypoint D judges 128 px
        module = build(kind, name, c, **small.get(kind, {}))
        assert isinstance(module, nn.Module) and isinstance(module, protocols[kind])
