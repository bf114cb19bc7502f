"""GAN-INT-CLS as published: Reed's network sizes, the CLS weighting, and the INT term."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fields_plugin import RECIPE as FIELDS_RECIPE
from fields_plugin import SEEN, FieldsPlugin
from test_datasets_stackgan import _layout
from test_recipes_all import _reduced
from torch import nn

from ganstack.components.loader import load_plugins
from ganstack.interfaces import Condition, LossContext, StageContext, StageOutput, StepState
from ganstack.testing import registered_plugin

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "gan_int_cls_cub.yaml"
REED = {"text_dim": 1024, "noise_dim": 100}  # char-CNN-RNN embedding, z


def build(kind: str, name: str, ctx: StageContext | LossContext, **options: Any) -> nn.Module:
    entry = load_plugins().registry.get(kind, name)
    return entry.factory(entry.options(**options), ctx)


def stage_ctx(**fields: Any) -> StageContext:
    return StageContext(index=0, num_stages=1, **fields)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Hand counts of main_cls_int.lua's layers (no conv biases: the script zeroes them every step).
def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k


def bn(c: int) -> int:
    return 2 * c


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def bottleneck(c: int) -> int:
    q = c // 4
    return conv(c, q, 1) + bn(q) + conv(q, q, 3) + bn(q) + conv(q, c, 3) + bn(c)


G_PAPER = (conv(100 + 128, 1024, 4) + bn(1024) + conv(1024, 512, 4) + bn(512) + conv(512, 256, 4) + bn(256)
           + conv(256, 128, 4) + bn(128) + conv(128, 3, 4))
D_PAPER = (conv(3, 64, 4) + conv(64, 128, 4) + bn(128) + conv(128, 256, 4) + bn(256) + conv(256, 512, 4) + bn(512)
           + linear(1024, 128) + bn(128) + conv(512 + 128, 512, 1) + bn(512) + conv(512, 1, 4))


@pytest.mark.parametrize("residual", [False, True], ids=["paper", "released"])
def test_networks_have_reeds_sizes(residual: bool) -> None:
    with torch.device("meta"):
        cond = build("conditioner", "linear", stage_ctx(**REED), condition_dim=128, init="uniform")
        g = build("generator_stage", "gan-int-cls", stage_ctx(**REED, cond_dim=128), residual=residual)
        d = build("discriminator", "gan-int-cls", stage_ctx(**REED, cond_dim=128, image_size=64), residual=residual)
        text, z = torch.empty(2, 1024), torch.empty(2, 100)
        out = g(z, cond(text), None)
        features = d.features(out.image)
        logits = d.cond_logits(features, cond(text), text)
    assert count(cond) == linear(1024, 128) == 131_200
    assert count(g) == G_PAPER + (bottleneck(1024) + bottleneck(512) if residual else 0)
    assert count(d) == D_PAPER + (bottleneck(512) if residual else 0)
    assert (count(g), count(d)) == ((18_774_272, 4_030_080) if residual else (14_755_584, 3_225_728))
    assert out.image.shape == (2, 3, 64, 64) and out.features.shape == (2, 128, 32, 32)
    assert features.shape == (2, 512, 4, 4) and logits.shape == (2,)
    assert d.uncond_logits(features) is None


def test_recipe_builds_at_full_size_with_these_counts(cli) -> None:
    code, out, err = cli("check", RECIPE, "--params", "--json")
    assert code == 0, err
    rows = {r["role"]: r for r in json.loads(out) if r["stage"] == "gan-int-cls"}
    assert rows["conditioner"]["params"] == 131_200
    assert rows["generator"]["params"] == 18_774_272 and rows["generator"]["output_shape"] == [2, 3, 64, 64]
    assert rows["discriminator"]["params"] == 4_030_080


def _bn(x: torch.Tensor, m: nn.Module) -> torch.Tensor:
    """BatchNorm in inference mode, from its definition."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return ((x - m.running_mean.reshape(shape)) / torch.sqrt(m.running_var.reshape(shape) + m.eps)
            * m.weight.reshape(shape) + m.bias.reshape(shape))


