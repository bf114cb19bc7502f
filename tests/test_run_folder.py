"""The run folder as a user meets it: one run at a time, budgets, resuming a checkpoint file, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY


def message(err: str) -> str:
    return " ".join(err.split())


def test_a_second_run_into_a_locked_folder_is_refused(cli, tmp_path: Path) -> None:
    from ganstack.run_folder.lock import lock_run_folder

    out = tmp_path / "run"
    held = lock_run_folder(out)  # another run writing there (flock: a second open file is refused too)
    try:
        code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 1)
        assert code == 2, stdout + err
        text = message(err)
        assert str(out) in text and f"process {os.getpid()}" in text and "--out" in text
        assert "Traceback" not in err and not (out / "checkpoints").exists()
        code, _stdout, err = cli("run", "--resume", out)
        assert code == 2 and f"process {os.getpid()}" in message(err)
    finally:
        held.release()
    assert cli("run", TINY, "--out", out, "--max-steps", 1)[0] == 0  # free again once released


def test_a_lock_file_left_by_a_dead_process_blocks_nothing(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out.mkdir()
    (out / ".lock").write_text(dead.stdout)
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 1)
    assert code == 0, stdout + err


def test_two_runs_started_at_once_into_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ganstack", "run", str(TINY), "--out", str(out), "--max-steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=os.getcwd()) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outputs
    refused = outputs[[p.returncode for p in procs].index(2)]
    text = message(refused)
    assert ("is in use by another ganstack run" in text or "already holds a run" in text) and "Traceback" not in text


def test_the_writability_probe_leaves_another_runs_probe_alone(cli, tmp_path: Path) -> None:
    # Two runs started at once each probe the folder; with one shared probe name the first to finish
    # deleted the other's, which then failed "cannot write ... No such file or directory"
    out = tmp_path / "run"
    out.mkdir()
    (out / ".write-test").write_text("theirs")
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 1)
    assert code == 0, stdout + err
    assert (out / ".write-test").read_text() == "theirs"
    assert [p.name for p in out.iterdir() if p.name.startswith(".write-test")] == [".write-test"]


@pytest.mark.parametrize(("flag", "value"), [("--max-steps", "0"), ("--max-steps", "-3"),
                                             ("--max-minutes", "0"), ("--max-minutes", "-1.5")])
def test_non_positive_budgets_are_refused(cli, tmp_path: Path, flag: str, value: str) -> None:
    code, _out, err = cli("run", TINY, "--out", tmp_path / "run", flag, value)
    assert code == 2 and f"{flag} must be positive" in message(err) and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_recipe_budgets_must_be_positive(cli, tmp_path: Path) -> None:
    code, _out, err = cli("run", TINY, "--out", tmp_path / "run", "--set", "training.max_steps=0")
    assert code == 2 and "training.max_steps" in message(err)


def test_resume_accepts_the_checkpoint_file_of_a_run(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 2)[0] == 0
    code, stdout, err = cli("run", "--resume", out / "checkpoints" / "last.pt", "--max-steps", 3)
    assert code == 0, stdout + err
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["position"]["step"] == 3
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "checkpoints", "environment.json", "metrics.jsonl", "recipe.yaml", "samples"]


def test_a_second_interrupt_while_the_checkpoint_is_written_exits_130_with_it_whole(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ganstack.train.callbacks as callbacks

    real_save = callbacks.save_atomic
    calls: list[int] = []

    def interrupted_save(obj, path):  # noqa: ANN001
        calls.append(obj["position"]["step"])
        # the first Ctrl-C lands during step 2's checkpoint, the second during the final one
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, path)

    monkeypatch.setattr(callbacks, "save_atomic", interrupted_save)
    out = tmp_path / "run"
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 6, "--set", "training.epochs=5")
    assert code == 130, stdout + err
    assert calls == [2, 2] and "Traceback" not in stdout + err
    assert "Second interrupt" in stdout
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)  # whole: the write was finished
    assert ckpt["position"]["step"] == 2 and ckpt["resumable"] is True
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
