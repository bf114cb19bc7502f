"""The GAWWN recipes from the command line: full-size counts, a tiny shapes_gawwn run drawn at a given
box, scored with shapes-box, and the benchmark's smoke run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHAPES_GAWWN = ROOT / "recipes" / "shapes_gawwn.yaml"
TINY = ["stages.0.generator.ngf=4", "stages.0.generator.text_channels=16", "stages.0.discriminator.ndf=4", "stages.0.discriminator.box_join=8",
        "stages.1.generator.ngf=4", "stages.1.discriminator.ndf=4", "stages.1.discriminator.box_join=8",
        "text_encoder.dim=16", "text_encoder.max_vocab=64", "dataset.train_size=16", "dataset.test_size=8",
        "dataset.holdout_size=8", "training.batch_size=4", "training.device=cpu", "output.log_every=1",
        "output.sample_every=2", "output.checkpoint_every=2", "output.sample_count=2"]
SETS = [arg for s in TINY for arg in ("--set", s)]
JUDGE = ["--option", "judge_steps=2", "--option", "judge_train_scenes=100"]


def test_gawwn_cub_recipe_builds_at_full_size_with_reeds_sizes(cli) -> None:
    code, out, err = cli("check", ROOT / "recipes" / "gawwn_cub_bbox.yaml", "--params", "--json")
    assert code == 0, err
    rows = {(r["stage"], r["role"]): r for r in json.loads(out)}
    # test_gawwn.py derives both counts from main_cub_bbox.lua's layer list
    assert rows[("gawwn", "generator+conditioner")]["params"] == 73_537_859
    assert rows[("gawwn", "discriminator")]["params"] == 16_759_297
    assert rows[("gawwn", "generator")]["output_shape"] == [2, 3, 128, 128]


@pytest.fixture(scope="module")
def gawwn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ganstack.cli.main import main

    out = tmp_path_factory.mktemp("gawwn") / "run"
    assert main(["run", str(SHAPES_GAWWN), "--out", str(out), "--max-steps", "2", *SETS]) == 0
    return out


def test_tiny_shapes_gawwn_trains_and_logs_its_terms(gawwn_run: Path) -> None:
    line = json.loads((gawwn_run / "metrics.jsonl").read_text().splitlines()[-1])
    for stage in ("stage1", "stage2"):  # the paper's three pairs: the recipe leaves the fields pair off
        assert {f"{stage}/d_real", f"{stage}/d_wrong", f"{stage}/d_fake", f"{stage}/g_fake"} <= set(line)
        assert f"{stage}/d_wrong_fields" not in line
    assert {"stage2/colour_mean", "stage2/colour_cov"} <= set(line)  # Stage-II keeps Stage-I's colours


def test_sample_draws_at_the_given_box(cli, gawwn_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    code, stdout, err = cli("sample", gawwn_run, "--text", "a red circle on a blue background",
                            "--box", "0.1,0.1,0.5,0.5", "--n", 2, "--out", out)
    assert code == 0, stdout + err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted((r["stage"], r["index"]) for r in records) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(Image.open(out / r["file"]).size == (16 * r["stage"],) * 2 for r in records)
    assert all(r["box"] == pytest.approx([0.1, 0.1, 0.5, 0.5]) for r in records)
    assert (out / "contact_sheet.png").is_file()


def test_the_box_given_to_generate_moves_the_picture(gawwn_run: Path) -> None:
    from ganstack.sample.draw import load

    model = load(gawwn_run, device="cpu", ema=False)  # two steps: the EMA is still the init, near-constant
    text = ["a red circle on a blue background"]
    left = model.generate(text, n=1, seed=0, fields={"box": torch.tensor([[0.1, 0.1, 0.5, 0.5]])})
    right = model.generate(text, n=1, seed=0, fields={"box": torch.tensor([[0.5, 0.5, 0.9, 0.9]])})
    again = model.generate(text, n=1, seed=0, fields={"box": torch.tensor([[0.1, 0.1, 0.5, 0.5]])})
    assert torch.equal(left.images[-1], again.images[-1])  # deterministic: any change is the box's
    assert not torch.equal(left.images[-1], right.images[-1])


def test_sample_without_a_box_names_the_flag(cli, gawwn_run: Path, tmp_path: Path) -> None:
    code, _out, err = cli("sample", gawwn_run, "--text", "a red circle", "--out", tmp_path / "x")
    assert code == 2 and "--box" in err and "Traceback" not in err


def test_shapes_box_metric_scores_the_run(cli, gawwn_run: Path, tmp_path: Path) -> None:
    code, out, err = cli("eval", gawwn_run, "--metric", "shapes-box", "--n", 4, *JUDGE, "--out", tmp_path / "e.json")
    assert code == 0, out + err
    text = (tmp_path / "e.json").read_text()
    assert "centre_in_box" in text and "real_test" in text


def _benchmark() -> Any:
    """benchmarks/gawwn_shapes.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("gawwn_shapes", ROOT / "benchmarks" / "gawwn_shapes.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_smoke_run_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bench = _benchmark()
    monkeypatch.setattr(sys, "argv", ["gawwn_shapes.py", "--out", str(tmp_path / "bench"), "--steps", "2", "--n", "4",
                                      "--batch-size", "4", "--judge-steps", "2", "--judge-scenes", "100", *SETS])
    assert bench.main() == 0
    report = json.loads((tmp_path / "bench" / "gawwn.json").read_text())
    assert report["trained_steps"] == 2 and report["steps"] == 2
    assert {"test/centre_in_box", "holdout/centre_in_box", "test/color", "test/shape"} <= set(report["final"])
    assert report["final"]["real_test/centre_in_box"] == 1.0
    assert "| test/centre_in_box |" in capsys.readouterr().out


def test_benchmark_scores_a_quickstart_run_on_the_same_scenes_and_captions(
        gawwn_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _benchmark()
    # the same run as both: scored like for like, its colours and shapes are its own figures exactly
    monkeypatch.setattr(sys, "argv", ["gawwn_shapes.py", "--out", str(tmp_path / "bench"), "--run", str(gawwn_run),
                                      "--quickstart", str(gawwn_run), "--n", "4", "--batch-size", "4",
                                      "--judge-steps", "2", "--judge-scenes", "100"])
    assert bench.main() == 0
    report = json.loads((tmp_path / "bench" / "gawwn.json").read_text())
    assert report["quickstart_metric"] == "shapes-box"
    assert report["quickstart"] == {k: report["final"][k] for k in bench.COMPARED}


def test_a_run_saved_before_placement_existed_samples_as_it_was_trained(gawwn_run: Path, tmp_path: Path) -> None:
    from ganstack.recipe.resolve import load_recipe
    from ganstack.sample.draw import load

    ckpt = torch.load(gawwn_run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["recipe"]["stages"][0]["generator"]["placement"] == "warp"  # a new run saves the default
    del ckpt["recipe"]["stages"][0]["generator"]["placement"]  # as a checkpoint written before the option
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)
    assert load(old, device="cpu").stack.stages[0].generator.placement == "cut"
    assert load(gawwn_run, device="cpu").stack.stages[0].generator.placement == "warp"
    assert load_recipe(SHAPES_GAWWN).recipe.stages[0].generator.options.placement == "warp"  # new recipes: the paper's


def test_the_training_sample_sheet_outlines_the_box_each_row_was_drawn_in(gawwn_run: Path) -> None:
    import numpy as np

    sheet = np.asarray(Image.open(gawwn_run / "samples" / "step_0000002.png").convert("RGB"))
    magenta = (sheet == (255, 0, 255)).all(axis=2)
    assert not magenta[:, :220].any()  # nothing in the caption column
    cell, pad, header = 96, 4, 16  # contact_sheet's layout for 32-pixel images
    for row in range(2):  # output.sample_count
        top, left = header + pad + row * (cell + pad), 220 + pad
        inside = magenta[top:top + cell, left:left + cell]
        ys, xs = np.nonzero(inside)
        assert len(ys), f"row {row} has no box outline"
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        assert inside[y0, x0:x1 + 1].all() and inside[y1, x0:x1 + 1].all()  # the top and bottom edges
        assert inside[y0:y1 + 1, x0].all() and inside[y0:y1 + 1, x1].all()  # the left and right edges


def test_the_benchmark_variants_build(cli) -> None:
    variants = sorted((ROOT / "benchmarks" / "variants").glob("*.yaml"))
    assert variants
    for variant in variants:
        code, out, err = cli("check", variant)
        assert code == 0, f"{variant.name}: {out}{err}"
