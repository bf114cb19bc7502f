"""Boxes and keypoints follow the image through crop, resize and flip exactly (#13), in every dataset.

The values are worked out by hand below, from the miniature CUB layout of test_datasets_stackgan:
a 224x128 image whose bird box (x, y, w, h) = (107, 38, 43, 20) gives StackGAN's crop window
[96, 160) x [16, 80) (64 x 64 pixels); with stage resolutions (16, 32) that window is stored at the
load size 38 x 38, a scale of 38/64 = 0.59375 on both axes; an access then crops 32 x 32 from
(left, top), 0..6 each (3, 3 for the test split), and may mirror it. Every number below is a
multiple of 1/2^k, so float arithmetic is exact and the checks are equalities.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_datasets_stackgan import KEYS, WINDOW, _build, _layout
from torch.utils.data import default_collate

from conftest import TINY, write
from ganstack.components.loader import registry
from ganstack.errors import DataError
from ganstack.interfaces import DataContext
from ganstack_defaults.data.locations import CUB_PARTS, mirror_order
from ganstack_defaults.shapes import scenes as shapes

SCALE = 38 / 64  # stored pixels per original pixel
LEFT, TOP = WINDOW[0], WINDOW[1]


def _stored(x: float, y: float) -> tuple[float, float]:
    """Original pixels to stored pixels: subtract the window's corner, scale by 38/64."""
    return (x - LEFT) * SCALE, (y - TOP) * SCALE


# By hand: box corners (107, 38) and (107 + 43, 38 + 20) = (150, 58)
#   -> stored ((107-96)*0.59375, (38-16)*0.59375) = (6.53125, 13.0625) and (32.0625, 24.9375).
# Left eye (part 7) at (128, 48) -> stored (19, 19): the green/blue and dark/bright boundaries of
# the picture below. Right eye (part 11) at (140, 30) -> stored (26.125, 8.3125).
# Beak (part 2) at (97, 79) -> stored (0.59375, 37.40625): inside a crop only from left 0, top 6.
# Tail (part 14) at (20, 100): outside the window, never in the image. Left leg (8): invisible in CUB.
assert _stored(107, 38) == (6.53125, 13.0625) and _stored(150, 58) == (32.0625, 24.9375)
assert _stored(128, 48) == (19.0, 19.0) and _stored(140, 30) == (26.125, 8.3125)
assert _stored(97, 79) == (0.59375, 37.40625)


def _quadrants(path: Path, shade: int) -> None:
    """224x128 grey image; in the crop window: green left of x=128, blue right of it, red channel
    0 above y=48 and 200 below (so a crop's offset and mirror can be read off its pixels)."""
    pixels = np.full((128, 224, 3), 90, dtype=np.uint8)
    left, top, right, bottom = WINDOW
    pixels[top:bottom, left:128] = (0, 200, 0)
    pixels[top:bottom, 128:right] = (0, 0, 200)
    pixels[48:bottom, left:right, 0] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, subsampling=0)


def _expected(left: int, top: int, mirror: bool, swap: bool = True) -> tuple[list[float], np.ndarray]:
    """The box and keypoints of a 32x32 crop from (left, top), by the rule written out above."""
    def fx(stored: float) -> float:
        return (stored - left) / 32

    def fy(stored: float) -> float:
        return (stored - top) / 32

    clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    x0, y0, x1, y1 = clip(fx(6.53125)), clip(fy(13.0625)), clip(fx(32.0625)), clip(fy(24.9375))
    box = [1 - x1, y0, 1 - x0, y1] if mirror else [x0, y0, x1, y1]
    points = np.zeros((15, 3))
    for part, (sx, sy) in {7: (19.0, 19.0), 11: (26.125, 8.3125), 2: (0.59375, 37.40625)}.items():
        x, y = fx(sx), fy(sy)
        if 0 <= x <= 1 and 0 <= y <= 1:
            points[part - 1] = (1 - x if mirror else x, y, 1)
    if mirror and swap:  # the left parts take the right parts' places and back: eyes 7 <-> 11
        points[[6, 10]] = points[[10, 6]]
    return box, points


def test_cub_parts_mirror_left_and_right() -> None:
    order = mirror_order(CUB_PARTS)
    assert CUB_PARTS[6] == "left eye" and CUB_PARTS[10] == "right eye"
    assert [(k + 1, order[k] + 1) for k in range(15) if order[k] != k] == [
        (7, 11), (8, 12), (9, 13), (11, 7), (12, 8), (13, 9)]


