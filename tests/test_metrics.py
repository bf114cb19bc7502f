"""Tests of the metric plugins: IS/FID arithmetic, the Inception seam and caches, shapes alignment."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ganstack.components.loader import load_plugins
from ganstack.errors import DataError, UserError
from ganstack.interfaces import DataContext, Metric, MetricContext
from ganstack.testing import metric_context
from ganstack.train.encoder_pretraining import PretrainOptions, pretrain_and_save
from ganstack_defaults.data.dataset import CaptionImageDataset
from ganstack_defaults.metrics.formulas import FeatureMoments, frechet_distance, inception_score
from ganstack_defaults.metrics.inception import INPUT_SIZE, load_inception, preprocess
from ganstack_defaults.metrics.inception_scores import (
    FidOptions,
    FrechetInceptionDistance,
    InceptionScore,
    InceptionScoreOptions,
)
from ganstack_defaults.metrics.sources import item_batches
from ganstack_defaults.shapes import scenes as shapes
from ganstack_defaults.shapes.alignment import (
    SPLITS,
    ShapesAlignment,
    ShapesAlignmentOptions,
    evaluation_scenes,
)
from ganstack_defaults.shapes.dataset import ShapesDataset, ShapesOptions, build_shapes
from ganstack_defaults.shapes.judge import (
    JudgeSpec,
    accuracy,
    labels,
    load_or_train_judge,
    render_scenes,
    train_judge,
)
from ganstack_defaults.text.bow import BagOfWordsEncoder, BowOptions


# ------------------------------------------------------------------------------------ fakes
class TinyBackbone(nn.Module):
    """Stands in for Inception-v3 through the ``load_backbone`` seam: (logits, pool features)."""

    def __init__(self, classes: int = 5, dim: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, dim, 3, padding=1)
        self.fc = nn.Linear(dim, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        self.sizes: list[int] = []

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        self.sizes.append(images.shape[-1])
        pool = torch.tanh(self.conv(images)).mean(dim=(2, 3))
        return self.fc(pool), pool


class FakeDataset:
    """A CaptionDataset of random two-stage images (8x8 and 16x16) with unique captions."""

    embedding_dim = None

    def __init__(self, n: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.items = [{"images": [torch.rand(3, 8, 8, generator=gen) * 2 - 1,
                                  torch.rand(3, 16, 16, generator=gen) * 2 - 1],
                       "caption": f"caption {i}", "class_id": -1, "index": i} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    def captions(self) -> list[str]:
        return [it["caption"] for it in self.items]

    def sample_captions(self, k: int) -> list[str]:
        return self.captions()[:k]


class FakeSource:
    """An ImageSource that 'generates' the real images of the captions, or darker seeded noise."""

    def __init__(self, dataset: FakeDataset, mode: str = "real") -> None:
        self.data = dataset
        self.mode = mode
        self.by_caption = {it["caption"]: it["images"] for it in dataset.items}

    def generate(self, captions: list[str], seed: int = 0) -> list[Tensor]:
        if self.mode == "real":
            return [torch.stack([self.by_caption[c][s] for c in captions]) for s in range(2)]
        gen = torch.Generator().manual_seed(seed)
        return [torch.rand(len(captions), 3, r, r, generator=gen) - 1 for r in (8, 16)]

    def dataset(self, split: str) -> FakeDataset:
        return self.data


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    path.write_bytes(b"stand-in weights: the tiny backbone ignores them")
    return path


def tiny_loader(backbone: TinyBackbone):
    return lambda path, device: backbone.to(device)


# ------------------------------------------------------------------------------- arithmetic
def test_inception_score_of_uniform_predictions_is_one() -> None:
    mean, std = inception_score(torch.full((20, 7), 1 / 7), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_one_hot_predictions_spread_over_k_classes_is_k() -> None:
    probs = torch.eye(4).repeat(10, 1)  # 40 confident predictions, 10 per class, interleaved
    mean, std = inception_score(probs.numpy(), splits=2)
    assert mean == pytest.approx(4.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_scores_each_split_and_drops_the_remainder() -> None:
    uniform = torch.full((4, 2), 0.5)  # split 1 scores 1
    one_hot = torch.eye(2).repeat(2, 1)  # split 2 scores 2
    leftover = torch.tensor([[1.0, 0.0]])  # 9 rows, 2 splits of 4: this row is not scored
    mean, std = inception_score(torch.cat([uniform, one_hot, leftover]), splits=2)
    assert mean == pytest.approx(1.5, abs=1e-9)
    assert std == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ValueError, match="splits"):
        inception_score(uniform, splits=5)


def _rotation(d: int, seed: int) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form() -> None:
    mu1, mu2 = np.array([0.0, 1.0, 2.0, -1.0]), np.array([1.0, 1.0, 0.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()  # 1+4+2.25+... by hand
    assert expected == pytest.approx(1 + 4 + 2.25 + (10 - 6) + (5 - 4) + 0 + (2.5 - 2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_handles_full_covariances_that_share_eigenvectors() -> None:
    rot = _rotation(5, seed=1)
    d1 = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.1], dtype=torch.float64)
    d2 = torch.tensor([2.0, 2.0, 0.3, 4.0, 0.1], dtype=torch.float64)
    s1, s2 = rot @ torch.diag(d1) @ rot.T, rot @ torch.diag(d2) @ rot.T
    mu = torch.zeros(5)
    expected = float((d1 + d2 - 2 * (d1 * d2).sqrt()).sum())
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu, s2, mu, s1) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_identical_statistics_is_zero() -> None:
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    moments = FeatureMoments()
    moments.add(x)
    mu, sigma = moments.stats()
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_feature_moments_over_batches_match_numpy() -> None:
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(3)) * 3 + 7
    moments = FeatureMoments()
    for part in x.split(17):
        moments.add(part)
    mu, sigma = moments.stats()
    assert moments.count == 50
    np.testing.assert_allclose(mu.numpy(), x.double().mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-10)


# -------------------------------------------------------------------------- inception-score
def test_inception_score_metric_scores_the_last_stage_with_the_backbone(weights: Path) -> None:
    data, backbone = FakeDataset(12), TinyBackbone()
    metric = InceptionScore(InceptionScoreOptions(weights=str(weights), splits=3, batch_size=5), "cpu",
                            load_backbone=tiny_loader(backbone))
    result = metric.evaluate(FakeSource(data), n=12)
    logits, _ = backbone(torch.stack([it["images"][1] for it in data.items]))
    mean, std = inception_score(torch.softmax(logits.double(), 1), 3)
    assert result["is_mean"] == pytest.approx(mean, rel=1e-6)
    assert result["is_std"] == pytest.approx(std, rel=1e-5, abs=1e-7)
    assert result["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert set(backbone.sizes) == {16}
    assert isinstance(metric, Metric)


def test_inception_score_metric_stage_option_picks_the_stage(weights: Path) -> None:
    backbone = TinyBackbone()
    metric = InceptionScore(InceptionScoreOptions(weights=str(weights), splits=2, stage=1), "cpu",
                            load_backbone=tiny_loader(backbone))
    metric.evaluate(FakeSource(FakeDataset(4)), n=6)  # n beyond the split cycles its captions
    assert backbone.sizes == [8]
    bad = InceptionScore(InceptionScoreOptions(weights=str(weights), splits=2, stage=3), "cpu",
                         load_backbone=tiny_loader(backbone))
    with pytest.raises(UserError, match="stage 3") as err:
        bad.evaluate(FakeSource(FakeDataset(4)), n=4)
    assert err.value.path == "stage"


def test_inception_score_metric_refuses_too_few_images_and_wrong_class_counts(weights: Path) -> None:
    metric = InceptionScore(InceptionScoreOptions(weights=str(weights)), "cpu",
                            load_backbone=tiny_loader(TinyBackbone()))
    with pytest.raises(UserError, match="splits"):
        metric.evaluate(FakeSource(FakeDataset(4)), n=4)
    metric = InceptionScore(InceptionScoreOptions(weights=str(weights), splits=1, num_classes=1000), "cpu",
                            load_backbone=tiny_loader(TinyBackbone(classes=5)))
    with pytest.raises(UserError, match="5 classes") as err:
        metric.evaluate(FakeSource(FakeDataset(4)), n=4)
    assert err.value.path == "num_classes"
    with pytest.raises(DataError, match="empty"):
        metric.evaluate(FakeSource(FakeDataset(0)), n=4)


def test_missing_weights_are_a_user_error_naming_the_option(tmp_path: Path) -> None:
    registry = load_plugins().registry
    for name in ("inception-score", "fid"):
        entry = registry.get("metric", name)
        with pytest.raises(UserError, match="does not exist|do not exist") as err:
            entry.factory(entry.options(weights=str(tmp_path / "nope.pt")), MetricContext())
        assert err.value.path == "weights"
        assert "torch.save" in str(err.value) and "weights" in str(err.value)


def test_relative_weights_are_found_next_to_the_recipe(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "inception.pt").write_bytes(b"read lazily, at the first evaluation")
    registry = load_plugins().registry
    for name in ("inception-score", "fid"):
        entry = registry.get("metric", name)
        metric = entry.factory(entry.options(weights="inception.pt"), MetricContext(recipe_dir=recipes))
        assert metric.weights == recipes / "inception.pt"
        with pytest.raises(UserError, match="do not exist") as err:
            entry.factory(entry.options(weights="missing.pt"), MetricContext(recipe_dir=recipes))
        assert str(recipes / "missing.pt") in str(err.value) and str(Path.cwd() / "missing.pt") in str(err.value)


def test_unreadable_weights_are_a_user_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(UserError, match="cannot be loaded") as err:
        load_inception(junk, torch.device("cpu"))
    assert err.value.path == "weights"
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="fc.weight"):
        load_inception(tmp_path / "other.pt", torch.device("cpu"))


def test_preprocessing_resizes_to_299_and_keeps_the_minus_one_to_one_scale() -> None:
    images = torch.stack([torch.full((3, 8, 8), 0.25), torch.full((3, 8, 8), 3.0)])
    out = preprocess(images)
    assert out.shape == (2, 3, INPUT_SIZE, INPUT_SIZE)
    assert torch.allclose(out[0], torch.tensor(0.25)) and torch.allclose(out[1], torch.tensor(1.0))


def test_a_torchvision_inception_state_dict_loads_with_classes_and_aux_head_inferred(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=7)
    with torch.no_grad():  # initialised so, its pooled features are about 1e-7: sharpen the head so that
        net.fc.weight.mul_(1e7)  # two images get distinguishable predictions
    path = tmp_path / "inception.pt"
    torch.save(net.state_dict(), path)
    backbone = load_inception(path, torch.device("cpu"))
    logits, pool = backbone(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert logits.shape == (2, 7) and pool.shape == (2, 2048)
    entry = load_plugins().registry.get("metric", "inception-score")
    metric = entry.factory(entry.options(weights=str(path), splits=1), MetricContext())
    data = FakeDataset(2)
    result = metric.evaluate(FakeSource(data), n=2)
    # the score by hand from torchvision's own network: exp(mean KL(p(y|x) || p(y))) over the 7 classes
    net.eval()
    with torch.no_grad():
        logits = net(preprocess(torch.stack([it["images"][-1] for it in data.items])))
    p = torch.softmax(logits.double(), dim=1).numpy()
    expected = float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(axis=0, keepdims=True))), axis=1))))
    assert expected > 1.0 + 1e-6  # a check that could tell a wrong class axis or a skipped softmax
    assert result["is_mean"] == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------------------------- fid
def test_fid_of_real_images_against_themselves_is_zero_and_noise_is_not(weights: Path, tmp_path: Path) -> None:
    data = FakeDataset(12)
    opts = FidOptions(weights=str(weights), batch_size=5, cache_dir=str(tmp_path / "cache"))
    same = FrechetInceptionDistance(opts, "cpu", load_backbone=tiny_loader(TinyBackbone()))
    assert abs(same.evaluate(FakeSource(data), n=12)["fid"]) < 1e-6
    noise = FrechetInceptionDistance(opts, "cpu", load_backbone=tiny_loader(TinyBackbone()))
    assert noise.evaluate(FakeSource(data, mode="noise"), n=12)["fid"] > 0.01


def test_fid_reference_statistics_are_cached_once_per_key(weights: Path, tmp_path: Path) -> None:
    data, cache = FakeDataset(12), tmp_path / "cache"
    opts = FidOptions(weights=str(weights), batch_size=4, cache_dir=str(cache))
    backbone = TinyBackbone()
    metric = FrechetInceptionDistance(opts, "cpu", load_backbone=tiny_loader(backbone))
    first = metric.evaluate(FakeSource(data, mode="noise"), n=12)
    assert len(backbone.sizes) == 6  # 3 real batches + 3 generated
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob("*.tmp"))
    again = metric.evaluate(FakeSource(data, mode="noise"), n=12)
    assert len(backbone.sizes) == 9  # the real images were not judged again
    assert again["fid"] == pytest.approx(first["fid"], rel=1e-12)
    metric.evaluate(FakeSource(data, mode="noise"), n=8)  # another n is another reference
    assert len(list(cache.glob("*.pt"))) == 2
    stage1 = FrechetInceptionDistance(FidOptions(weights=str(weights), stage=1, cache_dir=str(cache)), "cpu",
                                      load_backbone=tiny_loader(TinyBackbone()))
    stage1.evaluate(FakeSource(data, mode="noise"), n=12)  # another resolution too
    assert len(list(cache.glob("*.pt"))) == 3
    assert math.isfinite(first["fid"])


# ------------------------------------------------------------------------ shapes-alignment
SHAPES_RES = (16, 32)  # the evaluated (last) stage is 32x32


@pytest.fixture(scope="module")
def judge_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of judges for the module, so the 32x32 judge is trained once."""
    return tmp_path_factory.mktemp("shapes-judge")


