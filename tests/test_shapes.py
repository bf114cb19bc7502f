"""The shapes spec, measured in rendered pixels, and the ``shapes`` dataset plugin built on it."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from ganstack.components.loader import registry
from ganstack.errors import DataError
from ganstack.interfaces import CaptionDataset, DataContext
from ganstack_defaults.shapes import dataset as data_shapes
from ganstack_defaults.shapes import grammar
from ganstack_defaults.shapes import scenes as shapes
from ganstack_defaults.shapes.scenes import HELDOUT_PAIRS, PALETTE, Scene


def _mask(image: np.ndarray, background: str) -> np.ndarray:
    """Pixels that differ from the flat background."""
    return (image.astype(int) != np.array(PALETTE[background])).any(axis=2)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def test_palette_colours_at_known_pixels() -> None:
    image = shapes.render(Scene("square", "orange", "purple", "small", "top left"), 100)
    assert tuple(image[25, 25]) == PALETTE["orange"] == (245, 140, 40)  # centre of the top-left square
    assert tuple(image[99, 99]) == tuple(image[0, 99]) == PALETTE["purple"] == (140, 70, 190)
    assert set(PALETTE) == {"red", "green", "blue", "yellow", "purple", "orange", "white", "black"}
    assert PALETTE["red"] == (220, 50, 50) and PALETTE["black"] == (25, 25, 25)


@pytest.mark.parametrize("shape", shapes.SHAPES)
@pytest.mark.parametrize(("size", "position", "dx", "dy"), [
    ("small", "top left", 0.04, -0.04), ("small", "bottom right", -0.03, 0.02),
    ("small", "center", 0.0, 0.0), ("large", "center", -0.04, 0.04)])
def test_shape_size_and_position_in_pixels(shape: str, size: str, position: str, dx: float, dy: float) -> None:
    side = 200
    image = shapes.render(Scene(shape, "white", "black", size, position, dx, dy), side)
    top, bottom, left, right = _bbox(_mask(image, "black"))
    fraction = {"small": 0.4, "large": 0.7}[size]
    height = fraction * (math.sqrt(3) / 2 if shape == "triangle" else 1)
    assert abs((right - left) / side - fraction) <= 2 / side
    assert abs((bottom - top) / side - height) <= 2 / side
    cx, cy = shapes.POSITION_CENTRE[position]
    assert abs((left + right) / 2 / side - (cx + dx)) <= 1 / side
    assert abs((top + bottom) / 2 / side - (cy + dy)) <= 1 / side


def test_triangle_points_up_and_edges_are_antialiased() -> None:
    image = shapes.render(Scene("triangle", "red", "blue", "large", "center"), 128)
    mask = _mask(image, "blue")
    top, bottom, _, _ = _bbox(mask)
    widths = mask.sum(axis=1)
    assert widths[top + 2] < widths[(top + bottom) // 2] < widths[bottom - 2]
    assert tuple(image[bottom - 3, 64]) == PALETTE["red"]
    blends = {tuple(p) for p in image.reshape(-1, 3)} - {PALETTE["red"], PALETTE["blue"]}
    assert len(blends) > 3  # edge pixels mix the two colours


def test_smaller_stages_are_area_averages_of_one_render() -> None:
    scene = Scene("circle", "green", "yellow", "small", "bottom left", 0.01, 0.02)
    big, small, odd = shapes.render_stages(scene, [64, 16, 24])
    assert big.shape == (64, 64, 3) and small.shape == (16, 16, 3) and odd.shape == (24, 24, 3)
    expected = np.floor(big.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(small, expected)
    np.testing.assert_array_equal(big, shapes.render(scene, 64))
    assert abs(odd.astype(float).mean() - big.astype(float).mean()) < 1.0


def test_scenes_are_deterministic_prefix_stable_and_pinned() -> None:
    scenes = shapes.make_scenes(50, 7, "train")
    assert scenes == shapes.make_scenes(50, 7, "train")
    assert scenes[:10] == shapes.make_scenes(10, 7, "train")
    assert scenes != shapes.make_scenes(50, 8, "train")
    assert all(abs(s.dx) <= shapes.JITTER and abs(s.dy) <= shapes.JITTER for s in scenes)
    assert all(s.position == "center" for s in scenes if s.size == "large")
    assert {s.position for s in scenes if s.size == "small"} == set(shapes.POSITIONS)
    # Pinned: a change here changes every dataset and metric, and must bump SPEC_VERSION.
    assert shapes.SPEC_VERSION == 2
    first = shapes.make_scenes(1, 0, "train")[0]
    assert first == Scene("circle", "purple", "orange", "small", "bottom left", -0.03461, -0.03715)
    assert hashlib.sha256(shapes.render(first, 32).tobytes()).hexdigest()[:16] == "38eb9f1f0d7aa4b4"


def test_held_out_pairs_only_where_they_belong() -> None:
    pairs = {split: {(s.color, s.background) for s in shapes.make_scenes(3000, 0, split)} for split in shapes.SPLITS}
    held = set(HELDOUT_PAIRS)
    assert len(held) == 8
    assert not pairs["train"] & held
    assert pairs["holdout"] == held
    assert pairs["test"] & held and pairs["test"] - held
    assert all(c != b for split_pairs in pairs.values() for c, b in split_pairs)
    with pytest.raises(ValueError, match="split"):
        shapes.make_scenes(1, 0, "validation")


# An independent reading of a caption: which colour word is the shape's, which the background's.
_COLOUR = "|".join(shapes.COLORS)
_SHAPE = "|".join(shapes.SHAPES)
_SHAPE_COLOUR = [re.compile(p) for p in (
    rf"\b(?P<c>{_COLOUR}) (?:{_SHAPE})\b",
    rf"\b(?:{_SHAPE}) (?:that is |which is |coloured |colored |is coloured |is (?:(?:small|large) and )?)"
    rf"(?P<c>{_COLOUR})\b",
    rf"\bcolou?r: (?P<c>{_COLOUR})\b",
    rf"\b(?P<c>{_COLOUR}) is the colou?r of the (?:(?:small|large) )?(?:{_SHAPE})\b",
)]
_BACKGROUND_COLOUR = [re.compile(p) for p in (
    rf"\b(?P<c>{_COLOUR}) (?:background|backdrop|picture|image|canvas)\b",
    rf"\b(?:background|backdrop) (?:colou?r )?is (?:plain )?(?P<c>{_COLOUR})\b",
    rf"\b(?:everything else|the rest of the picture) is (?P<c>{_COLOUR})\b",
    rf"\bbackground(?::| of| that is|, which is) (?P<c>{_COLOUR})\b",
    rf"\b(?:on|against) (?P<c>{_COLOUR})\b",
    rf"\bwith (?P<c>{_COLOUR}) behind it\b",
    rf"\b(?P<c>{_COLOUR}) is the colou?r of the background\b",
    rf"^(?P<c>{_COLOUR}), with\b",
)]
_POSITION = re.compile(r"\b(top|bottom)[ -](left|right)\b|\bcenter\b")


def read_caption(text: str) -> dict[str, set[str]]:
    """What a caption says, read with regular expressions written apart from the grammar."""
    low = text.lower()
    return {
        "color": {m.group("c") for p in _SHAPE_COLOUR for m in p.finditer(low)},
        "background": {m.group("c") for p in _BACKGROUND_COLOUR for m in p.finditer(low)},
        "colours": set(re.findall(rf"\b(?:{_COLOUR})\b", low)),
        "shape": set(re.findall(rf"\b(?:{_SHAPE})\b", low)),
        "size": set(re.findall(r"\b(?:small|large)\b", low)),
        "position": {m.group(0).replace("-", " ") for m in _POSITION.finditer(low)},
    }


def skeleton(text: str) -> str:
    """The sentence shape: attribute words replaced by their kind, case and final punctuation dropped."""
    low = re.sub(r"[.!]$", "", text.lower()).replace("-", " ")
    low = re.sub(r"\b(top|bottom) (left|right)\b|\bcenter\b", "POSITION", low)
    low = re.sub(rf"\b(?:{_COLOUR})\b", "COLOUR", low)
    low = re.sub(rf"\b(?:{_SHAPE})\b", "SHAPE", low)
    return re.sub(r"\b(?:small|large)\b", "SIZE", low)


def test_every_caption_reads_back_as_its_scene() -> None:
    for split in shapes.SPLITS:
        for scene in shapes.make_scenes(300, 1, split):
            texts = shapes.captions(scene, 3, split)
            assert len(texts) == 5 == len(set(texts)) and texts == shapes.captions(scene, 3, split)
            for slot, text in enumerate(texts):
                said = read_caption(text)
                assert said["color"] == {scene.color} and said["background"] == {scene.background}, (text, said)
                assert said["colours"] == {scene.color, scene.background}, text
                assert said["shape"] == {scene.shape}, text
                assert said["size"] <= {scene.size} and said["position"] <= {scene.position}, text
                if slot < 2:  # the seen and the unseen wording of the metric name all five
                    assert said["size"] == {scene.size} and said["position"] == {scene.position}, text
                assert not re.search(r"\ba [aeiou]", text.lower()), text


def test_held_out_sentence_shapes_never_occur_in_train_and_use_its_words() -> None:
    train = [t for s in shapes.make_scenes(1500, 0, "train") for t in shapes.captions(s, 0, "train")]
    train_shapes = {skeleton(t) for t in train}
    train_words = {w for t in train for w in re.findall(r"[a-z']+", t.lower())}
    for split in ("test", "holdout"):
        scenes = shapes.make_scenes(300, 0, split)
        unseen = [shapes.caption_for(s, 0, split, "unseen") for s in scenes]
        seen = [shapes.caption_for(s, 0, split, "seen") for s in scenes]
        assert not {skeleton(t) for t in unseen} & train_shapes
        assert {skeleton(t) for t in seen} & train_shapes
        assert {w for t in unseen for w in re.findall(r"[a-z']+", t.lower())} <= train_words
    assert {f.name for f in grammar.UNSEEN_FRAMES} == grammar.HELDOUT_FRAMES
    with pytest.raises(ValueError, match="unseen"):
        shapes.caption_for(shapes.make_scenes(1, 0, "train")[0], 0, "train", "unseen")


def test_the_grammar_has_many_sentence_shapes() -> None:
    train = [t for s in shapes.make_scenes(500, 2, "train") for t in shapes.captions(s, 2, "train")]
    firsts = {re.sub(r"[^a-z ]", "", skeleton(t)).split()[0] for t in train}
    assert len(grammar.SEEN_FRAMES) >= 15 and len(grammar.UNSEEN_FRAMES) >= 8
    assert len({skeleton(t) for t in train}) >= 1000  # the five templates of spec 1 had 10
    assert len(firsts) >= 10  # the sentences do not all start alike
    assert any(t[0].isupper() for t in train) and any(t[0].islower() for t in train)
    assert any(t.endswith(".") for t in train) and any(t[-1].isalpha() for t in train)


PINNED_TRAIN_CAPTION = "an orange background behind a small purple circle in the bottom left"
PINNED_TEST_CAPTIONS = ["at the bottom right there is a small white circle against a red background",
                        "The background, which is red, is behind a small white circle towards the bottom right"]


def test_a_frame_that_must_name_the_position_refuses_to_leave_it_out() -> None:
    frame = next(f for f in grammar.FRAMES if f.name == "background-then-place")
    assert frame.needs() == {"position"}
    attributes = Scene("circle", "red", "blue", "small", "top left").attributes()
    with pytest.raises(ValueError, match="position"):
        grammar.describe(frame, attributes, frozenset({"size"}), grammar.Choices("k"))
    text = grammar.describe(frame, attributes, frozenset({"size", "position"}), grammar.Choices("k"))
    assert read_caption(text)["position"] == {"top left"}
    assert not [f for f in grammar.frames_naming(frozenset(), "any") if f.needs()]
    with pytest.raises(ValueError, match="wording"):
        shapes.caption_for(shapes.make_scenes(1, 0, "test")[0], 0, "test", "novel")
    with pytest.raises(ValueError, match="split"):
        shapes.captions(shapes.make_scenes(1, 0, "test")[0], 0, "validation")


def test_captions_are_pinned() -> None:
    """Pinned: a change here changes every dataset and metric, and must bump SPEC_VERSION."""
    first = shapes.make_scenes(1, 0, "train")[0]
    assert shapes.captions(first, 0, "train") == shapes.captions(first, 0)
    test = shapes.make_scenes(1, 0, "test")[0]
    assert shapes.captions(test, 0, "test")[:2] == PINNED_TEST_CAPTIONS
    assert shapes.captions(first, 0)[0] == PINNED_TRAIN_CAPTION
    assert shapes.captions(first, 1)[0] != PINNED_TRAIN_CAPTION


def test_class_ids_number_shape_and_colour() -> None:
    ids = {(s, c): Scene(s, c, "black" if c != "black" else "white", "small", "center").class_id
           for s in shapes.SHAPES for c in shapes.COLORS}
    assert sorted(ids.values()) == list(range(shapes.NUM_CLASSES)) == list(range(24))


def _ctx(tmp_path: Path, split: str, resolutions: tuple[int, ...] = (8, 16), want_wrong: bool = False) -> DataContext:
    return DataContext(split=split, resolutions=resolutions, cache_dir=tmp_path / "cache", want_wrong=want_wrong)


def _build(tmp_path: Path, split: str, **kwargs: object) -> data_shapes.ShapesDataset:
    entry = registry().get("dataset", "shapes")
    options = entry.options(train_size=40, test_size=12, holdout_size=10, seed=5)
    return entry.factory(options, _ctx(tmp_path, split, **kwargs))


def test_dataset_items_are_the_spec_renders(tmp_path: Path) -> None:
    train = _build(tmp_path, "train")
    assert isinstance(train, CaptionDataset) and len(train) == 40 and train.embedding_dim is None
    assert train.scenes == shapes.make_scenes(40, 5, "train")
    for i in (0, 17, 39):
        item = train[i]
        scene = train.scenes[i]
        assert set(item) == {"images", "caption", "class_id", "index", "box"} and train.fields == {"box"}
        assert item["index"] == i and item["class_id"] == scene.class_id
        assert item["caption"] in shapes.captions(scene, 5, "train")
        for tensor, expected in zip(item["images"], shapes.render_stages(scene, [8, 16]), strict=True):
            assert tensor.dtype == torch.float32 and tensor.shape == (3, expected.shape[0], expected.shape[0])
            back = ((tensor + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(back, expected)
    test = _build(tmp_path, "test")
    assert [test[i]["caption"] for i in range(3)] == [shapes.captions(s, 5, "test")[0] for s in test.scenes[:3]]
    holdout = _build(tmp_path, "holdout")
    assert len(holdout) == 10 and all((s.color, s.background) in HELDOUT_PAIRS for s in holdout.scenes)


def test_dataset_wrong_images_show_another_class(tmp_path: Path) -> None:
    data = _build(tmp_path, "test", want_wrong=True)
    renders = [data[i]["images"][1] for i in range(len(data))]
    for i in range(len(data)):
        wrong = data[i]["wrong_images"][1]
        match = [j for j, r in enumerate(renders) if torch.equal(r, wrong)]
        assert match and all(data.scenes[j].class_id != data.scenes[i].class_id for j in match)


def test_dataset_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _build(tmp_path, "train", resolutions=(16,))
    files = list((tmp_path / "cache").glob("shapes-v2-train-16-*.npy"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob(".*tmp"))

    rendered: list[Scene] = []
    real_render = shapes.render

    def count(scene: Scene, size: int) -> np.ndarray:
        rendered.append(scene)
        return real_render(scene, size)

    monkeypatch.setattr(shapes, "render", count)
    again = _build(tmp_path, "train", resolutions=(16,))
    assert torch.equal(again[3]["images"][0], first[3]["images"][0])
    assert len(rendered) == 2  # only the damage check's first and last picture, not the whole split again


def test_options_and_splits_are_checked(tmp_path: Path) -> None:
    options_class = registry().get("dataset", "shapes").options
    assert attrs.asdict(options_class()) == {"train_size": 10000, "test_size": 1000, "holdout_size": 1000,
                                             "seed": 0, "split": None}
    with pytest.raises(ValueError, match="train_size"):
        options_class(train_size=0)
    with pytest.raises(DataError, match="validation"):
        data_shapes.build_shapes(options_class(train_size=4), _ctx(tmp_path, "validation"))