def test_centre_crop_by_hand(tmp_path: Path) -> None:
    birds = _layout(tmp_path / "birds")
    (birds / "test").symlink_to(birds / "train", target_is_directory=True)
    data = _build(birds, split="test")
    assert data.fields == {"box", "keypoints"}
    item = data[0]
    # left = top = (38 - 32) // 2 = 3, no mirror:
    #   box (6.53125-3, 13.0625-3, 32.0625-3, 24.9375-3) / 32 = (0.1103515625, 0.314453125, 0.908203125, 0.685546875)
    #   left eye ((19-3)/32, (19-3)/32) = (0.5, 0.5); right eye (23.125/32, 5.3125/32) = (0.72265625, 0.166015625)
    #   beak x (0.59375-3)/32 < 0: cropped out -> (0, 0, 0); tail outside the window -> (0, 0, 0)
    assert item["box"].dtype == torch.float32 and item["keypoints"].shape == (15, 3)
    assert item["box"].tolist() == [0.1103515625, 0.314453125, 0.908203125, 0.685546875]
    expected = np.zeros((15, 3))
    expected[6] = (0.5, 0.5, 1)
    expected[10] = (0.72265625, 0.166015625, 1)
    np.testing.assert_array_equal(item["keypoints"].numpy(), expected)
    box, points = _expected(3, 3, False)
    assert item["box"].tolist() == box and np.array_equal(points, expected)
    assert torch.equal(data.caption_item(0, 4)["box"], item["box"])


def _crop_of(item: dict) -> tuple[int, int, bool]:
    """(left, top, mirror) of a training crop, read off its 32x32 pixels: the window's green part
    ends at stored x 19 and its dark part at stored y 19, so 19 - left columns are green and
    19 - top rows dark; the green part is on the right when mirrored."""
    image = ((item["images"][1] + 1) * 127.5).permute(1, 2, 0).numpy()
    green = image[..., 1].mean(axis=0) > image[..., 2].mean(axis=0)
    dark = image[..., 0].mean(axis=1) < 100
    return 19 - int(green.sum()), 19 - int(dark.sum()), bool(green[-1] and not green[0])


@pytest.mark.parametrize("swap", [True, False])
def test_training_crops_and_flips_move_box_and_keypoints_with_the_pixels(tmp_path: Path, swap: bool) -> None:
    data = _build(_layout(tmp_path / "birds", paint=_quadrants), swap_sides_on_flip=swap)
    seen = set()
    for epoch in range(24):
        data.set_epoch(epoch)
        item = data[epoch % len(KEYS)]
        left, top, mirror = _crop_of(item)
        seen.add((left, top, mirror))
        box, points = _expected(left, top, mirror, swap)
        assert item["box"].tolist() == box, (epoch, left, top, mirror)
        np.testing.assert_array_equal(item["keypoints"].numpy(), points)
        eye = item["keypoints"][10 if mirror and swap else 6]  # the part at the quadrants' corner
        assert eye[0] * 32 == (32 - (19 - left) if mirror else 19 - left) and eye[1] * 32 == 19 - top
    # checked: mirrored and plain crops, a box clipped at the right (left 0: (32.0625 - 0)/32 > 1), and
    # the beak inside the crop (only from left 0, top 6), mirrored and plain
    assert {(0, 6, True), (0, 6, False)} <= seen and len({(x, y) for x, y, _ in seen}) >= 15


def test_without_part_locations_only_the_box(tmp_path: Path) -> None:
    birds = _layout(tmp_path / "birds", parts=False)
    data = _build(birds)
    assert data.fields == {"box"} and "keypoints" not in data[0] and "box" in data[0]
    assert "part_locs.txt" in data.missing_fields["keypoints"]
    assert _build(birds, part_locs=None).fields == {"box"}
    with pytest.raises(DataError) as info:  # a path you set must be there
        _build(birds, part_locs="parts/mine.txt")
    assert "parts/mine.txt" in str(info.value) and "Fix:" in str(info.value)
    plain = _build(birds, crop_boxes=False, part_locs=None)  # the tables are there: the box still is
    assert plain.fields == {"box"}
    (birds / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    assert _build(birds, crop_boxes=False, part_locs=None).fields == frozenset()


@pytest.mark.parametrize(("table", "line", "expected"), [
    ("parts/part_locs.txt", "1 7 128.0 48.0", "line 76: expected 5 fields, found 4"),
    ("parts/part_locs.txt", "1 16 1.0 1.0 1", "line 76: part id '16'"),
    ("parts/part_locs.txt", "9 1 1.0 1.0 1", "line 76: image id 9 is not in images.txt"),
    ("parts/part_locs.txt", "1 1 x 1.0 1", "line 76: expected numbers"),
    ("parts/part_locs.txt", "1 1 1.0 nan 1", "line 76: expected numbers"),
    ("parts/part_locs.txt", "1 1 1.0 1.0 2", "line 76: visible is '2'"),
    ("bounding_boxes.txt", "6 1 2 0 4", "line 6: a box of width 0"),
    ("bounding_boxes.txt", "6 1 2 three 4", "line 6: expected numbers"),
])
def test_corrupt_tables_name_file_and_line(tmp_path: Path, table: str, line: str, expected: str) -> None:
    birds = _layout(tmp_path / "birds")
    path = birds / "CUB_200_2011" / table
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DataError) as info:
        _build(birds)
    assert expected in str(info.value) and str(path) in str(info.value) and "Fix:" in str(info.value)


