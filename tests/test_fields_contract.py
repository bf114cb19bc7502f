"""The widened contract (issue #13): conditioning fields, requests, word features, StepState.generate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fields_plugin import SEEN, FieldsPlugin, example_box, recipe
from PIL import Image

from conftest import write
from ganstack.errors import UserError
from ganstack.sample.fields import parse_box, read_keypoints
from ganstack.testing import registered_plugin


@pytest.fixture
def plugin():
    SEEN.clear()
    with registered_plugin(FieldsPlugin(), "fields-test"):
        yield SEEN


def _boxes_of_dataset(n: int = 16) -> torch.Tensor:
    return torch.tensor([example_box(i) for i in range(n)])


def _is_dataset_batch(box: torch.Tensor) -> bool:
    """Each row is one example's box, and no example twice (a collated batch of distinct examples)."""
    table = _boxes_of_dataset()
    rows = [int(((table - row).abs().sum(1) < 1e-6).nonzero()[0]) for row in box if
            ((table - row).abs().sum(1) < 1e-6).any()]
    return len(rows) == len(box) and len(set(rows)) == len(rows)


def test_box_reaches_generator_and_discriminator_in_training(plugin, cli, tmp_path: Path) -> None:
    path = write(tmp_path / "boxed.yaml", recipe())
    code, out, err = cli("run", path, "--max-steps", "2", "--out", tmp_path / "run")
    assert code == 0, out + err
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and "stage1/d_wrong" in lines[-1]
    generated = [f["box"] for f in plugin["generator"] if f["box"].shape[0] == 4]
    assert len(generated) >= 2 and all(_is_dataset_batch(b) for b in generated)
    assert set(plugin["generator"][0]) == {"box"}  # exactly what it requested
    # the D phase of step 1: real and fake pairs with the batch's boxes, the shifted wrong pair with the
    # boxes rolled along with the captions (fields follow the condition)
    first = generated[0]
    d_calls = plugin["cond_logits"][:3]
    assert torch.equal(d_calls[0], first) and torch.equal(d_calls[2], first)
    assert torch.equal(d_calls[1], first.roll(1, dims=0))
    assert torch.equal(plugin["uncond_logits"][0], first)


def test_check_params_uses_example_fields(plugin, cli, tmp_path: Path) -> None:
    path = write(tmp_path / "boxed.yaml", recipe())
    code, out, err = cli("check", path, "--params")
    assert code == 0, out + err
    assert "test-field-stage" in out
    assert all(torch.equal(f["box"][0], torch.tensor([0.25, 0.25, 0.75, 0.75])) for f in plugin["generator"])