def shapes_dataset(split: str, cache: Path) -> ShapesDataset:
    return build_shapes(ShapesOptions(train_size=10, test_size=10, holdout_size=10),
                        DataContext(split=split, resolutions=SHAPES_RES, cache_dir=cache))


class ShapesSource:
    """'Generates' real renders of the captioned scenes (or noise) at the stack's two resolutions."""

    def __init__(self, n: int, seed: int, cache: Path, noise: bool = False) -> None:
        self.scene_of = {caption: scene for split in SPLITS for wording in shapes.WORDINGS
                         for scene, caption in evaluation_scenes(n, seed, split, wording)}
        self.cache = cache
        self.noise = noise

    def generate(self, captions: list[str], seed: int = 0) -> list[Tensor]:
        if self.noise:
            gen = torch.Generator().manual_seed(seed)
            return [torch.rand(len(captions), 3, r, r, generator=gen) * 2 - 1 for r in SHAPES_RES]
        full = render_scenes([self.scene_of[c] for c in captions], SHAPES_RES[-1])
        return [torch.nn.functional.avg_pool2d(full, 2), full]

    def dataset(self, split: str) -> ShapesDataset:
        return shapes_dataset(split, self.cache)


def test_the_judge_reads_real_shapes_images_of_unseen_colour_pairs(judge_cache: Path) -> None:
    judge = load_or_train_judge(32, JudgeSpec(), judge_cache, torch.device("cpu"))
    for split in ("test", "holdout"):
        scenes = shapes.make_scenes(300, 7, split)
        result = accuracy(judge.predict(render_scenes(scenes, 32)), labels(scenes))
        assert min(result.values()) >= 0.99, (split, result)
    assert len(list(judge_cache.glob("shapes-judge-*.pt"))) == 1