def _birds_recipe(tmp_path: Path, birds: Path) -> Path:
    return write(tmp_path / "birds.yaml", TINY.read_text().replace(
        "dataset: {type: shapes, train_size: 48, test_size: 16, holdout_size: 16}",
        f"dataset: {{type: stackgan-birds, root: {birds}, embeddings_file: null}}").replace(
        "batch_size: 8", "batch_size: 2"))


def test_corrupt_part_locations_exit_2(cli, tmp_path: Path) -> None:
    birds = _layout(tmp_path / "birds")
    table = birds / "CUB_200_2011" / "parts" / "part_locs.txt"
    table.write_text(table.read_text().replace("1 7 128.0 48.0 1", "1 7 128.0 48.0"))
    code, _out, err = cli("data", "preview", _birds_recipe(tmp_path, birds), "--out", tmp_path / "p")
    assert code == 2 and "Traceback" not in err
    assert "part_locs.txt" in err and "line 7" in err and "Fix:" in err


def test_preview_records_and_draws_the_fields(cli, tmp_path: Path) -> None:
    birds = _layout(tmp_path / "birds", paint=_quadrants)
    (birds / "test").symlink_to(birds / "train", target_is_directory=True)
    recipe = _birds_recipe(tmp_path, birds)
    out = tmp_path / "drawn"
    code, stdout, err = cli("data", "preview", recipe, "--split", "test", "--n", 1, "--draw", "--out", out)
    assert code == 0, stdout + err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert records[0]["box"] == [0.1103515625, 0.314453125, 0.908203125, 0.685546875]  # as worked out above
    assert records[0]["keypoints"][6] == [0.5, 0.5, 1.0] and len(records[0]["keypoints"]) == 15
    big = np.asarray(Image.open(out / records[1]["file"]).convert("RGB")).astype(int)
    assert records[1]["resolution"] == 32
    # box at 32 px: columns floor(0.1103515625*32) = 3 to ceil(0.908203125*32) - 1 = 29,
    # rows floor(0.314453125*32) = 10 to ceil(0.685546875*32) - 1 = 21: a magenta outline.
    magenta = (big == (255, 0, 255)).all(axis=2)
    outline = np.zeros((32, 32), dtype=bool)
    outline[10, 3:30] = outline[21, 3:30] = outline[10:22, 3] = outline[10:22, 29] = True
    assert magenta[outline].all() and not magenta[~outline].any()
    # keypoints: left eye (part 7 of 15) at pixel (floor(0.5*32), floor(0.5*32)) = (16, 16), right eye
    # (part 11) at (floor(23.125), floor(5.3125)) = (23, 5); 1-pixel dots at 32 px, of hue 6/15 (144
    # degrees: green 255, blue 0.4*255 = 102) and 10/15 (240 degrees: pure blue).
    assert tuple(big[16, 16]) == (0, 255, 102) and tuple(big[5, 23]) == (0, 0, 255)
    plain = tmp_path / "plain"
    code, stdout, err = cli("data", "preview", recipe, "--split", "test", "--n", 1, "--out", plain)
    assert code == 0, stdout + err
    undrawn = np.asarray(Image.open(plain / records[1]["file"]).convert("RGB")).astype(int)
    assert not (undrawn == (255, 0, 255)).all(axis=2).any()
    keep = ~outline
    keep[16, 16] = keep[5, 23] = False
    assert (undrawn[keep] == big[keep]).all()  # elsewhere the drawn image is the image


def test_shapes_box_holds_the_rendered_shape(tmp_path: Path) -> None:
    entry = registry().get("dataset", "shapes")
    ctx = DataContext(split="test", resolutions=(16, 32), cache_dir=tmp_path / "cache")
    data = entry.factory(entry.options(train_size=4, test_size=30, holdout_size=2), ctx)
    assert data.fields == {"box"}
    kinds = set()
    for i in range(len(data)):
        item, scene = data[i], data.scenes[i]
        kinds.add(scene.shape)
        x0, y0, x1, y1 = (float(v) * 32 for v in item["box"])
        image = ((item["images"][1] + 1) * 127.5).round().permute(1, 2, 0).numpy()
        touched = (np.abs(image - shapes.PALETTE[scene.background]) > 0.5).any(axis=2)
        rows, cols = np.flatnonzero(touched.any(axis=1)), np.flatnonzero(touched.any(axis=0))
        # every pixel the shape colours lies in the box, and the box is no more than a pixel wider
        assert np.floor(x0) <= cols[0] and cols[-1] + 1 <= np.ceil(x1), (scene, x0, x1, cols)
        assert np.floor(y0) <= rows[0] and rows[-1] + 1 <= np.ceil(y1), (scene, y0, y1, rows)
        assert cols[0] <= x0 + 1 and cols[-1] + 1 >= x1 - 1 and rows[0] <= y0 + 1 and rows[-1] + 1 >= y1 - 1
    assert kinds == set(shapes.SHAPES)


