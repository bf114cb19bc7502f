"""GAWWN's keypoint networks: the keypoint maps and mask by hand, the pathways, shapes, sizes, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from ganstack.components.loader import load_plugins
from ganstack.errors import RecipeError, UserError
from ganstack.interfaces import Condition, StageContext
from ganstack_defaults.networks.gawwn_keypoints import keypoint_maps, keypoint_mask

TEXT, NOISE, PARTS = 8, 6, 5  # tiny sizes


def build(kind: str, ctx: StageContext, **options: Any) -> nn.Module:
    entry = load_plugins().registry.get(kind, "gawwn-keypoints")
    return entry.factory(entry.options(**options), ctx)


def ctx(index: int = 0, **extra: Any) -> StageContext:
    values = {"text_dim": TEXT, "noise_dim": NOISE, "cond_dim": TEXT, **extra}
    return StageContext(index=index, num_stages=1, **values)


def tiny_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    g = build("generator_stage", ctx(), ngf=4, parts=PARTS)
    d = build("discriminator", ctx(image_size=128), ndf=4, condition_dim=6, parts=PARTS)
    return g, d


def points(*triples: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor([triples], dtype=torch.float32)


# ------------------------------------------------------------------------------------ maps, mask
def test_a_visible_part_lights_the_cell_that_holds_it_and_an_invisible_one_nothing() -> None:
    kp = points((0.5, 0.25, 1.0),    # x 8.0 -> column 8, y 4.0 -> row 4
                (0.0, 0.0, 1.0),     # the top left cell
                (1.0, 0.999, 1.0),   # the right edge: column 16 clamped to 15; row 15
                (0.3, 0.7, 0.0),     # invisible
                (0.06, 0.9, 1.0))    # x 0.96 -> column 0, y 14.4 -> row 14
    maps = keypoint_maps(kp)
    assert maps.shape == (1, 5, 16, 16)
    lit = [maps[0, k].nonzero().tolist() for k in range(5)]  # [row, column] of each map's ones
    assert lit == [[[4, 8]], [[0, 0]], [[15, 15]], [], [[14, 0]]]
    assert maps[0].sum(dim=(1, 2)).tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]


def test_the_mask_is_the_sum_over_parts_clamped_to_one() -> None:
    kp = points((0.5, 0.5, 1.0), (0.52, 0.51, 1.0), (0.1, 0.2, 1.0), (0.9, 0.9, 0.0))  # two share a cell
    mask = keypoint_mask(keypoint_maps(kp))
    expected = torch.zeros(1, 1, 16, 16)
    expected[0, 0, 8, 8] = 1.0  # 2 parts there, clamped
    expected[0, 0, 3, 1] = 1.0
    assert mask.shape == (1, 1, 16, 16)
    assert torch.equal(mask, expected)


# --------------------------------------------------------------------------------------- networks
def test_the_generators_local_pathway_is_zero_outside_the_mask() -> None:
    g, _ = tiny_pair()
    g.eval()
    kp = points((0.2, 0.2, 1.0), (0.7, 0.4, 1.0), (0.5, 0.9, 1.0), (0.1, 0.1, 0.0), (0.0, 0.0, 0.0))
    mask = keypoint_mask(keypoint_maps(kp))
    hidden = torch.randn(1, 8 * 4)
    masked = g.masked_text(hidden, mask)
    vector = g.local_fc(hidden)[0]
    assert masked.shape == (1, 16, 16, 16)
    outside = mask[0, 0] == 0
    assert int((~outside).sum()) == 3
    assert torch.all(masked[0][:, outside] == 0)
    for row, col in [(3, 3), (6, 11), (14, 8)]:  # the three visible parts' cells
        assert torch.equal(masked[0, :, row, col], vector)


def test_shapes_of_every_output() -> None:
    g, d = tiny_pair()
    kp = torch.rand(3, PARTS, 3)
    kp[..., 2] = (kp[..., 2] > 0.4).float()
    fields = {"keypoints": kp}
    text = torch.randn(3, TEXT)
    out = g(torch.randn(3, NOISE), Condition(text, text, None), None, fields=fields)
    assert out.image.shape == (3, 3, 128, 128) and g.out_size == 128
    assert out.features.shape == (3, 4, 64, 64) and g.feature_channels == 4
    assert float(out.image.detach().abs().max()) <= 1.0
    f = d.features(out.image)
    assert f.shape == (3, 8 * 16 * 16 + 32 * 4 * 4)
    assert d.cond_logits(f, Condition(text, text, None), text, fields=fields).shape == (3,)
    assert d.uncond_logits(f, fields=fields) is None
    assert g.requests == d.requests == frozenset({"keypoints"})
    example = g.example_fields(2)["keypoints"]
    assert example.shape == (2, PARTS, 3) and torch.equal(example, d.example_fields(2)["keypoints"])


def test_a_batch_slice_of_the_discriminators_features_is_a_slice_of_its_logits() -> None:
    """The features tensor packs the 16x16 and 4x4 maps; the matching-aware loss slices it by rows."""
    _, d = tiny_pair()
    d.eval()
    image = torch.rand(4, 3, 128, 128) * 2 - 1
    kp = torch.rand(4, PARTS, 3).round()
    text = torch.randn(4, TEXT)
    f = d.features(image)
    full = d.cond_logits(f, Condition(text, text, None), text, fields={"keypoints": kp})
    part = d.cond_logits(f[1:], Condition(text[1:], text[1:], None), text[1:], fields={"keypoints": kp[1:]})
    torch.testing.assert_close(part, full[1:])


def test_full_size_parameter_counts_are_the_torch_codes() -> None:
    """Counted from main_cub_keypoints.lua's layer list (weights and biases, BatchNorm scale and shift)."""
    def lin(a: int, b: int) -> int:
        return a * b + b

    def conv(a: int, b: int, k: int) -> int:
        return a * b * k * k + b

    ngf, ndf, nz, txt, nt, k = 128, 64, 100, 1024, 128, 15
    g_expected = (lin(nz, 512) + lin(txt, 512) + lin(1024, 512) + 1024 + conv(512, 512, 3) + 1024
                  + conv(k, ngf, 4) + 256 + conv(ngf, 256, 4) + 512 + conv(256, 512, 4) + 1024
                  + lin(1024, 512) + 1024
                  + conv(1024, 512, 4) + 1024 + conv(512, 256, 4) + 512 + conv(256, ngf, 4) + 256
                  + conv(5 * ngf + k, 512, 3) + 1024 + conv(512, 512, 3) + 1024
                  + conv(512, ngf, 1) + 256 + conv(ngf, ngf, 3) + 256 + conv(ngf, 512, 3) + 1024
                  + conv(512, 256, 4) + 512 + conv(256, ngf, 4) + 256 + conv(ngf, 3, 4))

    def d_expected(ndf: int) -> int:
        return (conv(3, ndf, 4) + conv(ndf, ndf, 4) + conv(ndf, 2 * ndf, 4) + 4 * ndf
                + conv(2 * ndf, 2 * ndf, 3) + 4 * ndf + lin(txt, nt)
                + conv(2 * ndf + nt, 2 * ndf, 3) + 4 * ndf + conv(2 * ndf + k, 2 * ndf, 1) + 4 * ndf
                + conv(2 * ndf, ndf, 1)
                + conv(2 * ndf, 4 * ndf, 4) + 8 * ndf + conv(4 * ndf, 8 * ndf, 4) + 16 * ndf
                + conv(8 * ndf + nt, 4 * ndf, 1) + 8 * ndf + conv(4 * ndf, ndf, 4) + 2 * ndf
                + lin(2 * ndf, ndf) + 2 * ndf + lin(ndf, 1))

    paper = {"text_dim": txt, "noise_dim": nz, "cond_dim": txt}
    with torch.device("meta"):
        g = build("generator_stage", ctx(**paper))
        d64 = build("discriminator", ctx(**paper, image_size=128))
        d128 = build("discriminator", ctx(**paper, image_size=128), ndf=128)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(g), count(d64), count(d128)) == (g_expected, d_expected(ndf), d_expected(128))
    assert (g_expected, d_expected(64), d_expected(128)) == (26_471_043, 3_860_609, 14_667_905)


# ----------------------------------------------------------------------------------------- errors
def test_keypoints_of_another_part_count_are_refused_naming_the_option() -> None:
    g, d = tiny_pair()
    text = torch.randn(2, TEXT)
    with pytest.raises(UserError, match=r"built for 5 parts \(option 'parts'\).*\(2, 15, 3\)"):
        g(torch.randn(2, NOISE), Condition(text, text, None), None, fields={"keypoints": torch.zeros(2, 15, 3)})
    with pytest.raises(UserError, match="no keypoints were given"):
        d.cond_logits(torch.zeros(2, 8 * 256 + 32 * 16), Condition(text, text, None), text, fields={})


def test_the_networks_refuse_a_place_they_cannot_take() -> None:
    with pytest.raises(RecipeError, match="only the first stage gets noise"):
        build("generator_stage", ctx(index=1, in_size=64), ngf=4)
    with pytest.raises(RecipeError, match="judges 128x128 images, but this stage draws 64x64"):
        build("discriminator", ctx(image_size=64), ndf=4)
