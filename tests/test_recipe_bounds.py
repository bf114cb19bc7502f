"""Bounds of recipe values a runtime would choke on. Seeds: every recipe and plugin seed, and ``sample --seed``, take 0 to 2**32 - 1 (what each generator
they reach accepts, with room for the offsets added per stage, epoch and rank); beyond that a seed is
refused by name instead of overflowing inside torch or NumPy. ``training.num_workers``: at most 64,
each a process (100,000 forked until the machine ran out of processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY

TOP = 2**32 - 1


@pytest.mark.parametrize("key", ["training.seed", "dataset.seed"])
@pytest.mark.parametrize("value", [TOP + 1, 10**23, -1])
def test_a_seed_out_of_range_is_refused_by_its_key(cli, key: str, value: int) -> None:
    code, _out, err = cli("check", TINY, "--set", f"{key}={value}")
    text = " ".join(err.split())
    assert code == 2 and "Traceback" not in err and f"{key}:" in text and str(value) in text, text


def test_the_largest_seed_trains_and_samples(cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 1, "--set", f"training.seed={TOP}",
                            "--set", f"dataset.seed={TOP}")
    assert code == 0, stdout + err
    code, stdout, err = cli("sample", out, "--text", "a red circle", "--n", 2, "--seed", TOP, "--out", tmp_path / "s")
    assert code == 0, stdout + err
    for bad in (str(TOP + 1), "-1", "10" * 12):
        with pytest.raises(SystemExit) as info:  # argparse: usage and the reason, exit 2
            cli("sample", out, "--text", "a", "--seed", bad)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "--seed" in err and "a seed is from 0 to 4294967295" in err and "Traceback" not in err


def test_a_thousand_data_loading_processes_are_refused(cli) -> None:
    code, _out, err = cli("check", TINY, "--set", "training.num_workers=100000")
    text = " ".join(err.split())
    assert code == 2 and "training.num_workers: must be <= 64: 100000" in text and "Traceback" not in err
    assert cli("check", TINY, "--set", "training.num_workers=64")[0] == 0