def test_released_discriminator_computes_reeds_layout() -> None:
    """main_cls_int.lua's netD written out with functional ops on the module's own weights (16x16: two
    stride-2 convolutions, so both are 'the last two'): conv -> LeakyReLU, conv -> BN, residual sum ->
    LeakyReLU; the text Linear -> BN -> LeakyReLU replicated and joined after the image features."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    d = build("discriminator", "gan-int-cls", stage_ctx(text_dim=5, noise_dim=4, image_size=16), ndf=4,
              condition_dim=3, residual=True)
    for m in d.modules():  # running statistics away from (0, 1), so that BN's place matters
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    d.eval()
    image, text = torch.randn(3, 3, 16, 16), torch.randn(3, 5)
    lrelu = lambda x: F.leaky_relu(x, 0.2)  # noqa: E731
    conv1, _, conv2, bn2, res, _ = d.image_path
    h = lrelu(F.conv2d(image, conv1.weight, stride=2, padding=1))
    h = _bn(F.conv2d(h, conv2.weight, stride=2, padding=1), bn2)  # no LeakyReLU here, as released
    r = res.body
    y = lrelu(_bn(F.conv2d(h, r[0].weight), r[1]))
    y = lrelu(_bn(F.conv2d(y, r[3].weight, padding=1), r[4]))
    h = lrelu(h + _bn(F.conv2d(y, r[6].weight, padding=1), r[7]))
    lin, bn_t, _ = d.compress_text
    t = lrelu(_bn(F.linear(text, lin.weight, lin.bias), bn_t))
    joined = torch.cat([h, t[:, :, None, None].expand(-1, -1, 4, 4)], dim=1)
    one, bn_j, _, last = d.cond_head
    expected = F.conv2d(lrelu(_bn(F.conv2d(joined, one.weight), bn_j)), last.weight).reshape(-1)
    cond = Condition(torch.zeros(3, 2), torch.zeros(3, 2), None)  # D never reads G's condition
    with torch.no_grad():
        assert torch.allclose(d.cond_logits(d.features(image), cond, text), expected, atol=1e-5)


def test_released_networks_have_their_residual_blocks_where_reeds_code_has_them() -> None:
    """main_cls_int.lua's D: conv3 -> BN, conv4 -> BN, residual sum, then the LeakyReLU."""
    d = build("discriminator", "gan-int-cls", stage_ctx(text_dim=8, noise_dim=4, image_size=64), ndf=4,
              residual=True)
    kinds = [type(m).__name__ for m in d.image_path]
    assert kinds == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU", "Conv2d", "BatchNorm2d",
                     "Conv2d", "BatchNorm2d", "Bottleneck", "LeakyReLU"]
    g = build("generator_stage", "gan-int-cls", stage_ctx(text_dim=8, noise_dim=4, cond_dim=3), ngf=4,
              residual=True)  # deconv -> BN -> residual sum -> ReLU at 4x4 and 8x8, then deconv -> BN -> ReLU
    kinds = [type(m).__name__ for m in g.body]
    assert kinds == ["ConvTranspose2d", "BatchNorm2d", "Bottleneck", "ReLU"] * 2 \
        + ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * 2


def test_init_is_dcgan_torchs_and_linear_layers_keep_torch7s_default() -> None:
    torch.manual_seed(0)
    cond = build("conditioner", "linear", stage_ctx(**REED), condition_dim=128, init="uniform")
    d = build("discriminator", "gan-int-cls", stage_ctx(**REED, image_size=64))
    bound = 1 / math.sqrt(1024)  # Torch7's nn.Linear reset: U(-1/sqrt(in), 1/sqrt(in)), bias too
    for lin in (cond.net[0], d.compress_text[0]):
        assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.99 * bound
        assert lin.bias.abs().max() <= bound and lin.bias.abs().max() > 0.9 * bound
    first = d.image_path[0].weight
    assert d.image_path[0].bias is None and abs(first.std().item() - 0.02) < 0.002  # N(0, 0.02)
    normal = build("conditioner", "linear", stage_ctx(**REED), condition_dim=128)  # the default is unchanged
    assert torch.count_nonzero(normal.net[0].bias) == 0 and abs(normal.net[0].weight.std().item() - 0.02) < 0.001


# ------------------------------------------------------------------------------- CLS weighting
class LogitsAsImages(nn.Module):
    """A discriminator whose 'image' is its own logit: features pass the image through, cond_logits reads it."""

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return image.reshape(-1)

    def cond_logits(self, features: torch.Tensor, condition: Condition, text: torch.Tensor) -> torch.Tensor:
        return features

    def uncond_logits(self, features: torch.Tensor) -> None:
        return None