def test_judge_training_is_deterministic_and_cached(tmp_path: Path) -> None:
    spec = JudgeSpec(train_scenes=100, steps=3)
    first = train_judge(16, spec, torch.device("cpu")).state_dict()
    again = train_judge(16, spec, torch.device("cpu")).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    cached = load_or_train_judge(16, spec, tmp_path, torch.device("cpu")).state_dict()
    loaded = load_or_train_judge(16, spec, tmp_path, torch.device("cpu")).state_dict()
    assert all(torch.equal(first[k], cached[k]) and torch.equal(first[k], loaded[k]) for k in first)
    load_or_train_judge(16, JudgeSpec(train_scenes=100, steps=4), tmp_path, torch.device("cpu"))
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_shapes_alignment_of_true_renders_is_perfect_and_of_noise_near_chance(
        judge_cache: Path, tmp_path: Path) -> None:
    entry = load_plugins().registry.get("metric", "shapes-alignment")
    metric = entry.factory(entry.options(seed=3, cache_dir=str(judge_cache)), MetricContext())
    perfect = metric.evaluate(ShapesSource(60, 3, tmp_path), n=60)
    keys = {f"{s}/{a}" for s in ("test", "holdout", "real_test") for a in (*shapes.ATTRIBUTES, "all")}
    keys |= {f"{s}/{a}" for s in ("test", "holdout") for a in (*shapes.ATTRIBUTES, "all", "swapped")}
    keys |= {f"{s}/{a}/unseen_wording" for s in ("test", "holdout") for a in (*shapes.ATTRIBUTES, "all", "swapped")}
    assert set(perfect) == keys
    swapped = {k for k in keys if "/swapped" in k}
    assert min(v for k, v in perfect.items() if k not in swapped) >= 0.98, perfect
    assert max(perfect[k] for k in swapped) <= 0.02, perfect
    noise = metric.evaluate(ShapesSource(60, 3, tmp_path, noise=True), n=60)
    for split in ("test", "holdout"):
        for suffix in ("", "/unseen_wording"):
            assert noise[f"{split}/all{suffix}"] <= 0.05
            assert noise[f"{split}/color{suffix}"] <= 0.35 and noise[f"{split}/background{suffix}"] <= 0.35
            assert noise[f"{split}/shape{suffix}"] <= 0.6
    assert noise["real_test/all"] >= 0.98  # the judge itself is still right about real images


