"""Drawing from new sentences, scoring a run, and pretraining a text encoder, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY, write


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ganstack.cli.main import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["run", str(TINY), "--out", str(out), "--max-steps", "2"]) == 0
    return out


def test_sample_writes_pngs_manifest_and_contact_sheet(cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    texts = ["a small red circle in the top left. the background is blue.", "a large green square on a white background"]
    code, stdout, err = cli("sample", tiny_run, "--text", texts[0], "--text", texts[1], "--n", 2, "--seed", 5,
                            "--out", out)
    assert code == 0, stdout + err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2  # captions x samples x stages
    assert all({"caption", "index", "stage", "resolution", "file", "seed"} <= set(r) for r in records)
    assert {(r["caption"], r["index"], r["stage"]) for r in records} == {
        (t, i, s) for t in texts for i in (0, 1) for s in (1, 2)}
    for r in records:
        assert Image.open(out / r["file"]).size == (r["resolution"],) * 2
        assert r["resolution"] == {1: 16, 2: 32}[r["stage"]] and r["seed"] == 5 + r["index"]
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.height >= 4 * 96  # one row per caption and sample
    again = tmp_path / "again"
    assert cli("sample", tiny_run, "--text", texts[0], "--n", 2, "--seed", 5, "--out", again)[0] == 0
    first = [r for r in records if r["caption"] == texts[0]]
    assert all((out / r["file"]).read_bytes() == (again / r["file"]).read_bytes() for r in first)  # seeded


def test_sample_last_stage_ca_variations_and_interpolation(cli, tiny_run: Path, tmp_path: Path) -> None:
    code, _o, err = cli("sample", tiny_run, "--captions", write(tmp_path / "c.txt", "a red circle\n\na blue square\n"),
                        "--stage", "last", "--out", tmp_path / "last")
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "last" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["caption"], r["stage"]) for r in records] == [("a red circle", 2), ("a blue square", 2)]
    assert cli("sample", tiny_run, "--text", "a red circle", "--ca-variations", 3, "--out", tmp_path / "ca")[0] == 0
    assert len((tmp_path / "ca" / "manifest.jsonl").read_text().splitlines()) == 3 * 2
    assert cli("sample", tiny_run, "--interpolate", "a red circle", "a blue square", "--steps", 4,
               "--out", tmp_path / "interp")[0] == 0
    assert len((tmp_path / "interp" / "manifest.jsonl").read_text().splitlines()) == 4 * 2


def test_sample_errors(cli, tiny_run: Path, tmp_path: Path) -> None:
    code, _o, err = cli("sample", tiny_run, "--out", tmp_path / "x")
    assert code == 2 and "no text to draw from" in err
    code, _o, err = cli("sample", tmp_path / "missing", "--text", "a")
    assert code == 2 and "checkpoint not found" in " ".join(err.split())


def test_ca_variations_refuse_a_run_without_ca(cli, tmp_path: Path) -> None:
    out = tmp_path / "linear"
    assert cli("run", TINY, "--out", out, "--max-steps", 1, "--set", "stages.0.conditioner.type=linear",
               "--set", "stages.1.conditioner.type=linear", "--set", "stages.0.losses=[{type: matching-aware}]",
               "--set", "stages.1.losses=[{type: matching-aware}]")[0] == 0
    code, _o, err = cli("sample", out, "--text", "a red circle", "--ca-variations", 3, "--out", tmp_path / "ca")
    assert code == 2 and "deterministic" in err and "linear" in err and "shapes_ca.yaml" in err
    assert not (tmp_path / "ca").exists()


def test_python_api_generates(tiny_run: Path) -> None:
    import ganstack

    model = ganstack.load(tiny_run)
    samples = model.generate(["a blue square on a white background"], n=3, seed=1)
    assert [tuple(t.shape) for t in samples.images] == [(3, 3, 16, 16), (3, 3, 32, 32)]
    assert samples.images[1].min() >= -1 and samples.images[1].max() <= 1


def test_eval_writes_a_table_and_eval_json(cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    code, stdout, err = cli("eval", tiny_run, "--metric", "shapes-alignment", "--n", 8, "--out", out)
    assert code == 0, stdout + err
    results = json.loads(out.read_text())["results"]
    assert results["shapes-alignment/real_test/all"] >= 0.99  # the judge itself is right
    assert "shapes-alignment/test/background" in stdout
    # the same numbers computed here from the run's own images and the (cached) judge, by hand
    import ganstack
    from ganstack_defaults.shapes.alignment import ShapesAlignmentOptions, evaluation_scenes
    from ganstack_defaults.shapes.judge import CLASSES, JudgeSpec, labels, load_or_train_judge

    model, options = ganstack.load(tiny_run), ShapesAlignmentOptions()
    judge = load_or_train_judge(32, JudgeSpec(), Path(options.cache_dir), torch.device("cpu"))
    for split in ("test", "holdout"):
        scenes, captions = zip(*evaluation_scenes(8, options.seed, split), strict=True)
        images = model.generate(list(captions), n=1, seed=options.seed).images[-1]  # one batch: seed + 0
        predicted, truth = judge.predict(images), labels(list(scenes))
        right = torch.stack([predicted[a].cpu() == truth[a] for a in CLASSES])
        for a, row in zip(CLASSES, right, strict=True):
            assert results[f"shapes-alignment/{split}/{a}"] == pytest.approx(float(row.float().mean()))
        assert results[f"shapes-alignment/{split}/all"] == pytest.approx(float(right.all(0).float().mean()))


def test_eval_errors_name_the_metric(cli, tiny_run: Path) -> None:
    code, _o, err = cli("eval", tiny_run, "--metric", "inception-scor")
    assert code == 2 and "did you mean 'inception-score'" in err
    code, _o, err = cli("eval", tiny_run, "--metric", "inception-score", "--n", 4)
    assert code == 2 and "weights" in err  # the Inception weights file is required, nothing downloads
    code, _o, err = cli("eval", tiny_run)
    assert code == 2 and "no metric to run" in err


def test_pretrain_encoder_then_start_a_run_from_it(cli, tmp_path: Path) -> None:
    encoder = tmp_path / "bow.pt"
    code, stdout, err = cli("pretrain-encoder", TINY, "--out", encoder, "--steps", 30, "--batch-size", 8)
    assert code == 0, stdout + err
    assert encoder.is_file() and "retrieval accuracy" in stdout
    code, stdout, err = cli("run", TINY, "--out", tmp_path / "run", "--max-steps", 1,
                            "--set", f"text_encoder_init={encoder}")
    assert code == 0, stdout + err
    code, _o, err = cli("run", TINY, "--out", tmp_path / "bad", "--max-steps", 1,
                        "--set", f"text_encoder_init={tmp_path / 'nope.pt'}")
    assert code == 2 and "text_encoder_init" in err
