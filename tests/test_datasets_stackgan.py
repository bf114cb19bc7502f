"""StackGAN's preprocessed layouts, rebuilt in miniature: crops, pairing, errors, cache."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_safe_pickle import py2_pickle
from torch.utils.data import DataLoader

from ganstack.components.loader import registry
from ganstack.errors import DataError
from ganstack.interfaces import CaptionDataset, DataContext
from ganstack_defaults.data import cache as data_cache
from ganstack_defaults.data.transforms import box_crop, load_size

GREEN, BLUE, RED = (0, 200, 0), (0, 0, 200), (200, 0, 0)
KEYS = ["001.Albatross/Albatross_0001", "001.Albatross/Albatross_0002", "002.Auklet/Auklet_0003",
        "002.Auklet/Auklet_0004", "003.Blackbird/Blackbird_0005"]
CLASSES = [1, 1, 2, 2, 3]
# Box (x, y, w, h) whose StackGAN crop is exactly [96, 160) x [16, 80): half = int(43 * 0.75) = 32,
# centre = (int(107 + 21.5), int(38 + 10)) = (128, 48).
BOX = (107.0, 38.0, 43.0, 20.0)
WINDOW = (96, 16, 160, 80)
# CUB part locations (part id: x, y, visible) of every bird, in original pixels; the other parts
# have CUB's row for an invisible part (0 0 0).
PARTS = {7: (128.0, 48.0, 1), 11: (140.0, 30.0, 1), 2: (97.0, 79.0, 1), 14: (20.0, 100.0, 1), 8: (0.0, 0.0, 0)}


def _bird(path: Path, shade: int) -> None:
    """224x128 red image; inside the crop window the left half is green, the right half blue."""
    pixels = np.zeros((128, 224, 3), dtype=np.uint8)
    pixels[:] = RED
    left, top, right, bottom = WINDOW
    pixels[top:bottom, left:(left + right) // 2] = GREEN
    pixels[top:bottom, (left + right) // 2:right] = BLUE
    pixels[top:bottom, left:right, 0] = shade  # tells the birds apart, a little
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, subsampling=0)


def _embeddings(n: int) -> np.ndarray:
    """Embedding j of example i: one-hot j in the first 10 dims, i in the last."""
    emb = np.zeros((n, 10, 11), dtype=np.float32)
    for i in range(n):
        emb[i, :, :10] = np.eye(10)
        emb[i, :, 10] = i
    return emb


def _part_rows(image_id: int) -> list[str]:
    """CUB's part_locs.txt rows of one image: all 15 parts, as CUB writes them."""
    return [f"{image_id} {part} {' '.join(str(v) for v in PARTS.get(part, (0.0, 0.0, 0)))}" for part in range(1, 16)]


def _layout(root: Path, split: str = "train", paint=None, parts: bool = True) -> Path:  # noqa: ANN001
    """A miniature StackGAN birds layout: pickles, captions, CUB's images.txt, bounding_boxes.txt and
    (``parts``) parts/part_locs.txt; ``paint(path, shade)`` draws each image (default :func:`_bird`)."""
    (root / split).mkdir(parents=True)
    (root / split / "filenames.pickle").write_bytes(py2_pickle(KEYS))
    (root / split / "char-CNN-RNN-embeddings.pickle").write_bytes(py2_pickle(_embeddings(len(KEYS))))
    (root / split / "class_info.pickle").write_bytes(py2_pickle(CLASSES))
    cub = root / "CUB_200_2011"
    lines_images, lines_boxes, lines_parts = [], [], []
    for n, key in enumerate(KEYS, 1):
        (paint or _bird)(cub / "images" / f"{key}.jpg", shade=8 * n)
        lines_parts += _part_rows(n)
        text = root / "text" / f"{key}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("".join(f"{key} caption {j}\n" for j in range(10)))
        lines_images.append(f"{n} {key}.jpg")
        lines_boxes.append(f"{n} {' '.join(str(v) for v in BOX)}")
    (cub / "images.txt").write_text("\n".join(lines_images) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(lines_boxes) + "\n")
    if parts:
        (cub / "parts").mkdir()
        (cub / "parts" / "part_locs.txt").write_text("\n".join(lines_parts) + "\n")
    return root


