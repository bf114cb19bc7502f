"""Every kind of broken recipe ends in one paragraph naming the file, the key path and a fix, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, write

GOOD = TINY.read_text(encoding="utf-8")


def _check(cli, recipe: Path, *extra: str) -> str:
    code, out, err = cli("check", recipe, *extra)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    assert str(recipe) in err
    assert "Fix:" in err
    return " ".join(err.split())  # undo rich's wrapping


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("unknown plugin", ("type: bow,", "type: bagofwords,"),
         ["text_encoder.type", "unknown text encoder 'bagofwords'", "registered text encoders", "bow"]),
        ("misspelt plugin", ("type: stackgan-stage1", "type: stackgan-stage2"),
         ["stages[0].generator.type", "did you mean 'stackgan-stage1'"]),
        ("misspelt key", ("batch_size: 8", "batchsize: 8"),
         ["training.batchsize", "unknown key 'batchsize'", "did you mean 'batch_size'"]),
        ("misspelt plugin option", ("ndf: 4, unconditional_head", "nfd: 4, unconditional_head"),
         ["stages[1].discriminator.nfd", "did you mean 'ndf'"]),
        ("wrong type", ("epochs: 1", "epochs: one"), ["training.epochs", "expected an integer"]),
        ("out of range", ("batch_size: 8", "batch_size: 0"), ["training.batch_size", ">= 1"]),
        ("bad plugin option value", ("scale: 2", "scale: 3"), ["stages[1].generator.scale"]),
        ("bad choice", ("device: cpu", "device: gpu"), ["training.device", "cpu"]),
        ("missing required key", ("dataset: {type: shapes, train_size: 48, test_size: 16, holdout_size: 16}\n", ""),
         ["dataset", "required key is missing"]),
        ("invalid yaml", ("noise_dim: 8", "noise_dim: [8"), ["invalid YAML", "line"]),
    ],
)
def test_broken_recipe(cli, tmp_path: Path, name: str, edit: tuple[str, str], expected: list[str]) -> None:
    assert edit[0] in GOOD, name
    recipe = write(tmp_path / "broken.yaml", GOOD.replace(edit[0], edit[1]))
    message = _check(cli, recipe)
    for text in expected:
        assert text in message, (name, message)


def test_bad_base_path(cli, tmp_path: Path) -> None:
    recipe = write(tmp_path / "child.yaml", "base: nowhere.yaml\ntraining: {epochs: 2}\n")
    message = _check(cli, recipe)
    assert "base recipe 'nowhere.yaml' not found" in message and ": base:" in message


def test_circular_base(cli, tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    message = _check(cli, tmp_path / "a.yaml")
    assert "circular 'base:' chain" in message and "a.yaml" in message and "b.yaml" in message


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("stages.5.discriminator.ndf=32", "index 5 is out of range"),
        ("stages.x.ndf=3", "'stages' is a list; 'x' is not an index"),
        ("noise_dim.size=3", "'noise_dim' is a value"),
        ("training.batch_size", "not of the form path.to.key=VALUE"),
    ],
)
def test_bad_set_path(cli, tmp_path: Path, assignment: str, expected: str) -> None:
    recipe = write(tmp_path / "r.yaml", GOOD)
    message = _check(cli, recipe, "--set", assignment)
    assert expected in message


def test_a_value_where_a_mapping_belongs(cli, tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", GOOD)
    message = _check(cli, recipe, "--set", "stages={1: null}")
    assert "stages[0]" in message and "expected a mapping of keys" in message


def test_set_typed_value_error_names_path(cli, tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", GOOD)
    message = _check(cli, recipe, "--set", "stages.1.discriminator.ndf=wide")
    assert "stages[1].discriminator.ndf" in message and "expected an integer" in message


def test_missing_recipe_file(cli, tmp_path: Path) -> None:
    message = _check(cli, tmp_path / "nope.yaml")
    assert "recipe file not found" in message


def test_real_exit_code_and_no_traceback(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", GOOD.replace("batch_size: 8", "batch_size: -1"))
    proc = subprocess.run([sys.executable, "-m", "ganstack", "check", str(recipe)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "training.batch_size" in proc.stderr


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("type: ca, condition_dim: 8}\n    generator: {type: stackgan-stage1",
          "type: ca, condition_dim: 8, activation: rlu}\n    generator: {type: stackgan-stage1"),  # a Literal field
         ["stages[0].conditioner.activation: must be one of: relu, leaky_relu, glu (got 'rlu')",
          "(did you mean 'relu'?)", "Fix: use one of: relu, leaky_relu, glu"]),
        (("device: cpu", "device: gpu"),  # attrs' in_ validator
         ["training.device: must be one of: auto, cpu, cuda, mps (got 'gpu')", "Fix: use one of: auto, cpu, cuda, mps"]),
        (("epochs: 1,", "epochs: 1, schedule: jiont,"), ["training.schedule: must be one of: stagewise, joint",
                                                         "(did you mean 'joint'?)"]),
    ],
)
def test_a_choice_among_fixed_values_says_them_in_words(cli, tmp_path: Path, edit: tuple[str, str],
                                                        expected: list[str]) -> None:
    assert edit[0] in GOOD
    message = _check(cli, write(tmp_path / "r.yaml", GOOD.replace(edit[0], edit[1])))
    for text in expected:
        assert text in message, message
    assert not any(s in message for s in ("Literal", "typing", "['")), message


def test_set_can_drop_and_append_a_stage_as_base_merging_does(cli, tmp_path: Path) -> None:
    import json

    code, out, err = cli("check", TINY, "--json", "--set", "stages.1=null")
    assert code == 0, err
    assert [s["generator"]["type"] for s in json.loads(out)["stages"]] == ["stackgan-stage1"]
    code, out, err = cli("check", TINY, "--json", "--set",
                         "stages.2={generator: {type: stackgan-refiner, ngf: 8, scale: 2, residual_blocks: 1},"
                         " discriminator: {type: matching-aware, ndf: 4}}")
    assert code == 0, err
    assert len(json.loads(out)["stages"]) == 3
    message = _check(cli, write(tmp_path / "r.yaml", GOOD), "--set", "stages.0=null", "--set", "stages.0=null")
    assert "with --set stages.0=null: stages: must list at least one stage" in message


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("training.batch_size=abc", "with --set training.batch_size=abc: training.batch_size: expected an integer"),
        ("stages.0.conditioner.type=cca", "with --set stages.0.conditioner.type=cca: stages[0].conditioner.type: "
                                          "unknown conditioner 'cca' (did you mean 'ca'?)"),
        ("stages.1.discriminator={type: matching-aware, nfd: 4}",
         "with --set stages.1.discriminator={type: matching-aware, nfd: 4}: stages[1].discriminator.nfd: unknown key"),
    ],
)
def test_an_error_in_a_set_value_names_the_flag_and_what_was_given(cli, tmp_path: Path, assignment: str,
                                                                   expected: str) -> None:
    message = _check(cli, write(tmp_path / "r.yaml", GOOD), "--set", assignment)
    assert expected in message, message


def test_a_recipe_not_in_utf8_names_the_line(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(GOOD.replace("name: tiny_shapes", "name: tiny_shapes  # café").encode("latin-1"))
    message = _check(cli, recipe)
    assert "not UTF-8 text: line 3, column 25 holds the byte 0xe9" in message and "iconv" in message


def test_a_utf8_byte_order_mark_is_accepted(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "bom.yaml"
    recipe.write_bytes(b"\xef\xbb\xbf" + GOOD.encode("utf-8"))
    code, _out, err = cli("check", recipe)
    assert code == 0, err


def test_a_key_given_twice_is_refused_with_both_lines(cli, tmp_path: Path) -> None:
    recipe = write(tmp_path / "twice.yaml", GOOD + "noise_dim: 12\n")
    first = next(n for n, text in enumerate(GOOD.splitlines(), 1) if text.startswith("noise_dim:"))
    last = len(GOOD.splitlines()) + 1
    message = _check(cli, recipe)
    assert "'noise_dim' is given twice" in message and f"first on line {first}" in message
    assert f"line {last}, column 1" in message


def test_a_key_given_twice_in_flow_style_is_refused(cli, tmp_path: Path) -> None:
    message = _check(cli, write(tmp_path / "flow.yaml", GOOD.replace("batch_size: 8", "batch_size: 8, batch_size: 9")))
    assert "'batch_size' is given twice" in message


def test_merge_keys_may_override_what_they_merge(cli, tmp_path: Path) -> None:
    recipe = write(tmp_path / "merge.yaml", GOOD + "x-defaults: &d {a: 1}\nx-used: {<<: *d, a: 2}\n")
    message = _check(cli, recipe)  # refused for the unknown keys only, not as a duplicate
    assert "given twice" not in message and "x-defaults" in message


def test_an_alias_bomb_is_refused_quickly(cli, tmp_path: Path) -> None:
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    recipe = write(tmp_path / "bomb.yaml", GOOD + "\n".join(lines) + "\n")
    start = time.monotonic()
    message = _check(cli, recipe)
    assert time.monotonic() - start < 10
    assert "alias bomb" in message and "line" in message


def test_a_set_value_that_is_an_alias_bomb_or_bad_yaml_is_refused(cli, tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", GOOD)
    message = _check(cli, recipe, "--set", "training.seed=[1, 2")
    assert "training.seed" in message and "invalid YAML" in message
    bomb = '"lol"'
    for i in range(9):
        bomb = f"[&b{i} {bomb}, " + ", ".join([f"*b{i}"] * 8) + "]"
    message = _check(cli, recipe, "--set", f"training.seed={bomb}")
    assert "alias bomb" in message


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs an endless file")
def test_an_endless_recipe_stream_is_refused(cli) -> None:
    message = _check(cli, Path("/dev/zero"))
    assert "larger than 4,194,304 bytes" in message
