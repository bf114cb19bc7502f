"""GAWWN's box-conditioned networks: masks, sizes against the Torch code's layer list, and that the
box steers what they see."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.interfaces import Condition, StageContext, field_requests
from ganstack_defaults.networks.gawwn import (
    GawwnBoxDiscriminator,
    GawwnBoxDiscriminatorOptions,
    GawwnBoxGenerator,
    GawwnBoxGeneratorOptions,
    build_gawwn_box_discriminator,
    build_gawwn_box_generator,
)
from ganstack_defaults.networks.gawwn_blocks import box_mask, masked_mean, place_in_box

TEXT, NOISE = 12, 6


def ctx(**fields: Any) -> StageContext:
    values: dict[str, Any] = {"index": 0, "num_stages": 1, "text_dim": TEXT, "noise_dim": NOISE, "cond_dim": TEXT}
    return StageContext(**(values | fields))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def condition(text: Tensor) -> Condition:
    return Condition(c=text, mu=text, logvar=None)


BOXES = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.25, 1.0, 1.0]])


# -------------------------------------------------------------------------------------- masks
def test_box_mask_is_the_covered_fraction_of_each_cell() -> None:
    # cells of a 4-grid span quarters; x from 0.25 to 0.625 covers cell 1 wholly and half of cell 2
    mask = box_mask(torch.tensor([[0.25, 0.0, 0.625, 0.5]]), 4)
    across, down = torch.tensor([0.0, 1.0, 0.5, 0.0]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert mask.shape == (1, 1, 4, 4)
    assert torch.equal(mask[0, 0], down[:, None] * across[None, :])


def test_box_mask_of_a_box_inside_one_cell_is_its_area_in_cell_units() -> None:
    mask = box_mask(torch.tensor([[0.3, 0.3, 0.4, 0.45]]), 4)  # 0.1 x 0.15 inside cell (1, 1)
    assert mask[0, 0, 1, 1].item() == pytest.approx(0.4 * 0.6)
    assert mask.sum().item() == pytest.approx(0.4 * 0.6)


def test_masked_mean_averages_over_the_box_only() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 0, :2] = 1.0  # cells 0 and 1
    mask[0, 0, 1, 0] = 0.5  # half of cell 4
    assert masked_mean(x, mask).item() == pytest.approx((0 + 1 + 0.5 * 4) / 2.5)
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_place_in_box_squeezes_the_whole_map_into_the_box() -> None:
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    # each of the box's 4x4 cells samples the middle of a 2x2 block of x: bilinear gives its mean
    means = x.reshape(4, 2, 4, 2).mean(dim=(1, 3))
    top_left = place_in_box(x, torch.tensor([[0.0, 0.0, 0.5, 0.5]]))[0, 0]
    assert torch.allclose(top_left[:4, :4], means)
    assert top_left[4:].abs().max() == 0 and top_left[:, 4:].abs().max() == 0
    middle = place_in_box(x, torch.tensor([[0.25, 0.25, 0.75, 0.75]]))[0, 0]
    assert torch.allclose(middle[2:6, 2:6], means)
    assert middle.sum() == pytest.approx(means.sum().item())  # nothing outside the box
    assert torch.allclose(place_in_box(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]])), x)  # the whole image: x itself


# ------------------------------------------------------------------------- sizes (Torch code)
def _torch_params(layers: list[tuple[str, int, int, int, bool]]) -> tuple[int, int]:
    """(parameters of the Torch model, biases of its convolutions a BatchNorm follows), from a layer
    list as main_cub_bbox.lua writes it: (kind, in, out, kernel side, BN after)."""
    total = bn_biases = 0
    for kind, a, b, k, bn in layers:
        total += a * b * (k * k if kind == "conv" else 1) + b + (2 * b if bn else 0)
        bn_biases += b if bn and kind == "conv" else 0
    return total, bn_biases


def test_box_generator_at_reed_sizes_is_the_torch_model_less_the_biases_bn_cancels() -> None:
    n, z, txt = 128, 100, 1024
    layers = [("linear", z, 4 * n, 1, False), ("linear", txt, 4 * n, 1, False),  # prep_noise, prep_txt_g
              ("linear", z, 4 * n, 1, False),  # combiner_global's noise
              *[("conv", 4 * n, 4 * n, 4, True)] * 3,  # txtGlobalG
              ("conv", 8 * n, 8 * n, 4, True), ("conv", 8 * n, 4 * n, 4, True), ("conv", 4 * n, 2 * n, 4, True),
              ("conv", 8 * n, 8 * n, 4, True),  # convG
              ("conv", 8 * n, 2 * n, 1, True), ("conv", 2 * n, 2 * n, 3, True), ("conv", 2 * n, 8 * n, 3, True),
              ("conv", 8 * n, 4 * n, 4, True),
              ("conv", 4 * n, n, 1, True), ("conv", n, n, 3, True), ("conv", n, 4 * n, 3, True),
              ("conv", 4 * n, 2 * n, 4, True),
              ("conv", 4 * n, 2 * n, 3, True), ("conv", 2 * n, n, 4, True), ("conv", n, 32, 4, True),  # netG
              ("conv", 32, 3, 4, False)]
    total, bn_biases = _torch_params(layers)
    with torch.device("meta"):  # the classes, not the factories: no init of 74M values
        g = GawwnBoxGenerator(GawwnBoxGeneratorOptions(), z, txt, 3)
    assert count(g) == total - bn_biases
    assert g.out_size == 128


def test_box_discriminator_at_reed_sizes_is_the_torch_model_less_the_biases_bn_cancels() -> None:
    d, nt, txt = 128, 128, 1024
    layers = [("conv", 3, d, 4, False), ("conv", d, d, 4, False), ("conv", d, 2 * d, 4, True),  # imgGlobalD
              ("conv", 2 * d, 2 * d, 3, True),
              ("linear", txt, nt, 1, False),  # prep_txt_d
              ("conv", 2 * d + nt, 2 * d, 3, True), ("conv", 2 * d, 2 * d, 1, True), ("conv", 2 * d, d, 1, False),
              ("conv", 2 * d, 4 * d, 4, True), ("conv", 4 * d, 8 * d, 4, True),  # convGlobalD
              ("conv", nt, 4 * d, 4, True), ("conv", 4 * d, d, 4, True),  # txtGlobalD
              ("conv", 9 * d, 4 * d, 1, True), ("conv", 4 * d, d, 4, True),  # globalD
              ("linear", 2 * d, d, 1, True), ("linear", d, 1, 1, False)]
    total, bn_biases = _torch_params(layers)
    with torch.device("meta"):
        disc = GawwnBoxDiscriminator(GawwnBoxDiscriminatorOptions(), 128, 3, txt)
    assert count(disc) == total - bn_biases


# --------------------------------------------------------------------- shapes and the box's effect
def tiny_generator(**options: Any) -> nn.Module:
    torch.manual_seed(0)
    return build_gawwn_box_generator(GawwnBoxGeneratorOptions(**({"ngf": 4, "grid": 8, "out_size": 32} | options)),
                                     ctx())


def tiny_discriminator(**options: Any) -> nn.Module:
    torch.manual_seed(0)
    return build_gawwn_box_discriminator(GawwnBoxDiscriminatorOptions(**({"ndf": 4, "grid": 8} | options)),
                                         ctx(image_size=32))


def _capture(module: nn.Module, seen: list[Tensor]) -> None:
    module.register_forward_hook(lambda m, inputs, output: seen.append(inputs[0].detach()))


def test_box_generator_draws_images_and_places_its_text_and_local_features_in_the_box() -> None:
    g = tiny_generator()
    seen_text: list[Tensor] = []
    seen_joint: list[Tensor] = []
    _capture(g.global_text, seen_text)
    _capture(g.joint, seen_joint)
    out = g(torch.randn(2, NOISE), condition(torch.randn(2, TEXT)), None, fields={"box": BOXES})
    assert out.image.shape == (2, 3, 32, 32) and out.features is None
    assert out.image.abs().max() <= 1
    outside = box_mask(BOXES, 8) == 0  # [2, 1, 8, 8]
    assert outside.sum() > 0 and (~outside).sum() > 0
    placed, joint = seen_text[0], seen_joint[0]
    assert placed.shape == (2, 4 * 4, 8, 8)  # text_channels default 4 * ngf
    assert placed.masked_select(outside).abs().max() == 0
    assert placed[0, :, 0, 0].abs().sum() > 0  # inside the first box
    local = joint[:, 2 * 4:]  # the local pathway's half of the joined map
    assert local.masked_select(outside.expand_as(local)).abs().max() == 0
    assert local.masked_select((~outside).expand_as(local)).abs().sum() > 0


@pytest.mark.parametrize("placement", ["warp", "cut"])
def test_warped_local_features_move_with_the_box_and_cut_ones_do_not(placement: str) -> None:
    g = tiny_generator(placement=placement)
    seen: list[Tensor] = []
    _capture(g.joint, seen)
    z, c = torch.randn(1, NOISE).expand(2, -1), condition(torch.randn(1, TEXT).expand(2, -1))
    corners = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])  # the same size, two places
    g(z, c, None, fields={"box": corners})
    local = seen[0][:, 2 * 4:]  # the local pathway's half of the joined map, [2, 2ngf, 8, 8]
    top_left, bottom_right = local[0, :, :4, :4], local[1, :, 4:, 4:]
    assert top_left.abs().sum() > 0
    # warped, the whole drawing lands in each box; cut, each box keeps a different part of it
    assert torch.allclose(top_left, bottom_right, atol=1e-6) == (placement == "warp")


def test_box_generator_output_depends_on_the_box() -> None:
    g = tiny_generator()  # training mode: BatchNorm on the batch, as when learning
    z, c = torch.randn(1, NOISE).expand(2, -1), condition(torch.randn(1, TEXT).expand(2, -1))
    image = g(z, c, None, fields={"box": BOXES}).image  # the same noise and text, two boxes
    same = g(z, c, None, fields={"box": BOXES[:1].expand(2, -1)}).image
    assert torch.allclose(same[0], same[1], atol=1e-6)
    assert (image[0] - image[1]).abs().max() > 1e-3


@pytest.mark.parametrize("text_global", [False, True])
def test_text_global_lets_the_caption_reach_a_picture_whose_box_is_empty(text_global: bool) -> None:
    g = tiny_generator(text_global=text_global)  # training mode: rows that differ stay apart, equal ones equal
    empty = torch.tensor([[0.5, 0.5, 0.5, 0.5]]).expand(2, 4)  # no cell covered: no text placed, no local map
    z = torch.randn(1, NOISE).expand(2, -1)
    with torch.no_grad():
        image = g(z, condition(torch.randn(2, TEXT)), None, fields={"box": empty}).image  # two captions
    moved = float((image[0] - image[1]).abs().max())
    assert (moved > 1e-3) if text_global else (moved < 1e-6)


def test_box_generator_example_fields_are_a_centred_box() -> None:
    assert torch.equal(tiny_generator().example_fields(3)["box"], torch.tensor([[0.25, 0.25, 0.75, 0.75]] * 3))


def test_box_discriminator_masks_its_text_and_local_features_to_the_box() -> None:
    disc = tiny_discriminator()
    seen_text: list[Tensor] = []
    seen_local: list[Tensor] = []
    _capture(disc.global_text, seen_text)
    _capture(disc.local_read, seen_local)
    features = disc.features(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert features.shape == (2, 8, 8, 8)
    text = torch.randn(2, TEXT)
    logits = disc.cond_logits(features, condition(text), text, fields={"box": BOXES})
    assert logits.shape == (2,)
    assert disc.uncond_logits(features, fields={"box": BOXES}) is None
    outside = box_mask(BOXES, 8) == 0
    for seen in (seen_text[0], seen_local[0]):
        assert seen.masked_select(outside.expand_as(seen)).abs().max() == 0
        assert seen.masked_select((~outside).expand_as(seen)).abs().sum() > 0


def test_box_discriminator_logits_depend_on_box_and_text() -> None:
    disc = tiny_discriminator().eval()
    features = disc.features(torch.rand(2, 3, 32, 32) * 2 - 1)
    text = torch.randn(2, TEXT)
    base = disc.cond_logits(features, condition(text), text, fields={"box": BOXES})
    moved = disc.cond_logits(features, condition(text), text, fields={"box": BOXES.flip(0)})
    other = disc.cond_logits(features, condition(text), text.flip(0), fields={"box": BOXES})
    scale = base.abs().max()  # small at the N(0, 0.02) init; float error is ~1e-7 of it
    assert (base - moved).abs().max() > 1e-3 * scale
    assert (base - other).abs().max() > 1e-3 * scale


def test_box_discriminator_condition_mu_uses_the_condition_mean() -> None:
    disc = tiny_discriminator(condition="mu")
    assert disc.compress_text is None
    features = disc.features(torch.rand(2, 3, 32, 32) * 2 - 1)
    mu = torch.randn(2, TEXT)
    assert disc.cond_logits(features, condition(mu), torch.zeros(2, 99), fields={"box": BOXES}).shape == (2,)


def test_both_request_the_box() -> None:
    assert tiny_generator().requests == frozenset({"box"})
    assert tiny_discriminator().requests == frozenset({"box"})


# --------------------------------------------------------------------------------- options
@pytest.mark.parametrize(("options", "message"), [
    ({"grid": 12}, "power of two"),
    ({"grid": 16, "out_size": 16}, "out_size"),
    ({"grid": 16, "out_size": 48}, "out_size"),
])
def test_generator_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GawwnBoxGeneratorOptions(**options)


def test_generator_must_be_the_first_stage() -> None:
    with pytest.raises(RecipeError, match="first stage"):
        build_gawwn_box_generator(GawwnBoxGeneratorOptions(ngf=4, grid=8, out_size=16), ctx(in_size=16))


def test_discriminator_needs_an_image_the_grid_divides() -> None:
    with pytest.raises(RecipeError, match="grid") as info:
        build_gawwn_box_discriminator(GawwnBoxDiscriminatorOptions(ndf=4, grid=16), ctx(image_size=24))
    assert info.value.path == "grid"


def test_projection_adds_a_text_projection_term_and_leaves_the_rest() -> None:
    plain, projected = tiny_discriminator().eval(), tiny_discriminator(projection=True).eval()
    assert count(projected) - count(plain) == 128 * 2 * 4  # Linear(text_channels, 2 * ndf), no bias
    projected.load_state_dict(plain.state_dict(), strict=False)
    features = plain.features(torch.rand(2, 3, 32, 32) * 2 - 1)
    text = torch.randn(2, TEXT)
    kwargs = {"fields": {"box": BOXES}}
    base = plain.cond_logits(features, condition(text), text, **kwargs)
    assert not torch.allclose(projected.cond_logits(features, condition(text), text, **kwargs), base)
    with torch.no_grad():
        projected.project.weight.zero_()
    assert torch.equal(projected.cond_logits(features, condition(text), text, **kwargs), base)


def test_nearest_upsampling_keeps_transposed_convs_only_for_1x1_to_4x4() -> None:
    g = tiny_generator(upsample="nearest")
    out = g(torch.randn(2, NOISE), condition(torch.randn(2, TEXT)), None, fields={"box": BOXES})
    assert out.image.shape == (2, 3, 32, 32)
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 2 and all(m.stride == (1, 1) and m.kernel_size == (4, 4) for m in deconvs)
    default = [m for m in tiny_generator().modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(default) == 2 + 1 + 1 + 2  # both 4x4 starts, one doubling per pathway (4 to the 8x8 grid), two to the image


def test_mask_channel_joins_the_box_mask_itself() -> None:
    g, disc = tiny_generator(mask_channel=True), tiny_discriminator(mask_channel=True)
    seen_g: list[Tensor] = []
    seen_d: list[Tensor] = []
    _capture(g.joint, seen_g)
    _capture(disc.local_join, seen_d)
    image = g(torch.randn(2, NOISE), condition(torch.randn(2, TEXT)), None, fields={"box": BOXES}).image
    text = torch.randn(2, TEXT)
    disc.cond_logits(disc.features(image), condition(text), text, fields={"box": BOXES})
    mask = box_mask(BOXES, 8)
    assert seen_g[0].shape[1] == 4 * 4 + 1 and torch.equal(seen_g[0][:, -1:], mask)
    assert seen_d[0].shape[1] == 2 * 4 + 128 + 1 and torch.equal(seen_d[0][:, -1:], mask)


# ------------------------------------------------------------------- the fourth pair: wrong boxes
class BoxReadingDiscriminator(nn.Module):
    """A discriminator whose logit is 10 x its box's x0 plus its text's first value, recording each call."""

    requests = frozenset({"box"})

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[float], list[float]]] = []

    def features(self, image: Tensor) -> Tensor:
        return image.flatten(1)

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor, *,
                    fields: dict[str, Tensor]) -> Tensor:
        self.calls.append((text[:, 0].tolist(), fields["box"][:, 0].tolist()))
        return 10 * fields["box"][:, 0] + text[:, 0]

    def uncond_logits(self, features: Tensor, *, fields: dict[str, Tensor]) -> None:
        return None


def test_the_fields_pair_scores_the_own_text_with_moved_boxes_as_mismatched() -> None:
    import math

    from ganstack.components.loader import load_plugins
    from ganstack.interfaces import LossContext, StepState

    entry = load_plugins().registry.get("loss", "matching-aware")
    loss = entry.factory(entry.options(fields_pair=0.5),
                         LossContext(index=0, num_stages=1, discriminator_fields=frozenset({"box"})))
    d = BoxReadingDiscriminator()
    text = torch.arange(4, dtype=torch.float32)[:, None].expand(4, TEXT).clone()  # text row i holds i
    x0 = [0.1, 0.5, 0.52, 0.1]  # row 2 sits 0.02 from row 1: the same place, not a wrong pair
    boxes = torch.tensor([[x, 0.2, x + 0.3, 0.6] for x in x0])
    images = torch.rand(4, 3, 8, 8)
    terms = loss.d_terms(StepState(stage=0, phase="d", discriminator=d, real=images, fake=images.flip(0),
                                   condition=condition(text), text=text, fields={"box": boxes}))
    assert d.calls[-1][0] == [0, 1, 2, 3]  # each image keeps its own text
    assert d.calls[-1][1] == pytest.approx([0.1, 0.1, 0.5, 0.52])  # and gets the previous row's box
    # rows 1 (0.5 <- 0.1) and 3 (0.1 <- 0.52) moved; rows 0 and 2 did not and are left out
    softplus = [math.log1p(math.exp(10 * b + t)) for b, t in ((0.1, 1), (0.52, 3))]
    assert float(terms["d_wrong_fields"].detach()) == pytest.approx(0.5 * sum(softplus) / 2, rel=1e-5)
    assert set(terms) == {"d_real", "d_wrong", "d_fake", "d_wrong_fields"}


def test_the_fields_pair_is_off_by_default_and_refused_for_a_discriminator_without_fields(cli: Any) -> None:
    from ganstack.components.loader import load_plugins

    assert load_plugins().registry.get("loss", "matching-aware").options().fields_pair == 0
    code, _out, err = cli("check", "shapes_quickstart", "--set", "stages.0.losses.0.fields_pair=1")
    assert code == 2 and "Traceback" not in err
    assert "stages[0].losses[0].fields_pair" in err and "reads none" in err and "fields_pair: 0" in err


# ------------------------------------------------------------------- the projection D's box
def test_the_projection_discriminators_box_terms_are_the_projected_coverage_and_the_text_in_the_box() -> None:
    from ganstack_defaults.networks.discriminators import ProjectionOptions, build_projection

    plain = build_projection(ProjectionOptions(ndf=4), ctx(image_size=16)).eval()
    boxed = build_projection(ProjectionOptions(ndf=4, box=True), ctx(image_size=16)).eval()
    assert field_requests(plain) == frozenset() and field_requests(boxed) == {"box"}
    channels = boxed.feature_channels
    width = channels * 16
    assert count(boxed) - count(plain) == 64 * width + TEXT * channels  # both projections without a bias
    boxed.load_state_dict(plain.state_dict(), strict=False)
    features = plain.features(torch.rand(2, 3, 16, 16) * 2 - 1)
    text = torch.randn(2, TEXT)
    base = plain.cond_logits(features, condition(text), text)
    fields = {"box": BOXES}
    # BOXES[0] is the top-left quarter, BOXES[1] x 0.5-1 and y 0.25-1: cells wholly covered, by hand
    on_8x8 = [[r * 8 + c for r in range(4) for c in range(4)], [r * 8 + c for r in range(2, 8) for c in range(4, 8)]]
    on_4x4 = [[(r, c) for r in range(2) for c in range(2)], [(r, c) for r in range(1, 4) for c in range(2, 4)]]
    weight = torch.randn(width, 64)
    with torch.no_grad():
        boxed.project_box.weight.copy_(weight)
        boxed.project_in_box.weight.zero_()
    got = boxed.cond_logits(features, condition(text), text, fields=fields)
    for i in range(2):
        assert torch.allclose(got[i], base[i] + (weight[:, on_8x8[i]].sum(dim=1) * features[i]).sum(), atol=1e-4)
    weight = torch.randn(channels, TEXT)
    with torch.no_grad():
        boxed.project_box.weight.zero_()
        boxed.project_in_box.weight.copy_(weight)
    got = boxed.cond_logits(features, condition(text), text, fields=fields)
    grid = features.view(2, channels, 4, 4)
    for i in range(2):
        in_box = torch.stack([grid[i, :, r, c] for r, c in on_4x4[i]]).mean(dim=0)
        assert torch.allclose(got[i], base[i] + (weight @ text[i] * in_box).sum(), atol=1e-4)


def test_a_projection_discriminator_that_reads_the_box_takes_the_fields_pair(cli: Any) -> None:
    code, out, err = cli("check", "shapes_quickstart", "--set", "stages.0.discriminator.box=true",
                         "--set", "stages.0.losses.0.fields_pair=1")
    assert code == 0, out + err


def test_the_projection_discriminators_box_join_reads_the_text_beside_the_features_in_and_around_the_box() -> None:
    from ganstack_defaults.networks.discriminators import ProjectionOptions, build_projection

    boxed = build_projection(ProjectionOptions(ndf=4, box=True), ctx(image_size=16)).eval()
    joined = build_projection(ProjectionOptions(ndf=4, box=True, box_join=5), ctx(image_size=16)).eval()
    channels = joined.feature_channels
    assert count(joined) - count(boxed) == (TEXT + 2 * channels) * 5 + 5 + 5 + 1  # two layers with biases
    joined.load_state_dict(boxed.state_dict(), strict=False)
    features = boxed.features(torch.rand(2, 3, 16, 16) * 2 - 1)
    text = torch.randn(2, TEXT)
    fields = {"box": BOXES}
    base = boxed.cond_logits(features, condition(text), text, fields=fields)
    w1, b1, w2, b2 = torch.randn(5, TEXT + 2 * channels), torch.randn(5), torch.randn(1, 5), torch.randn(1)
    with torch.no_grad():
        for layer, weight, bias in ((joined.join[0], w1, b1), (joined.join[2], w2, b2)):
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    got = joined.cond_logits(features, condition(text), text, fields=fields)
    # the 4x4 cells each box covers wholly (as in the test above); every other cell lies wholly outside
    on_4x4 = [[(r, c) for r in range(2) for c in range(2)], [(r, c) for r in range(1, 4) for c in range(2, 4)]]
    grid = features.view(2, channels, 4, 4)
    for i in range(2):
        cells = [(r, c) for r in range(4) for c in range(4)]
        inside = torch.stack([grid[i, :, r, c] for r, c in on_4x4[i]]).mean(dim=0)
        outside = torch.stack([grid[i, :, r, c] for r, c in cells if (r, c) not in on_4x4[i]]).mean(dim=0)
        hidden = w1 @ torch.cat([text[i], inside, outside]) + b1
        hidden = torch.where(hidden > 0, hidden, 0.2 * hidden)
        assert torch.allclose(got[i], base[i] + (w2 @ hidden + b2)[0], atol=1e-4)


def test_box_join_without_box_is_refused_with_the_key_and_the_fix(cli: Any) -> None:
    code, _out, err = cli("check", "shapes_quickstart", "--set", "stages.0.discriminator.box_join=64")
    assert code == 2 and "Traceback" not in err
    assert "stages[0].discriminator" in err and "box: true" in err