class SwappedColoursSource(ShapesSource):
    """Draws each captioned scene with its shape and background colours exchanged."""

    def generate(self, captions: list[str], seed: int = 0) -> list[Tensor]:
        scenes = [self.scene_of[c] for c in captions]
        swapped = [attrs.evolve(s, color=s.background, background=s.color) for s in scenes]
        full = render_scenes(swapped, SHAPES_RES[-1])
        return [torch.nn.functional.avg_pool2d(full, 2), full]


def test_shapes_alignment_counts_pictures_whose_colours_came_in_each_others_roles(
        judge_cache: Path, tmp_path: Path) -> None:
    metric = ShapesAlignment(ShapesAlignmentOptions(seed=3, cache_dir=str(judge_cache)), "cpu")
    result = metric.evaluate(SwappedColoursSource(60, 3, tmp_path), n=60)
    for split in ("test", "holdout"):
        for suffix in ("", "/unseen_wording"):
            assert result[f"{split}/swapped{suffix}"] >= 0.98, result
            assert result[f"{split}/color{suffix}"] <= 0.02 and result[f"{split}/background{suffix}"] <= 0.02
            assert result[f"{split}/shape{suffix}"] >= 0.98


class SeenWordingsOnlySource(ShapesSource):
    """Draws the scene of a seen wording, and a blank picture for a caption in a held-out sentence shape."""

    def generate(self, captions: list[str], seed: int = 0) -> list[Tensor]:
        seen = {caption for split in SPLITS for _, caption in evaluation_scenes(60, 3, split, "seen")}
        if all(c in seen for c in captions):
            return super().generate(captions, seed)
        assert not any(c in seen for c in captions), "a batch mixes seen and unseen wordings"
        return [torch.full((len(captions), 3, r, r), -1.0) for r in SHAPES_RES]