def _boxed_folder(root: Path, box: object) -> Path:
    """Two 64x32 pictures: 'boxed' with ``box``, 'whole' without one."""
    for name in ("boxed", "whole"):
        (root / f"{name}.png").parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 32), (200, 30, 30)).save(root / f"{name}.png")
    lines = [{"image": "boxed.png", "captions": ["boxed"], "box": box}, {"image": "whole.png", "captions": ["whole"]}]
    (root / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def _folder(root: Path, split: str) -> object:
    entry = registry().get("dataset", "captioned-folder")
    ctx = DataContext(split=split, resolutions=(8, 16), cache_dir=root.parent / "cache", seed=2)
    return entry.factory(entry.options(root=str(root), test_fraction=0.5), ctx)


def test_captioned_folder_boxes_by_hand(tmp_path: Path) -> None:
    root = _boxed_folder(tmp_path / "mine", [0.5, 0.25, 0.625, 0.75])
    test, train = _folder(root, "test"), _folder(root, "train")
    assert test.fields == train.fields == {"box"}
    assert test[0]["caption"] == "boxed" and train[0]["caption"] == "whole"  # this folder's split
    # 64x32 stored at the load size 19 for 16 px: 38x19, a scale of 0.59375 both ways. The box
    # (0.5, 0.25, 0.625, 0.75) of 64x32 is pixels (32, 8, 40, 24) -> stored (19, 4.75, 23.75, 14.25);
    # the centre 16x16 crop starts at left (38-16)//2 = 11, top (19-16)//2 = 1:
    # ((19-11)/16, (4.75-1)/16, (23.75-11)/16, (14.25-1)/16) = (0.5, 0.234375, 0.796875, 0.828125).
    assert test[0]["box"].tolist() == [0.5, 0.234375, 0.796875, 0.828125]
    for epoch in range(6):  # an image without a box has the whole image, whatever the crop and flip
        train.set_epoch(epoch)
        assert train[0]["box"].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_captioned_folder_without_boxes_offers_none(tmp_path: Path) -> None:
    root = _boxed_folder(tmp_path / "mine", None)
    data = _folder(root, "train")
    assert data.fields == frozenset() and "box" not in data[0]


@pytest.mark.parametrize("box", [[0.5, 0.2, 0.4, 0.9], [0.1, 0.2, 0.3], [0, 0, 1.5, 1], [True, 0, 1, 1],
                                 "0 0 1 1", [0, 0.5, 1, 0.5], [-0.1, 0, 1, 1]])
def test_captioned_folder_bad_box_names_the_line(tmp_path: Path, box: object) -> None:
    root = _boxed_folder(tmp_path / "mine", box)
    with pytest.raises(DataError) as info:
        _folder(root, "train")
    message = str(info.value)
    assert "captions.jsonl" in message and "line 1: 'box'" in message and "0 <= x0 < x1 <= 1" in message


def test_preview_draw_says_when_there_is_nothing_to_draw(cli, tmp_path: Path) -> None:
    birds = _layout(tmp_path / "birds", parts=False)
    recipe = _birds_recipe(tmp_path, birds)
    text = recipe.read_text().replace("embeddings_file: null}", "embeddings_file: null, crop_boxes: false}")
    (birds / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    code, stdout, err = cli("data", "preview", write(recipe, text), "--n", 1, "--draw", "--out", tmp_path / "p")
    assert code == 0, stdout + err
    assert "Nothing drawn: stackgan-birds gives no box or keypoints" in stdout
    assert "box" not in (tmp_path / "p" / "manifest.jsonl").read_text()


def test_fields_batch_as_the_contract_says_and_survive_pickling(tmp_path: Path) -> None:
    data = _build(_layout(tmp_path / "birds"))
    batch = default_collate([data[i] for i in range(3)])
    assert batch["box"].shape == (3, 4) and batch["box"].dtype == torch.float32
    assert batch["keypoints"].shape == (3, 15, 3) and batch["keypoints"].dtype == torch.float32
    copy = pickle.loads(pickle.dumps(data))  # what a data-loading worker gets
    assert copy.fields == data.fields and torch.equal(copy[2]["keypoints"], data[2]["keypoints"])
