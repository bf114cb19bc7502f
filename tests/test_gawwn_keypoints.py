"""GAWWN's keypoint networks: the keypoint maps and mask by hand, the pathways, shapes, sizes, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_datasets_stackgan import _layout
from torch import nn

from ganstack.components.loader import load_plugins
from ganstack.errors import RecipeError, UserError
from ganstack.interfaces import Condition, StageContext
from ganstack.sample.overlay import part_colour
from ganstack_defaults.networks.gawwn_keypoints import keypoint_maps, keypoint_mask

TEXT, NOISE, PARTS = 8, 6, 5  # tiny sizes
ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "gawwn_cub_keypoints.yaml"


def build(kind: str, ctx: StageContext, **options: Any) -> nn.Module:
    entry = load_plugins().registry.get(kind, "gawwn-keypoints")
    return entry.factory(entry.options(**options), ctx)


def ctx(index: int = 0, **extra: Any) -> StageContext:
    values = {"text_dim": TEXT, "noise_dim": NOISE, "cond_dim": TEXT, **extra}
    return StageContext(index=index, num_stages=1, **values)


def tiny_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    g = build("generator_stage", ctx(), ngf=4, parts=PARTS)
    d = build("discriminator", ctx(image_size=128), ndf=4, text_channels=6, parts=PARTS)
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
    vector = g.local_vector(hidden)[0]
    assert masked.shape == (1, 16, 16, 16)
    outside = mask[0, 0] == 0
    assert int((~outside).sum()) == 3
    assert torch.all(masked[0][:, outside] == 0)
    for row, col in [(3, 3), (6, 11), (14, 8)]:  # the three visible parts' cells
        assert torch.equal(masked[0, :, row, col], vector)
    assert vector.abs().sum() > 0


def test_shapes_of_every_output() -> None:
    g, d = tiny_pair()
    kp = torch.rand(3, PARTS, 3)
    kp[..., 2] = (kp[..., 2] > 0.4).float()
    fields = {"keypoints": kp}
    text = torch.randn(3, TEXT)
    out = g(torch.randn(3, NOISE), Condition(text, text, None), None, fields=fields)
    assert out.image.shape == (3, 3, 128, 128) and g.out_size == 128
    assert out.features is None and g.feature_channels == 0
    assert float(out.image.detach().abs().max()) <= 1.0
    f = d.features(out.image)
    assert f.shape == (3, 8, 16, 16)
    assert d.cond_logits(f, Condition(text, text, None), text, fields=fields).shape == (3,)
    assert d.uncond_logits(f, fields=fields) is None
    assert g.requests == d.requests == frozenset({"keypoints"})
    example = g.example_fields(2)["keypoints"]
    assert example.shape == (2, PARTS, 3) and torch.equal(example, d.example_fields(2)["keypoints"])
    assert example[..., 2].eq(1).all()


def test_moving_the_parts_changes_what_both_networks_make_of_the_same_noise_and_text() -> None:
    """In training mode (BatchNorm on batch statistics, as they train; at the N(0, 0.02) init and tiny
    widths the eval-mode signal is too faint to compare). At init D's logit is ruled by its global
    branch, so its local branch (``local_read``, before the average) is compared too."""
    g, d = tiny_pair()
    kp = torch.tensor([[0.2 + 0.1 * k, 0.5, 1.0] for k in range(PARTS)]).expand(4, PARTS, 3)
    moved = kp.clone()
    moved[:2, :, 1] = 0.2  # every part higher up in the first two examples
    z, text = torch.randn(4, NOISE), torch.randn(4, TEXT)
    cond = Condition(text, text, None)
    local: list[torch.Tensor] = []
    d.local_read.register_forward_hook(lambda module, args, out: local.append(out))
    with torch.no_grad():
        here, there = (g(z, cond, None, fields={"keypoints": k}).image for k in (kp, moved))
        f = d.features(here)
        logits = [d.cond_logits(f, cond, text, fields={"keypoints": k}) for k in (kp, moved)]
    assert (here - there).abs().max() > 0.1 * here.abs().max()
    assert (local[0] - local[1]).abs().max() > 0.1 * local[0].abs().max()
    assert not torch.equal(*logits)


# The Torch code's layers (main_cub_keypoints.lua), as (kind, in, out, kernel, followed by BatchNorm);
# ganstack drops the bias of a convolution that BatchNorm follows (the BN shift cancels it).
def torch_g(ngf: int, nz: int, txt: int, k: int) -> list[tuple[str, int, int, int, bool]]:
    return [("lin", nz, 4 * ngf, 1, False), ("lin", txt, 4 * ngf, 1, False),
            ("lin", 8 * ngf, 4 * ngf, 1, True), ("conv", 4 * ngf, 4 * ngf, 3, True),           # local
            ("conv", k, ngf, 4, True), ("conv", ngf, 2 * ngf, 4, True), ("conv", 2 * ngf, 4 * ngf, 4, True),
            ("lin", 8 * ngf, 4 * ngf, 1, True),
            ("conv", 8 * ngf, 4 * ngf, 4, True), ("conv", 4 * ngf, 2 * ngf, 4, True), ("conv", 2 * ngf, ngf, 4, True),
            ("conv", 5 * ngf + k, 4 * ngf, 3, True), ("conv", 4 * ngf, 4 * ngf, 3, True),      # joined
            ("conv", 4 * ngf, ngf, 1, True), ("conv", ngf, ngf, 3, True), ("conv", ngf, 4 * ngf, 3, True),
            ("conv", 4 * ngf, 2 * ngf, 4, True), ("conv", 2 * ngf, ngf, 4, True), ("conv", ngf, 3, 4, False)]


def torch_d(ndf: int, txt: int, nt: int, k: int) -> list[tuple[str, int, int, int, bool]]:
    return [("conv", 3, ndf, 4, False), ("conv", ndf, ndf, 4, False), ("conv", ndf, 2 * ndf, 4, True),
            ("conv", 2 * ndf, 2 * ndf, 3, True), ("lin", txt, nt, 1, False),
            ("conv", 2 * ndf + nt, 2 * ndf, 3, True), ("conv", 2 * ndf + k, 2 * ndf, 1, True),   # local
            ("conv", 2 * ndf, ndf, 1, False),
            ("conv", 2 * ndf, 4 * ndf, 4, True), ("conv", 4 * ndf, 8 * ndf, 4, True),           # global
            ("conv", 8 * ndf + nt, 4 * ndf, 1, True), ("conv", 4 * ndf, ndf, 4, True),
            ("lin", 2 * ndf, ndf, 1, True), ("lin", ndf, 1, 1, False)]


def counts(layers: list[tuple[str, int, int, int, bool]]) -> tuple[int, int]:
    """(the Torch model's parameter count, ganstack's)."""
    torch_count = sum(a * b * k * k + b + (2 * b if bn else 0) for _, a, b, k, bn in layers)
    convs_before_bn = sum(b for kind, _, b, _, bn in layers if bn and kind == "conv")
    return torch_count, torch_count - convs_before_bn


def test_full_size_parameter_counts_follow_the_torch_codes_layers() -> None:
    paper = {"text_dim": 1024, "noise_dim": 100, "cond_dim": 1024}
    g = build("generator_stage", ctx(**paper))
    d128 = build("discriminator", ctx(**paper, image_size=128))
    d64 = build("discriminator", ctx(**paper, image_size=128), ndf=64)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    g_torch, g_ours = counts(torch_g(128, 100, 1024, 15))
    d128_torch, d128_ours = counts(torch_d(128, 1024, 128, 15))
    d64_torch, d64_ours = counts(torch_d(64, 1024, 128, 15))
    assert (count(g), count(d128), count(d64)) == (g_ours, d128_ours, d64_ours)
    assert (g_torch, d128_torch, d64_torch) == (26_471_043, 14_667_905, 3_860_609)
    assert (g_ours, d128_ours, d64_ours) == (26_466_563, 14_664_705, 3_859_009)


def test_the_cub_recipe_builds_at_full_size_with_those_counts(cli) -> None:
    code, out, err = cli("check", RECIPE, "--params", "--json")
    assert code == 0, err
    rows = {(r["stage"], r["role"]): r for r in json.loads(out)}
    assert rows[("gawwn", "conditioner")]["params"] == 0
    assert rows[("gawwn", "generator")]["params"] == 26_466_563
    assert rows[("gawwn", "discriminator")]["params"] == 14_664_705
    assert rows[("gawwn", "generator")]["output_shape"] == [2, 3, 128, 128]


# ----------------------------------------------------------------------------------------- errors
def test_keypoints_of_another_part_count_are_refused_naming_the_option() -> None:
    g, d = tiny_pair()
    text = torch.randn(2, TEXT)
    with pytest.raises(UserError, match=r"built for 5 parts \(option 'parts'\).*\(2, 15, 3\)"):
        g(torch.randn(2, NOISE), Condition(text, text, None), None, fields={"keypoints": torch.zeros(2, 15, 3)})
    with pytest.raises(UserError, match="no keypoints were given"):
        d.cond_logits(torch.zeros(2, 8, 16, 16), Condition(text, text, None), text, fields={})


def test_the_networks_refuse_a_place_they_cannot_take() -> None:
    with pytest.raises(RecipeError, match="can only be the first stage"):
        build("generator_stage", ctx(index=1, in_size=64), ngf=4)
    with pytest.raises(RecipeError, match="judges 128x128 images, but this stage draws 64x64"):
        build("discriminator", ctx(image_size=64), ndf=4)


# ------------------------------------------------------------------------------- recipe, sampling
def doc_keypoints() -> list[list[float]]:
    """The example ``--keypoints`` file of docs/gawwn-keypoints.md (its json block)."""
    text = (ROOT / "docs" / "gawwn-keypoints.md").read_text(encoding="utf-8")
    return json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])["keypoints"]


def test_the_keypoint_recipe_trains_a_step_at_reduced_width_and_samples_where_the_parts_are(
        cli, tmp_path: Path) -> None:
    birds = _layout(tmp_path / "birds")  # a miniature StackGAN layout with CUB's part_locs.txt
    sets = ["training.batch_size=2", "training.num_workers=0", "training.device=cpu", "output.sample_count=2",
            "output.log_every=1", "stages.0.generator.ngf=4", "stages.0.discriminator.ndf=4",
            "stages.0.discriminator.text_channels=8", f"dataset.root={birds}", "text_encoder.dim=11"]
    run = tmp_path / "run"
    code, out, err = cli("run", RECIPE, "--out", run, "--max-steps", 1, *(a for s in sets for a in ("--set", s)))
    assert code == 0, out + err
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"stage1/d_real", "stage1/d_wrong", "stage1/d_fake", "stage1/g_fake"} <= set(line)

    embeddings = tmp_path / "sentences.npy"
    np.save(embeddings, np.random.default_rng(0).standard_normal((2, 11)).astype(np.float32))
    pose = doc_keypoints()

    def draw(points: list[list[float]], name: str) -> list[np.ndarray]:
        (tmp_path / f"{name}.json").write_text(json.dumps({"keypoints": points}))
        code, out, err = cli("sample", run, "--embeddings", embeddings, "--text", "a red bird", "--text", "a blue bird",
                             "--keypoints", tmp_path / f"{name}.json", "--out", tmp_path / name)
        assert code == 0, out + err
        rows = [json.loads(r) for r in (tmp_path / name / "manifest.jsonl").read_text().splitlines()]
        assert [r["caption"] for r in rows] == ["a red bird", "a blue bird"]
        return [np.asarray(Image.open(tmp_path / name / r["file"])) for r in rows]

    first = draw(pose, "pose")
    assert first[0].shape == (128, 128, 3)
    manifest = json.loads((tmp_path / "pose" / "manifest.jsonl").read_text().splitlines()[0])
    np.testing.assert_allclose(manifest["keypoints"], pose, rtol=1e-6)  # recorded as the stack got them (float32)
    # the contact sheet marks each visible part: its first image sits at (224, 20) (caption column 220,
    # padding 4, stage header 16), the beak (part 2, at 0.25, 0.35) on pixel (32, 44) of it
    sheet = np.asarray(Image.open(tmp_path / "pose" / "contact_sheet.png").convert("RGB"))
    assert tuple(sheet[20 + 44, 224 + 32]) == part_colour(1, 15)
    assert tuple(sheet[20, 224]) == tuple(first[0][0, 0])  # hidden parts ([0, 0, 0]) are not drawn

    (tmp_path / "short.json").write_text(json.dumps(pose[:14]))  # the part count comes from the stack
    code, _out, err = cli("sample", run, "--embeddings", embeddings, "--keypoints", tmp_path / "short.json")
    assert code == 2 and "--keypoints" in err and "14 parts" in err and "expects 15" in err


# ------------------------------------------------------------------------- the mismatched pair
class RecordingDiscriminator(nn.Module):
    """Records, for each conditional call, the row of each text and each keypoint set it was given."""

    requests = frozenset({"keypoints"})

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[float], list[float]]] = []

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return image.flatten(1)

    def cond_logits(self, features: torch.Tensor, condition: Condition, text: torch.Tensor, *,
                    fields: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls.append((text[:, 0].tolist(), fields["keypoints"][:, 0, 0].tolist()))
        return features[:, 0]

    def uncond_logits(self, features: torch.Tensor, *, fields: dict[str, torch.Tensor]) -> None:
        return None


@pytest.mark.parametrize(("wrong", "wrong_fields", "texts", "keypoints"), [
    ("shift", "image", [3, 0, 1, 2], [0, 1, 2, 3]),  # GAWWN: the image's own keypoints, another text
    ("shift", "text", [3, 0, 1, 2], [3, 0, 1, 2]),   # the whole condition of another example
    ("port", "image", [1, 2, 3], [0, 1, 2]),
    ("port", "text", [1, 2, 3], [1, 2, 3]),
])
def test_the_mismatched_pair_carries_the_keypoints_the_option_names(
        wrong: str, wrong_fields: str, texts: list[int], keypoints: list[int]) -> None:
    from ganstack.interfaces import LossContext, StepState

    entry = load_plugins().registry.get("loss", "matching-aware")
    loss = entry.factory(entry.options(wrong=wrong, wrong_fields=wrong_fields), LossContext(index=0, num_stages=1))
    d = RecordingDiscriminator()
    rows = torch.arange(4, dtype=torch.float32)
    text = rows[:, None].expand(4, TEXT).clone()  # text row i holds i
    kp = torch.zeros(4, PARTS, 3)
    kp[:, 0, 0] = rows  # keypoints row i hold i
    images = torch.rand(4, 3, 8, 8)
    loss.d_terms(StepState(stage=0, phase="d", discriminator=d, real=images, fake=images.flip(0),
                           condition=Condition(text, text, None), text=text, fields={"keypoints": kp}))
    real, wrong_pair, fake = d.calls
    assert real == fake == ([0, 1, 2, 3], [0, 1, 2, 3])
    assert wrong_pair == (texts, keypoints)


def test_the_images_own_fields_need_a_mismatched_pair_of_the_same_image() -> None:
    entry = load_plugins().registry.get("loss", "matching-aware")
    with pytest.raises(ValueError, match="wrong: class"):
        entry.options(wrong="class", wrong_fields="image")