def test_shapes_alignment_reports_unseen_wordings_apart(judge_cache: Path, tmp_path: Path) -> None:
    metric = ShapesAlignment(ShapesAlignmentOptions(seed=3, cache_dir=str(judge_cache)), "cpu")
    result = metric.evaluate(SeenWordingsOnlySource(60, 3, tmp_path), n=60)
    for split in ("test", "holdout"):
        assert result[f"{split}/all"] >= 0.98 and result[f"{split}/background"] >= 0.98
        assert result[f"{split}/all/unseen_wording"] <= 0.05
        assert result[f"{split}/background/unseen_wording"] <= 0.3
    seen_only = ShapesAlignment(ShapesAlignmentOptions(seed=3, cache_dir=str(judge_cache), unseen_wording=False),
                                "cpu").evaluate(SeenWordingsOnlySource(60, 3, tmp_path), n=60)
    assert not [k for k in seen_only if "unseen" in k] and seen_only["test/all"] == result["test/all"]


def test_shapes_alignment_refuses_other_datasets(judge_cache: Path) -> None:
    metric = ShapesAlignment(ShapesAlignmentOptions(cache_dir=str(judge_cache)), "cpu")
    with pytest.raises(UserError, match="shapes"):
        metric.evaluate(FakeSource(FakeDataset(4)), n=4)


# ----------------------------------------------------------------------------- r-precision
COLOUR_WORDS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0),
                "white": (1.0, 1.0, 1.0), "black": (-1.0, -1.0, -1.0), "yellow": (1.0, 1.0, -1.0)}


class ColourPatches(FakeDataset):
    """Flat 8x8 pictures of one colour each, captioned with its name."""

    def __init__(self, per_colour: int = 4) -> None:
        self.items = [{"images": [torch.tensor(rgb).view(3, 1, 1).expand(3, 8, 8).clone()],
                       "caption": f"a {name} picture", "class_id": -1, "index": i}
                      for i, (name, rgb) in enumerate(list(COLOUR_WORDS.items()) * per_colour)]


