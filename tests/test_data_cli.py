"""Data as a user meets it: your own folder trained on, previews, mismatched images, lr decay."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from test_datasets_folder import _jsonl_folder

from conftest import TINY, write


def test_captioned_folder_trains_a_recipe(cli, tmp_path: Path) -> None:
    _jsonl_folder(tmp_path / "mine")
    recipe = write(tmp_path / "mine.yaml", TINY.read_text().replace(
        "dataset: {type: shapes, train_size: 48, test_size: 16, holdout_size: 16}",
        "dataset: {type: captioned-folder, root: mine, test_fraction: 0.0}").replace("batch_size: 8", "batch_size: 3"))
    out = tmp_path / "run"
    code, stdout, err = cli("run", recipe, "--out", out, "--max-steps", 1)
    assert code == 0, stdout + err
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["stage1/d_total"] > 0
    code, stdout, err = cli("sample", out, "--text", "picture 3 a", "--out", tmp_path / "s")
    assert code == 0, stdout + err


def test_missing_folder_is_a_clear_error(cli, tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", TINY.read_text().replace(
        "dataset: {type: shapes, train_size: 48, test_size: 16, holdout_size: 16}",
        "dataset: {type: captioned-folder, root: nowhere}"))
    code, _out, err = cli("run", recipe, "--out", tmp_path / "run", "--max-steps", 1)
    assert code == 2 and "Traceback" not in err
    assert "nowhere" in err and "Fix:" in err


def test_data_preview_writes_what_the_stack_sees(cli, tmp_path: Path) -> None:
    out = tmp_path / "preview"
    code, stdout, err = cli("data", "preview", TINY, "--split", "holdout", "--n", 3, "--out", out)
    assert code == 0, stdout + err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 2
    assert {r["split"] for r in records} == {"holdout"} and {r["stage"] for r in records} == {1, 2}
    assert all(set(r) >= {"caption", "index", "stage", "resolution", "file", "split"} for r in records)
    for r in records:
        assert Image.open(out / r["file"]).size == (r["resolution"],) * 2


def test_wrong_pairs_from_another_class(cli, tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", TINY.read_text())
    recipe = write(tmp_path / "class.yaml", "base: base.yaml\nstages: {0: {losses: [{type: matching-aware, wrong: class},"
                   " {type: kl}]}}\n")
    code, stdout, err = cli("run", recipe, "--out", tmp_path / "run", "--max-steps", 1)
    assert code == 0, stdout + err


def test_learning_rate_halves_every_decay_interval(cli, tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", TINY.read_text())
    recipe = write(tmp_path / "one.yaml", "base: base.yaml\nstages: {1: null}\n")
    out = tmp_path / "run"
    code, stdout, err = cli("run", recipe, "--out", out, "--set", "training.epochs=3", "--set", "training.lr_decay_every=1",
                            "--set", "dataset.train_size=16", "--max-steps", 6)
    assert code == 0, stdout + err
    rates = {line["epoch"]: line["lr/stage1/g"] for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert rates == {0: 2e-4, 1: 1e-4, 2: 5e-5}