def _bce(x: float, target: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_matching_aware_with_class_wrong_images_gives_the_cls_weights() -> None:
    """Reed's cls_weight 0.5: D = real/right + 0.5 real/wrong + 0.5 fake/right."""
    real, wrong, fake = [0.3, -1.2], [2.0, 0.1], [-0.4, 1.5]
    loss = build("loss", "matching-aware", LossContext(index=0, num_stages=1), wrong="class")
    assert loss.requests == {"wrong_images"}
    as_image = lambda v: torch.tensor(v).reshape(2, 1, 1, 1)  # noqa: E731
    cond = Condition(torch.zeros(2, 1), torch.zeros(2, 1), None)
    step = StepState(stage=0, phase="d", discriminator=LogitsAsImages(), real=as_image(real), fake=as_image(fake),
                     condition=cond, text=torch.zeros(2, 1), wrong_real=as_image(wrong))
    terms = loss.d_terms(step)
    mean = lambda xs, t: sum(_bce(x, t) for x in xs) / len(xs)  # noqa: E731
    expected = mean(real, 1) + 0.5 * mean(wrong, 0) + 0.5 * mean(fake, 0)
    assert sum(terms.values()).item() == pytest.approx(expected, rel=1e-6)
    assert terms["d_wrong"].item() == pytest.approx(0.5 * mean(wrong, 0), rel=1e-6)
    step.phase = "g"
    assert loss.g_terms(step)["g_fake"].item() == pytest.approx(mean(fake, 1), rel=1e-6)


# ------------------------------------------------------------------------------------ INT term
class FixedD(nn.Module):
    """A tiny fixed D: logit = 2 * mean(image) + sum(text); records the texts it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[torch.Tensor] = []

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=(1, 2, 3))

    def cond_logits(self, features: torch.Tensor, condition: Condition, text: torch.Tensor) -> torch.Tensor:
        self.texts.append(text.detach().clone())
        return 2 * features + text.sum(dim=1)


def _g_step(text: torch.Tensor, d: nn.Module, gain: nn.Parameter, seen: list[torch.Tensor]) -> StepState:
    """A G-phase StepState whose ``generate`` draws image = gain * mean(text), as the contract's does."""

    def generate(t: torch.Tensor, fields: dict[str, torch.Tensor] | None = None) -> tuple[Condition, StageOutput]:
        seen.append(t.detach().clone())
        image = (gain * t.mean(dim=1))[:, None, None, None].expand(-1, 3, 4, 4)
        return Condition(t, t, None), StageOutput(image=image, features=None)

    return StepState(stage=0, phase="g", discriminator=d, real=torch.zeros(text.shape[0], 3, 4, 4),
                     fake=torch.zeros(text.shape[0], 3, 4, 4), condition=Condition(text, text, None), text=text,
                     generate=generate)


@pytest.mark.parametrize(("beta", "weight", "fraction"), [(0.5, 1.0, 0.5), (0.25, 2.0, 1.0)])
def test_int_term_scores_images_of_interpolated_embeddings_with_that_text(beta: float, weight: float,
                                                                           fraction: float) -> None:
    torch.manual_seed(0)
    b = 6
    text = torch.randn(b, 5)
    d, seen, gain = FixedD(), [], nn.Parameter(torch.tensor(3.0))
    loss = build("loss", "interpolation", LossContext(index=0, num_stages=1), beta=beta, weight=weight,
                 fraction=fraction)
    terms = loss.g_terms(_g_step(text, d, gain, seen))
    # Independently: example i meets example i + 3 (mod 6), Reed's first half with the second.
    n = round(fraction * b)
    rows = text.tolist()
    mixed = [[beta * rows[i][j] + (1 - beta) * rows[(i + b // 2) % b][j] for j in range(5)] for i in range(n)]
    assert len(seen) == 1 and torch.allclose(seen[0], torch.tensor(mixed))
    assert len(d.texts) == 1 and torch.allclose(d.texts[0], torch.tensor(mixed))  # D got the mixed text
    logits = [2 * 3.0 * sum(t) / 5 + sum(t) for t in mixed]
    expected = weight * sum(_bce(x, 1.0) for x in logits) / b
    assert set(terms) == {"g_int"} and terms["g_int"].item() == pytest.approx(expected, rel=1e-5)
    terms["g_int"].backward()
    assert gain.grad is not None and gain.grad.abs() > 0  # the generator learns from the term


def test_int_term_has_no_discriminator_term_and_keeps_two_rows_in_small_batches() -> None:
    loss = build("loss", "interpolation", LossContext(index=0, num_stages=1))
    text = torch.randn(2, 3)
    d, seen = FixedD(), []
    step = _g_step(text, d, nn.Parameter(torch.tensor(1.0)), seen)
    assert loss.d_terms(step) == {}
    loss.g_terms(step)
    assert seen[0].shape == (2, 3)  # half of 2 would leave D's BatchNorm one row
    assert torch.allclose(seen[0], (text + text.flip(0)) / 2)


class BoxD(FixedD):
    """A D that requests the dataset's boxes (as a GAWWN discriminator would)."""

    requests = frozenset({"box"})

    def __init__(self) -> None:
        super().__init__()
        self.boxes: list[torch.Tensor] = []

    def cond_logits(self, features: torch.Tensor, condition: Condition, text: torch.Tensor, *,
                    fields: dict[str, torch.Tensor]) -> torch.Tensor:
        self.boxes.append(fields["box"])
        return super().cond_logits(features, condition, text)


def test_int_term_gives_g_and_d_the_fields_of_each_pairs_first_example() -> None:
    text, boxes = torch.randn(4, 3), torch.rand(4, 4)
    d, given = BoxD(), []

    def generate(t: torch.Tensor, fields: dict[str, torch.Tensor] | None = None) -> tuple[Condition, StageOutput]:
        given.append(fields)
        return Condition(t, t, None), StageOutput(image=t.mean(dim=1)[:, None, None, None].expand(-1, 3, 2, 2),
                                                  features=None)

    step = StepState(stage=0, phase="g", discriminator=d, real=torch.zeros(4, 3, 2, 2), fake=torch.zeros(4, 3, 2, 2),
                     condition=Condition(text, text, None), text=text, fields={"box": boxes}, generate=generate)
    build("loss", "interpolation", LossContext(index=0, num_stages=1)).g_terms(step)
    assert torch.equal(given[0]["box"], boxes[:2]) and torch.equal(d.boxes[0], boxes[:2])


def test_int_term_in_training_draws_through_the_core_with_the_pairs_boxes(cli, tmp_path: Path) -> None:
    """Through the trainer's own StepState.generate, with the contract's box-conditioned test plugin."""
    SEEN.clear()
    path = tmp_path / "boxed.yaml"
    path.write_text(FIELDS_RECIPE % {"encoder": "{type: bow, dim: 8, max_vocab: 32}", "requests": "[box]",
                                     "losses": ", {type: interpolation}"})
    with registered_plugin(FieldsPlugin(), "fields-test"):
        code, out, err = cli("run", path, "--max-steps", 1, "--out", tmp_path / "run")
    assert code == 0, out + err
    batch = SEEN["generator"][0]["box"]  # the step's own pass over the batch of 4
    # then the INT pass: 2 interpolated rows, each with its pair's first example's box, for G and for D
    # (D's calls: real, wrong, fake in the D phase; fake/right, then the INT images in the G phase)
    assert batch.shape == (4, 4) and torch.equal(SEEN["generator"][1]["box"], batch[:2])
    assert len(SEEN["cond_logits"]) == 5 and torch.equal(SEEN["cond_logits"][4], batch[:2])
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["stage1/g_int"] > 0 and "stage1/g_fake" in line


# ---------------------------------------------------------------------------------- the recipe
def test_recipe_runs_a_reduced_step_and_logs_the_int_term(cli, tmp_path: Path) -> None:
    birds = _layout(tmp_path / "birds")
    code, out, err = cli("run", RECIPE, "--out", tmp_path / "run", "--max-steps", 1, *_reduced(cli, RECIPE, birds))
    assert code == 0, out + err
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for term in ("g_int", "g_fake", "d_real", "d_wrong", "d_fake"):
        assert f"stage1/{term}" in line, line
    assert math.isfinite(line["stage1/g_int"]) and line["stage1/g_int"] > 0  # a BCE sum: positive
    assert "stage1/kl" not in line  # no Conditioning Augmentation, no KL loss