def test_sample_box_reaches_the_generator_and_is_drawn(plugin, cli, tmp_path: Path) -> None:
    path = write(tmp_path / "boxed.yaml", recipe())
    assert cli("run", path, "--max-steps", "2", "--out", tmp_path / "run")[0] == 0
    plugin.clear()
    code, out, err = cli("sample", tmp_path / "run", "--text", "red shape", "--text", "blue shape big",
                         "--n", "2", "--box", "0.25,0.5,0.75,1", "--out", tmp_path / "drawn")
    assert code == 0, out + err
    boxes = torch.cat([f["box"] for f in plugin["generator"]])
    assert torch.equal(boxes, torch.tensor([[0.25, 0.5, 0.75, 1.0]]).repeat(4, 1))
    records = [json.loads(line) for line in (tmp_path / "drawn" / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["box"] == [0.25, 0.5, 0.75, 1.0] for r in records)
    # the box outline: 96-pixel cells, so the left edge is at x = 24 of the cell, y from 48 to 95
    sheet = np.asarray(Image.open(tmp_path / "drawn" / "contact_sheet.png").convert("RGB"))
    left, top = 220 + 4, 16 + 4  # text column + pad, header + pad
    assert tuple(sheet[top + 60, left + 24]) == (255, 0, 255)
    assert tuple(sheet[top + 60, left + 71]) == (255, 0, 255)  # right edge: 0.75 * 96 - 1
    assert tuple(sheet[top + 40, left + 24]) != (255, 0, 255)  # above the box


@pytest.mark.parametrize(("value", "says"), [("0.5,0.2,0.4,0.9", "X0 < X1"), ("0.1,0.2,0.6", "not four"),
                                              ("a,b,c,d", "four numbers"), ("0.1,0.2,1.5,0.9", "outside 0..1"),
                                              ("nan,0,1,1", "outside 0..1")])
def test_bad_box_exits_2_naming_the_flag(plugin, cli, tmp_path: Path, value: str, says: str) -> None:
    code, out, err = cli("sample", tmp_path / "nowhere", "--text", "red shape", f"--box={value}")
    assert code == 2 and "--box" in err and says in err, err
    assert "Traceback" not in err


def test_missing_field_and_unwanted_flag_in_sample(plugin, cli, tmp_path: Path) -> None:
    path = write(tmp_path / "boxed.yaml", recipe())
    assert cli("run", path, "--max-steps", "1", "--out", tmp_path / "run")[0] == 0
    code, _out, err = cli("sample", tmp_path / "run", "--text", "red shape", "--out", tmp_path / "d")
    assert code == 2 and "'box'" in err and "--box" in err, err
    kp = write(tmp_path / "kp.json", json.dumps([[0.5, 0.5, 1]] * 3))
    code, _out, err = cli("sample", tmp_path / "run", "--text", "red shape", "--box", "0,0,1,1",
                          "--keypoints", kp, "--out", tmp_path / "d")
    assert code == 2 and "--keypoints" in err and "does not take a keypoints" in err, err


def test_keypoints_file_is_checked(tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", json.dumps({"keypoints": [[0.5, 0.25, 1], [0.9, 0.1, 0]]}))
    assert torch.equal(read_keypoints(good), torch.tensor([[0.5, 0.25, 1.0], [0.0, 0.0, 0.0]]))
    assert parse_box("0.1, 0.2, 0.6, 0.9").tolist() == pytest.approx([0.1, 0.2, 0.6, 0.9])
    (tmp_path / "latin1.json").write_bytes(b'[[0.5, 0.5, 1]] \xe9')
    cases = {"latin1.json": "not UTF-8", "bad.json": "not JSON", "shape.json": "not [x, y, visible]",
             "range.json": "fractions 0..1", "empty.json": "no list"}
    write(tmp_path / "bad.json", "[[0.5, 0.5, 1]")
    write(tmp_path / "shape.json", "[[0.5, 0.5]]")
    write(tmp_path / "range.json", "[[1.5, 0.5, 1]]")
    write(tmp_path / "empty.json", "{}")
    for name, says in cases.items():
        with pytest.raises(UserError) as info:
            read_keypoints(tmp_path / name)
        assert says in str(info.value) and (info.value.path == "--keypoints" or "keypoints" in str(info.value))
    with pytest.raises(UserError, match="expects 15"):
        read_keypoints(good, parts=15)


def test_unknown_request_is_a_recipe_error(plugin, cli, tmp_path: Path) -> None:
    path = write(tmp_path / "boxed.yaml", recipe(requests="[box, keypoints]"))
    code, _out, err = cli("run", path, "--max-steps", "1", "--out", tmp_path / "run")
    assert code == 2, err
    assert "stages[0].generator" in err and "'keypoints'" in err and "test-boxed" in err and "offers box" in err
    assert "the test data has no parts table" in err  # the dataset's own reason (missing_fields)


def test_words_from_an_encoder_without_words_is_a_recipe_error(plugin, cli, tmp_path: Path) -> None:
    # the char-CNN-RNN reads characters: it has no word features (the bag of words has, since #13)
    path = write(tmp_path / "boxed.yaml", recipe(encoder="{type: char-cnn-rnn, dim: 8}", requests="[box, words]"))
    code, _out, err = cli("run", path, "--max-steps", "1", "--out", tmp_path / "run")
    assert code == 2, err
    assert "stages[0].generator" in err and "'words'" in err and "word_dim" in err


def test_text_features_deliver_words_and_mask(plugin, cli, tmp_path: Path) -> None:
    path = write(tmp_path / "words.yaml", recipe(encoder="{type: test-words}", requests="[box, words]"))
    code, out, err = cli("run", path, "--max-steps", "1", "--out", tmp_path / "run")
    assert code == 0, out + err
    captions = [c for c in plugin["encoder_captions"] if len(c) == 4][-1]  # the training batch (4), not a sheet's
    got = [f for f in plugin["generator"] if f["words"].shape[0] == 4][-1]
    assert set(got) == {"box", "words", "word_mask"}
    lengths = [len(c.split()) for c in captions]
    assert got["words"].shape == (len(captions), max(lengths), 4)
    assert got["word_mask"].dtype == torch.bool and got["word_mask"].sum(1).tolist() == lengths
    plugin.clear()
    code, out, err = cli("sample", tmp_path / "run", "--text", "red shape big big", "--box", "0,0,1,1",
                         "--out", tmp_path / "d")
    assert code == 0, out + err
    assert plugin["generator"][0]["word_mask"].tolist() == [[True] * 4]


def test_step_state_generate_gives_images_with_gradients(plugin, cli, tmp_path: Path) -> None:
    path = write(tmp_path / "probe.yaml", recipe(probe=True))
    code, out, err = cli("run", path, "--max-steps", "1", "--out", tmp_path / "run")
    assert code == 0, out + err
    assert plugin["probe_d_generate"] == [None]  # D phase: no generate
    probe = plugin["probe"][0]
    assert probe["requires_grad"] and probe["shape"] == (4, 3, 8, 8)
    assert set(probe["fields"]) == {"box"} and _is_dataset_batch(probe["fields"]["box"])
    # the interpolated draw ran the generator with the batch's own boxes
    main_pass, probe_pass = [f["box"] for f in plugin["generator"] if f["box"].shape[0] == 4][-2:]
    assert torch.equal(main_pass, probe["fields"]["box"]) and torch.equal(probe_pass, probe["fields"]["box"])
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "stage1/g_probe" in lines[-1]


def test_metrics_pass_the_examples_fields(plugin, cli, tmp_path: Path) -> None:
    from ganstack.evaluate.scoring import StackSource
    from ganstack.sample.draw import load
    from ganstack_defaults.metrics.sources import generate, item_batches, item_fields

    path = write(tmp_path / "boxed.yaml", recipe())
    assert cli("run", path, "--max-steps", "1", "--out", tmp_path / "run")[0] == 0
    model = load(tmp_path / "run", device="cpu")
    source = StackSource(model, model.resolved)
    dataset = source.dataset("test")
    plugin.clear()
    (_positions, items), = list(item_batches(dataset, 3, 8, "test"))
    images = generate(source, [it["caption"] for it in items], 0, None, item_fields(dataset, items))
    assert images.shape == (3, 3, 8, 8)
    assert torch.equal(plugin["generator"][0]["box"], torch.tensor([example_box(i) for i in range(3)]))
    with pytest.raises(UserError, match="'box'"):
        source.generate(["red shape"])