@pytest.fixture
def birds(tmp_path: Path) -> Path:
    return _layout(tmp_path / "birds")


def _build(root: Path, split: str = "train", name: str = "stackgan-birds", resolutions: tuple[int, ...] = (16, 32),
           want_wrong: bool = False, recipe_dir: Path | None = None, **options: object) -> CaptionDataset:
    entry = registry().get("dataset", name)
    ctx = DataContext(split=split, resolutions=resolutions, cache_dir=root.parent / "cache", seed=1,
                      want_wrong=want_wrong, recipe_dir=recipe_dir)
    return entry.factory(entry.options(root=str(root), **options), ctx)


def _uint8(t: torch.Tensor) -> np.ndarray:
    return ((t + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy().astype(int)


def test_box_crop_rule() -> None:
    assert box_crop(224, 128, BOX) == WINDOW
    assert box_crop(100, 80, (0, 0, 20, 10)) == (0, 0, 25, 20)  # clamped at the top left
    assert box_crop(100, 80, (90, 70, 10, 10)) == (88, 68, 100, 80)  # and at the bottom right
    assert [load_size(r) for r in (64, 128, 256)] == [76, 152, 304]


def test_test_split_is_the_centre_of_the_box_crop(birds: Path) -> None:
    (birds / "test").symlink_to(birds / "train", target_is_directory=True)
    data = _build(birds, split="test")
    assert isinstance(data, CaptionDataset) and len(data) == 5 and data.embedding_dim == 11
    # 64x64 crop -> 38x38 stored (load size of 32) -> centre 32x32 crop: green | blue, no red
    assert data.images[0].shape == (38, 38, 3)
    item = data[0]
    small, big = (_uint8(t) for t in item["images"])
    assert big.shape == (32, 32, 3) and small.shape == (16, 16, 3)
    for image in (big, small):
        w = image.shape[1]
        assert (np.abs(image[:, : w // 2 - 2, 1:] - GREEN[1:]) < 12).all()
        assert (np.abs(image[:, w // 2 + 2:, 1:] - BLUE[1:]) < 12).all()
        assert image[..., 0].max() < 40  # nothing from outside the window
    assert torch.equal(data[0]["images"][0], item["images"][0])  # the test split is fixed
    assert item["caption"] == f"{KEYS[0]} caption 0"
    assert torch.equal(item["embedding"], torch.tensor([1.0] + [0.0] * 9 + [0.0]))


def test_training_stages_share_one_crop_and_flip(birds: Path) -> None:
    data = _build(birds)
    flips = set()
    for epoch in range(30):  # each pass over the data draws its own crop and flip
        data.set_epoch(epoch)
        small, big = (_uint8(t) for t in data[2]["images"])
        left_is_green = [bool(img[:, : img.shape[1] // 4, 1].mean() > img[:, : img.shape[1] // 4, 2].mean())
                         for img in (big, small)]
        assert left_is_green[0] == left_is_green[1]
        flips.add(left_is_green[0])
    assert flips == {True, False}
    data.set_epoch(5)
    torch.manual_seed(5)
    first = data[1]
    torch.manual_seed(6)  # nor the global generator: (seed, epoch, index) alone (exact resume with workers)
    again = data[1]
    assert all(torch.equal(a, b) for a, b in zip(first["images"], again["images"], strict=True))
    assert first["caption"] == again["caption"]


@pytest.mark.parametrize("per_sample", [1, 4])
def test_caption_and_embedding_are_paired(birds: Path, per_sample: int) -> None:
    data = _build(birds, embeddings_per_sample=per_sample)
    seen = set()
    for epoch in range(20):
        data.set_epoch(epoch)
        item = data[3]
        j = int(item["caption"].rsplit(" ", 1)[1])
        seen.add(j)
        hot = item["embedding"][:10]
        assert item["caption"].startswith(KEYS[3]) and item["embedding"][10] == 3
        assert hot[j] == pytest.approx(1 / per_sample)
        assert int((hot > 0).sum()) == per_sample and hot.sum() == pytest.approx(1.0)
    assert len(seen) > 3


def test_class_ids_and_wrong_images(birds: Path) -> None:
    (birds / "test").symlink_to(birds / "train", target_is_directory=True)
    data = _build(birds, split="test", want_wrong=True)
    own = [data[i]["images"][0] for i in range(len(data))]
    for i in range(len(data)):
        item = data[i]
        assert item["class_id"] == CLASSES[i]
        match = [j for j, image in enumerate(own) if torch.equal(image, item["wrong_images"][0])]
        assert len(match) == 1 and CLASSES[match[0]] != CLASSES[i]
    (birds / "train" / "class_info.pickle").unlink()  # then each key's folder is its class
    assert [_build(birds)[i]["class_id"] for i in range(5)] == [0, 0, 1, 1, 2]


def test_loader_batches_and_dataset_pickles_small(birds: Path) -> None:
    data = _build(birds, want_wrong=True)
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert [tuple(t.shape) for t in batch["images"]] == [(4, 3, 16, 16), (4, 3, 32, 32)]
    assert batch["embedding"].shape == (4, 11) and len(batch["caption"]) == 4
    assert batch["wrong_images"][1].shape == (4, 3, 32, 32)
    assert all(-1 <= float(t.min()) and float(t.max()) <= 1 for t in batch["images"])
    data[0]  # maps the cache
    assert len(pickle.dumps(data)) < 20_000  # workers get the path, not the pixels


def test_decoded_images_are_cached_once(birds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _build(birds)
    cache = birds.parent / "cache"
    assert len(list(cache.glob("stackgan-birds-train-38-*.index.npy"))) == 1
    assert not list(cache.glob(".*.tmp"))

    def fail(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_cache, "_build", fail)
    assert len(_build(birds, flip=False, embeddings_per_sample=2)) == 5  # same images, cache reused
    _bird(birds / "CUB_200_2011" / "images" / f"{KEYS[0]}.jpg", shade=99)  # a changed file is a new cache
    with pytest.raises(AssertionError, match="decoded again"):
        _build(birds)


@pytest.mark.parametrize(("remove", "named"), [
    ("train/filenames.pickle", "train/filenames.pickle"),
    ("train/char-CNN-RNN-embeddings.pickle", "train/char-CNN-RNN-embeddings.pickle"),
    (f"text/{KEYS[2]}.txt", f"text/{KEYS[2]}.txt"),
    (f"CUB_200_2011/images/{KEYS[4]}.jpg", f"images/{KEYS[4]}.jpg"),
    ("CUB_200_2011/bounding_boxes.txt", "CUB_200_2011/bounding_boxes.txt"),
    ("train", "train"),
])
def test_incomplete_layout_names_the_missing_file(birds: Path, remove: str, named: str) -> None:
    target = birds / remove
    if target.is_dir():
        target.rename(birds / "elsewhere")
    else:
        target.unlink()
    with pytest.raises(DataError) as info:
        _build(birds)
    assert named in str(info.value) and "Fix:" in str(info.value)


def test_captions_fall_back_to_the_download_folder_text_c10(birds: Path) -> None:
    (birds / "text").rename(birds / "text_c10")
    data = _build(birds)
    assert len(data) == 5 and data[2]["caption"].startswith(f"{KEYS[2]} caption")
    with pytest.raises(DataError) as info:  # an explicit text_dir is taken at its word
        _build(birds, text_dir="captions")
    assert "no caption folder 'captions'" in str(info.value) and "text_c10" not in str(info.value)


def test_missing_caption_folder_is_named(birds: Path) -> None:
    (birds / "text").rename(birds / "elsewhere")
    with pytest.raises(DataError) as info:
        _build(birds)
    message = str(info.value)
    assert message.startswith(f"{birds / 'text'}: no caption folder 'text'") and "nor 'text_c10'" in message
    assert "`text_dir`" in message


def test_missing_root_and_relative_roots(birds: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="docs/datasets.md") as info:
        _build(tmp_path / "nowhere")
    assert "nowhere" in str(info.value) and "`root`" in str(info.value)
    assert len(_build(Path("birds"), recipe_dir=tmp_path)) == 5  # relative to the recipe's folder


def test_corrupt_image_is_reported_then_skipped_when_asked(birds: Path) -> None:
    bad = birds / "CUB_200_2011" / "images" / f"{KEYS[1]}.jpg"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated: header fine, data not
    with pytest.raises(DataError, match="skip_corrupt") as info:
        _build(birds)
    assert str(bad) in str(info.value)
    data = _build(birds, skip_corrupt=True)
    assert len(data) == 4 and len(data.skipped) == 1 and str(bad) in data.skipped[0]
    assert [data[i]["caption"].split(" ")[0] for i in range(4)] == [KEYS[0], KEYS[2], KEYS[3], KEYS[4]]
    assert data[1]["embedding"][10] == 2 and data[1]["class_id"] == 2


def test_refused_pickle_in_a_layout(birds: Path) -> None:
    (birds / "train" / "class_info.pickle").write_bytes(pickle.dumps(print))
    with pytest.raises(DataError, match="refused") as info:
        _build(birds)
    assert "class_info.pickle" in str(info.value)


def test_flowers_layout_without_boxes_finds_files_by_name(tmp_path: Path) -> None:
    root = tmp_path / "flowers"
    keys = ["jpg/image_00001", "jpg/image_00002"]
    (root / "train").mkdir(parents=True)
    (root / "train" / "filenames.pickle").write_bytes(py2_pickle(keys))
    (root / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(py2_pickle(_embeddings(2)))
    for n, image in enumerate([root / "jpg" / "image_00001.jpg", root / "jpg" / "more" / "image_00002.jpg"], 1):
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (60, 40), (10 * n, 100, 200)).save(image)
        text = root / "text_c10" / f"class_{n:05d}" / f"image_{n:05d}.txt"  # as the download unpacks
        text.parent.mkdir(parents=True)
        text.write_text(f"flower {n}\n")
    data = _build(root, name="stackgan-flowers", resolutions=(16,))
    assert data.images[0].shape == (19, 28, 3)  # shorter side to 19, aspect kept, no box crop
    assert data[1]["caption"] == "flower 2" and data[0]["class_id"] == 0  # the key's folder 'jpg'
    assert registry().get("dataset", "stackgan-flowers").options().crop_boxes is False
    assert registry().get("dataset", "stackgan-birds").options().root == "Data/birds"


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("char-CNN-RNN-embeddings.pickle", [["a", "b"]] * 5, "numeric array of caption embeddings"),
        ("char-CNN-RNN-embeddings.pickle", {"emb": 1}, "found a dict"),
        ("char-CNN-RNN-embeddings.pickle", np.full((5, 10, 11), np.nan, dtype=np.float32), "NaN or infinite"),
        ("class_info.pickle", {"a": 1}, "integer class ids"),
        ("class_info.pickle", ["one", "two", "three", "four", "five"], "found a list of str"),
        ("class_info.pickle", [1.5, 1, 2, 2, 3], "integer class ids"),
        ("filenames.pickle", [1, 2, 3, 4, 5], "list of file keys (strings), found a list of int"),
        ("filenames.pickle", {"keys": KEYS}, "found a dict"),
        ("filenames.pickle", ["../../../etc/passwd", *KEYS[1:]], "key 1 ('../../../etc/passwd') leads outside the dataset folder"),
        ("filenames.pickle", ["/etc/passwd", *KEYS[1:]], "leads outside"),
        ("filenames.pickle", [*KEYS[:4], "bird\x00.jpg"], "key 5 ('bird\\x00.jpg') holds a control character"),
    ],
)
def test_pickles_of_the_wrong_content_are_named(birds: Path, file: str, content: object, expected: str) -> None:
    (birds / "train" / file).write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError) as info:
        _build(birds)
    message = str(info.value)
    assert expected in message and file in message and "Fix:" in message


def test_class_ids_stored_as_whole_floats_are_accepted(birds: Path) -> None:
    (birds / "train" / "class_info.pickle").write_bytes(pickle.dumps(np.array(CLASSES, dtype=np.float64)))
    assert [int(c) for c in _build(birds).class_ids] == CLASSES


def test_text_files_not_in_utf8_are_named(birds: Path) -> None:
    caption = birds / "text" / f"{KEYS[2]}.txt"
    caption.write_bytes("un oiseau très petit\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text: line 1") as info:
        _build(birds)
    assert str(caption) in str(info.value)
    caption.write_text("fine\n")
    table = birds / "CUB_200_2011" / "bounding_boxes.txt"
    table.write_bytes(table.read_bytes() + "6 1 2 3 4 é\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text: line 6") as info:
        _build(birds)
    assert str(table) in str(info.value)
