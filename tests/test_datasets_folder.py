"""``captioned-folder``: your own images with captions.jsonl or .txt files beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganstack.components.loader import registry
from ganstack.errors import DataError
from ganstack.interfaces import CaptionDataset, DataContext

COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250), (250, 0, 250)]


def _image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _jsonl_folder(root: Path, classes: list[object] | None = None) -> Path:
    lines = []
    for n, colour in enumerate(COLOURS):
        _image(root / "pics" / f"img{n}.png", colour)
        entry: dict[str, object] = {"image": f"pics/img{n}.png", "captions": [f"picture {n} a", f"picture {n} b"]}
        if classes is not None:
            entry["class"] = classes[n]
        lines.append(json.dumps(entry))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n\n")
    return root


def _build(root: Path, split: str = "train", resolutions: tuple[int, ...] = (8, 16), want_wrong: bool = False,
           recipe_dir: Path | None = None, **options: object) -> CaptionDataset:
    entry = registry().get("dataset", "captioned-folder")
    ctx = DataContext(split=split, resolutions=resolutions, cache_dir=root.parent / "cache", seed=2,
                      want_wrong=want_wrong, recipe_dir=recipe_dir)
    return entry.factory(entry.options(root=str(root), **options), ctx)


def _number(caption: str) -> int:
    return int(caption.split(" ")[1])


def test_jsonl_folder_splits_deterministically(tmp_path: Path) -> None:
    root = _jsonl_folder(tmp_path / "mine")
    train, test = _build(root, test_fraction=0.34), _build(root, "test", test_fraction=0.34)
    assert isinstance(train, CaptionDataset) and (len(train), len(test)) == (4, 2)
    train_ids = {_number(c) for c in train.captions()}
    test_ids = {_number(c) for c in test.captions()}
    assert train_ids.isdisjoint(test_ids) and train_ids | test_ids == set(range(6))
    assert test_ids == {_number(c) for c in _build(root, "test", test_fraction=0.34).captions()}
    other_seed = {_number(c) for c in _build(root, "test", test_fraction=0.34, seed=11).captions()}
    assert len(other_seed) == 2
    with pytest.raises(DataError, match="'test' split is empty"):
        _build(root, "test", test_fraction=0.0)


def test_items_have_stage_images_of_their_own_picture(tmp_path: Path) -> None:
    data = _build(_jsonl_folder(tmp_path / "mine"), test_fraction=0.0)
    torch.manual_seed(0)
    for i in range(len(data)):
        item = data[i]
        assert set(item) == {"images", "caption", "class_id", "index"} and item["index"] == i
        n = _number(item["caption"])
        assert item["caption"] in (f"picture {n} a", f"picture {n} b") and item["class_id"] == -1
        assert [tuple(t.shape) for t in item["images"]] == [(3, 8, 8), (3, 16, 16)]
        for t in item["images"]:
            colour = ((t + 1) * 127.5).round().reshape(3, -1).mean(dim=1)
            assert torch.allclose(colour, torch.tensor(COLOURS[n], dtype=torch.float32), atol=2)
    assert data.images[0].shape == (19, 25, 3)  # stored with the shorter side at 16 * 76 / 64
    assert data.embedding_dim is None and len(data.captions()) == 12
    assert len(set(data.sample_captions(4))) == 4


def test_classes_choose_wrong_images(tmp_path: Path) -> None:
    root = _jsonl_folder(tmp_path / "mine", classes=["cat", "dog", "cat", "dog", "owl", "owl"])
    data = _build(root, test_fraction=0.0, want_wrong=True)
    assert [data[i]["class_id"] for i in range(6)] == [0, 1, 0, 1, 2, 2]
    torch.manual_seed(3)
    for i in range(6):
        for _ in range(5):
            wrong = ((data[i]["wrong_images"][1] + 1) * 127.5).reshape(3, -1).mean(dim=1)
            j = min(range(6), key=lambda k: float((wrong - torch.tensor(COLOURS[k], dtype=torch.float32)).abs().sum()))
            assert data[j]["class_id"] != data[i]["class_id"]
    unlabelled = _build(_jsonl_folder(tmp_path / "plain"), test_fraction=0.0, want_wrong=True)
    assert all(not torch.equal(unlabelled[i]["wrong_images"][0], unlabelled[i]["images"][0]) for i in range(6))


def test_txt_beside_each_image(tmp_path: Path) -> None:
    root = tmp_path / "sidecars"
    for n in range(3):
        _image(root / "a" / f"p{n}.jpg", COLOURS[n], (32, 32))
        (root / "a" / f"p{n}.txt").write_text(f"photo {n}\n\nphoto {n} again\n")
    data = _build(root, test_fraction=0.0, resolutions=(16,))
    assert sorted(data.captions()) == sorted(f"photo {n}{s}" for n in range(3) for s in ("", " again"))
    (root / "a" / "p1.txt").unlink()
    with pytest.raises(DataError) as info:
        _build(root, test_fraction=0.0)
    assert "p1.txt" in str(info.value)


@pytest.mark.parametrize(("line", "problem"), [
    ('{"image": "pics/img0.png", "captions": ["x"]', "not JSON"),
    ('{"image": "pics/img0.png"}', "'captions' must be a list"),
    ('{"image": "pics/absent.png", "captions": ["x"]}', "missing image"),
    ('["pics/img0.png"]', "'image' path"),
])
def test_bad_captions_file_lines_are_named(tmp_path: Path, line: str, problem: str) -> None:
    root = _jsonl_folder(tmp_path / "mine")
    with (root / "captions.jsonl").open("a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=problem) as info:
        _build(root)
    message = str(info.value)
    assert "line 8" in message and ("absent.png" in message or "captions.jsonl" in message)


def test_missing_things_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="docs/datasets.md"):
        _build(tmp_path / "nowhere")
    root = _jsonl_folder(tmp_path / "mine")
    with pytest.raises(DataError, match="captions file not found"):
        _build(root, captions="other.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no captioned images"):
        _build(tmp_path / "empty")
    with pytest.raises(DataError, match="'validation'"):
        _build(root, "validation")
    assert len(_build(Path("mine"), recipe_dir=tmp_path, test_fraction=0.0)) == 6


def test_corrupt_image_reported_or_skipped(tmp_path: Path) -> None:
    root = _jsonl_folder(tmp_path / "mine")
    bad = root / "pics" / "img2.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError) as info:
        _build(root, test_fraction=0.0)
    assert str(bad) in str(info.value) and "skip_corrupt" in str(info.value)
    data = _build(root, test_fraction=0.0, skip_corrupt=True)
    assert len(data) == 5 and len(data.skipped) == 1 and str(bad) in data.skipped[0]
    assert 2 not in {_number(c) for c in data.captions()}


def test_options_are_validated() -> None:
    options = registry().get("dataset", "captioned-folder").options
    assert options(root="x").captions == "captions.jsonl" and options(root="x").test_fraction == 0.1
    for bad, field in [({"test_fraction": 1.0}, "test_fraction"), ({"split": "val"}, "split"), ({"root": " "}, "root")]:
        with pytest.raises(ValueError, match=field):
            options(**{"root": "x", **bad})


def test_images_are_cached_per_split_and_rebuilt_when_files_change(tmp_path: Path) -> None:
    root = _jsonl_folder(tmp_path / "mine")
    _build(root, test_fraction=0.0)
    cache = tmp_path / "cache"
    assert len(list(cache.glob("captioned-folder-train-19-*.index.npy"))) == 1
    _build(root, test_fraction=0.0)
    assert len(list(cache.glob("captioned-folder-train-19-*.index.npy"))) == 1
    _image(root / "pics" / "img0.png", (9, 9, 9), (50, 30))
    data = _build(root, test_fraction=0.0)
    assert len(list(cache.glob("captioned-folder-train-19-*.index.npy"))) == 2
    assert np.asarray(data.images[0]).shape == (19, 31, 3)


def test_relative_root_is_found_next_to_the_recipe_and_again_on_resume(cli, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import TINY, write

    project = tmp_path / "project"
    _jsonl_folder(project / "mine")
    shapes = "dataset: {type: shapes, train_size: 48, test_size: 16, holdout_size: 16}"
    assert shapes in TINY.read_text()
    recipe = write(project / "recipe.yaml", TINY.read_text().replace(
        shapes, "dataset: {type: captioned-folder, root: mine, test_fraction: 0.34}"))
    out = tmp_path / "run"
    # The working folder (a fresh one, see conftest) holds no `mine`: the recipe's folder does.
    code, stdout, err = cli("run", recipe, "--out", out, "--max-steps", 2, "--set", "training.batch_size=2")
    assert code == 0, stdout + err
    # Resumed from yet another folder, the run still finds its data where its recipe was.
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli("run", "--resume", out, "--max-steps", 3)
    assert code == 0, stdout + err
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["position"]["step"] == 3


@pytest.mark.parametrize("escape", ["../outside.png", "pics/../../outside.png", "/etc/passwd", "C:\\\\x.png",
                                    "..\\\\outside.png"])
def test_image_paths_must_stay_inside_the_root(tmp_path: Path, escape: str) -> None:
    root = _jsonl_folder(tmp_path / "mine")
    _image(tmp_path / "outside.png", (1, 2, 3))  # exists, so only the rule can refuse it
    lines = (root / "captions.jsonl").read_text().splitlines()
    lines.insert(2, json.dumps({"image": escape.replace("\\\\", "\\"), "captions": ["out"]}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 3: the image path .* leads outside the dataset folder") as info:
        _build(root)
    assert "captions.jsonl" in str(info.value)


def test_image_paths_with_control_characters_are_refused(tmp_path: Path) -> None:
    root = _jsonl_folder(tmp_path / "mine")
    with (root / "captions.jsonl").open("a") as fh:
        fh.write(json.dumps({"image": "pics/img0\u0000.png", "captions": ["x"]}) + "\n")
    with pytest.raises(DataError, match=r"line 8: the image path 'pics/img0\\x00.png' holds a control character"):
        _build(root)


def test_an_escaping_path_is_refused_from_the_cli(cli, tmp_path: Path) -> None:
    from conftest import TINY, write

    root = _jsonl_folder(tmp_path / "mine")
    with (root / "captions.jsonl").open("a") as fh:
        fh.write(json.dumps({"image": "../mine.yaml", "captions": ["x"]}) + "\n")
    recipe = write(tmp_path / "mine.yaml", TINY.read_text().replace(
        "dataset: {type: shapes, train_size: 48, test_size: 16, holdout_size: 16}",
        "dataset: {type: captioned-folder, root: mine}"))
    code, out, err = cli("data", "preview", recipe, "--out", tmp_path / "p")
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in out + err
    assert "captions.jsonl" in message and "line 8: the image path '../mine.yaml' leads outside" in message
    assert "Fix: move the image under `root`" in message