class PatchSource(FakeSource):
    def __init__(self, dataset: ColourPatches, noise: bool = False) -> None:
        self.data = dataset
        self.noise = noise
        self.by_caption = {it["caption"]: it["images"] for it in dataset.items}

    def generate(self, captions: list[str], seed: int = 0) -> list[Tensor]:
        if self.noise:
            return [torch.rand(len(captions), 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1]
        return [torch.stack([self.by_caption[c][0] for c in captions])]


def test_r_precision_with_a_pretrained_encoder_pair(tmp_path: Path) -> None:
    data = ColourPatches()
    checkpoint = tmp_path / "encoder.pt"
    torch.manual_seed(0)
    pretrain_and_save(BagOfWordsEncoder(BowOptions(dim=8, max_vocab=20)), data, checkpoint,
                      PretrainOptions(steps=150, batch_size=12, lr=1e-2, image_encoder_width=4, eval_examples=24))
    entry = load_plugins().registry.get("metric", "r-precision")
    metric = entry.factory(entry.options(encoder_checkpoint=str(checkpoint), text_encoder="bow", batch_size=10),
                           metric_context())
    faithful = metric.evaluate(PatchSource(data), n=24)
    assert faithful["r_precision"] == faithful["real_r_precision"] >= 0.9
    assert metric.evaluate(PatchSource(data, noise=True), n=24)["r_precision"] <= 0.6
    with pytest.raises(UserError) as err:
        entry.factory(entry.options(encoder_checkpoint=str(tmp_path / "none.pt")), MetricContext())
    assert err.value.path == "encoder_checkpoint"


# ---------------------------------------------------------- closed forms, every caption
def test_frechet_distance_of_non_commuting_2x2_gaussians_matches_the_closed_form() -> None:
    # for 2x2 PSD A, B: tr sqrt(AB) = sqrt(tr(AB) + 2 sqrt(det A det B)), since AB has eigenvalues
    # l1, l2 >= 0 with l1 + l2 = tr(AB) and l1 l2 = det(A) det(B)
    a = np.array([[2.0, 0.6], [0.6, 1.0]])
    b = np.array([[1.0, -0.4], [-0.4, 3.0]])
    mu1, mu2 = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    tr_sqrt = math.sqrt(np.trace(a @ b) + 2 * math.sqrt(np.linalg.det(a) * np.linalg.det(b)))
    expected = 1.5 ** 2 + 2.0 ** 2 + np.trace(a) + np.trace(b) - 2 * tr_sqrt
    assert not np.allclose(a @ b, b @ a)  # the covariances do not share eigenvectors
    assert frechet_distance(mu1, a, mu2, b) == pytest.approx(expected, rel=1e-12)


def test_inception_score_of_two_confident_halves_matches_the_hand_computation() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64).repeat(3, 1)  # marginal (0.5, 0.5)
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    mean, std = inception_score(probs, splits=3)
    assert mean == pytest.approx(math.exp(kl), rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def _captioned(n: int, captions: int, embeddings: bool) -> CaptionImageDataset:
    images = [np.full((8, 8, 3), 10 * i, dtype=np.uint8) for i in range(n)]
    texts = [[f"image {i} caption {j}" for j in range(captions)] for i in range(n)]
    emb = np.arange(n * captions * 2, dtype=np.float32).reshape(n, captions, 2) if embeddings else None
    return CaptionImageDataset(images=images, captions=texts, class_ids=[-1] * n, resolutions=(8,), train=False,
                               embeddings=emb, embeddings_per_sample=2)


def test_captions_all_scores_every_caption_of_every_example_once() -> None:
    data = _captioned(3, 2, embeddings=True)
    items = [it for _, batch in item_batches(data, 7, 4, "test", "all") for it in batch]
    assert [it["caption"] for it in items] == [
        "image 0 caption 0", "image 1 caption 0", "image 2 caption 0",
        "image 0 caption 1", "image 1 caption 1", "image 2 caption 1", "image 0 caption 0"]
    assert [it["index"] for it in items] == [0, 1, 2, 0, 1, 2, 0]
    assert items[4]["embedding"].tolist() == [6.0, 7.0]  # caption 1 of image 1: its own embedding
    first = [it for _, batch in item_batches(data, 4, 4, "test", "first") for it in batch]
    assert [it["caption"] for it in first] == ["image 0 caption 0", "image 1 caption 0", "image 2 caption 0",
                                               "image 0 caption 0"]
    assert first[1]["embedding"].tolist() == [5.0, 6.0]  # the split's item: embeddings 0 and 1 averaged
    single = [it for _, batch in item_batches(data, 4, 4, "test", "single") for it in batch]
    assert [it["caption"] for it in single] == [it["caption"] for it in first]
    assert single[1]["embedding"].tolist() == [4.0, 5.0]  # caption 0's own embedding
    with pytest.raises(UserError, match="caption_item") as err:
        next(item_batches(FakeDataset(3), 3, 3, "test", "all"))
    assert err.value.path == "captions"


def test_fid_with_every_caption_generates_from_each_and_counts_each_real_image_once(weights: Path,
                                                                                    tmp_path: Path) -> None:
    data = _captioned(3, 2, embeddings=False)
    asked: list[str] = []

    class Source:
        def generate(self, captions: list[str], seed: int = 0) -> list[Tensor]:
            asked.extend(captions)
            return [torch.stack([data[int(c.split()[1])]["images"][0] for c in captions])]

        def dataset(self, split: str) -> CaptionImageDataset:
            return data

    backbone = TinyBackbone()
    opts = FidOptions(weights=str(weights), captions="all", batch_size=4, cache_dir=str(tmp_path))
    result = FrechetInceptionDistance(opts, "cpu", load_backbone=tiny_loader(backbone)).evaluate(Source(), n=6)
    assert sorted(asked) == sorted(c for i in range(3) for c in (f"image {i} caption 0", f"image {i} caption 1"))
    assert len(backbone.sizes) == 1 + 2  # the 3 real images once (in the first batch), 2 generated batches
    real = torch.stack([data[i]["images"][0] for i in range(3)])
    with torch.no_grad():
        real_f = backbone(real)[1].double().numpy()
        fake_f = backbone(torch.cat([real, real]))[1].double().numpy()  # each caption draws its own image here
    expected = frechet_distance(fake_f.mean(0), np.cov(fake_f, rowvar=False), real_f.mean(0),
                                np.cov(real_f, rowvar=False))
    assert result["fid"] == pytest.approx(expected, rel=1e-6) and result["network"] == "torchvision"


def test_evaluation_remembers_the_embedding_of_each_caption_it_reads() -> None:
    from ganstack.evaluate.scoring import _RecordingDataset  # how eval generates from stored embeddings

    seen: dict[str, Tensor] = {}
    view = _RecordingDataset(_captioned(2, 3, embeddings=True), seen)
    view.caption_item(1, 2)
    view[0]
    assert seen["image 1 caption 2"].tolist() == [10.0, 11.0]
    assert seen["image 0 caption 0"].tolist() == [1.0, 2.0]  # a plain read averages embeddings_per_sample (2)


def test_pytorch_fids_file_under_another_network_is_noted(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ganstack_defaults.metrics import inception

    data = FakeDataset(4)
    metric = FrechetInceptionDistance(FidOptions(weights=str(weights), cache_dir=str(weights.parent / "c")), "cpu",
                                      load_backbone=tiny_loader(TinyBackbone()))
    assert "note" not in metric.evaluate(FakeSource(data), n=4)  # a torchvision file under torchvision
    monkeypatch.setattr(inception, "PUBLISHED_FID_SHA256_PREFIX", metric.weights_sha256[:8])  # as if released
    assert "set network: pytorch-fid" in metric.evaluate(FakeSource(data), n=4)["note"]


def test_frechet_distance_of_nearly_constant_features_is_finite_and_exact() -> None:
    """Features that barely vary (random weights, one repeated image) give covariances of ~1e-17, where
    LAPACK's eigh can fail to converge; the distance is then still the closed form."""
    rng = np.random.default_rng(0)
    a = 1e-9 * rng.standard_normal((40, 256))
    s1 = np.cov(a, rowvar=False)
    mu1, mu2 = np.zeros(256), np.full(256, 0.5)
    assert frechet_distance(mu1, s1, mu2, s1) == pytest.approx(256 * 0.25, rel=1e-9)
    assert frechet_distance(mu1, np.zeros((256, 256)), mu1, np.zeros((256, 256))) == 0.0
