"""Training end to end on tiny shapes stacks: schedules, outputs, exact resume, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import GLIBC, TINY, MeanMetric, write

ONE_STAGE = "stages: {1: null}"
THREE_STAGES = ("stages:\n  2:\n    conditioner: {type: ca, condition_dim: 8}\n"
                "    generator: {type: stackgan-refiner, ngf: 8, scale: 2, residual_blocks: 1, input: features,"
                " detach_input: false}\n    discriminator: {type: matching-aware, ndf: 4}\n"
                "    losses: [{type: matching-aware}, {type: kl}, {type: colour-consistency}]\n")


def variant(tmp_path: Path, body: str) -> Path:
    write(tmp_path / "base.yaml", TINY.read_text())
    return write(tmp_path / "variant.yaml", f"base: base.yaml\n{body}\n")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


@pytest.mark.parametrize(("stages", "schedule", "steps"), [(1, "stagewise", 3), (2, "stagewise", 9),
                                                           (2, "joint", 3), (3, "stagewise", 14),
                                                           (3, "joint", 3)])
def test_stacks_train_end_to_end(cli, tmp_path: Path, stages: int, schedule: str, steps: int) -> None:
    extra = {1: ONE_STAGE, 2: "", 3: THREE_STAGES}[stages]
    recipe = variant(tmp_path, extra)
    code, out, err = cli("run", recipe, "--out", tmp_path / "run", "--max-steps", steps,
                         "--set", f"training.schedule={schedule}")
    assert code == 0, out + err
    lines = metrics(tmp_path / "run")
    assert len(lines) == steps
    last = lines[-1]
    trained = range(1, stages + 1) if schedule == "joint" else [last["stage"]]
    for k in trained:
        for term in ("d_real", "d_wrong", "d_fake", "g_fake", "kl", "d_total"):
            assert f"stage{k}/{term}" in last, (k, term, sorted(last))
    assert last["stage"] == stages  # stagewise: 6 steps a stage, so the last steps train the last stage
    if stages == 3:
        assert "stage3/colour_mean" in last and "stage3/colour_cov" in last
        assert "stage2/d_fake_uncond" in lines[-1] if schedule == "joint" else True
    assert all(v == v for line in lines for v in line.values() if isinstance(v, float))  # no NaN


def test_run_writes_every_output(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 4)
    assert code == 0, stdout + err
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["stages"][1]["generator"]["scale"] == 2 and resolved["training"]["batch_size"] == 8
    env = json.loads((out / "environment.json").read_text())
    for key in ("ganstack", "torch", "device", "seed", "amp", "channels_last", "compile", "plugins", "git_commit"):
        assert key in env
    assert env["retain_memory"] is GLIBC  # on by default for CPU runs where the C library allows it
    line = metrics(out)[-1]
    for key in ("step", "epoch", "stage", "images_per_s", "time_s", "lr/stage1/g", "lr/stage1/d", "g_total"):
        assert key in line
    sheets = sorted((out / "samples").glob("*.png"))
    assert [p.name for p in sheets] == ["step_0000002.png", "step_0000004.png"]
    sheet = Image.open(sheets[-1])
    # 3 caption rows, a caption column and one column per stage (cells at least 96 px)
    assert sheet.height >= 3 * 96 and sheet.width >= 220 + 2 * 96
    assert (out / "checkpoints" / "last.pt").is_file()
    assert "ganstack run --resume" in stdout
    assert "step 4/4 stage 1 epoch 0 D1=" in stdout and "min left" in stdout  # plain progress lines


def test_snapshots_are_kept_on_their_own_count_not_only_when_last_pt_is_written(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 4, "--set", "output.keep_every=2",
               "--set", "output.checkpoint_every=3")[0] == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt", "step_0000002.pt", "step_0000004.pt"]


def test_kept_snapshots_hold_weights_only_and_are_refused_by_resume(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 4, "--set", "output.keep_every=2",
               "--set", "training.ema=0.9")[0] == 0
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.pt", "step_0000002.pt", "step_0000004.pt"]
    snap = torch.load(ckpts / "step_0000004.pt", weights_only=True)
    last = torch.load(ckpts / "last.pt", weights_only=True)
    assert snap["resumable"] is False and "optimisers" not in snap and "d_opts" not in snap and snap["position"]["step"] == 4
    weights = [k for k, v in last["ema"].items() if isinstance(v, torch.Tensor)]
    assert weights and all(torch.equal(snap["ema"][k], last["ema"][k]) for k in weights)
    assert (ckpts / "step_0000004.pt").stat().st_size < 0.75 * (ckpts / "last.pt").stat().st_size
    code, stdout, err = cli("sample", ckpts / "step_0000002.pt", "--text", "a red circle", "--out", tmp_path / "s")
    assert code == 0, stdout + err
    code, stdout, err = cli("run", "--resume", ckpts / "step_0000002.pt")
    assert code == 2 and "kept snapshot" in err and "ganstack run --resume RUN_DIR" in err, stdout + err
    assert "Traceback" not in err


def test_bf16_autocast_trains_on_cpu_and_keeps_fp32_weights(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 3, "--set", "training.amp=bf16")
    assert code == 0, stdout + err
    env = json.loads((out / "environment.json").read_text())
    assert env["amp"] == "bf16" and env["amp_active"] is True
    assert all(v == v for line in metrics(out) for v in line.values() if isinstance(v, float))  # no NaN
    model = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert {v.dtype for v in model.values() if torch.is_tensor(v) and v.is_floating_point()} == {torch.float32}


# the port's way: Stage-II at its own batch size (3 steps an epoch), Stage-I left in training mode; the
# run stops inside Stage-II's block, so the resume starts mid-epoch at that block's batch size
PORT_WAY = "stages: {1: {batch_size: 16, epochs: 2}}\ntraining: {finished_stages: train}"


@pytest.mark.parametrize(("body", "stop"), [(None, 5), (PORT_WAY, 8)])
def test_resume_is_bit_exact_across_a_stage_boundary(cli, tmp_path: Path, body: str | None, stop: int) -> None:
    recipe = TINY if body is None else variant(tmp_path, body)
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("run", recipe, "--out", full, "--max-steps", 9)[0] == 0
    assert cli("run", recipe, "--out", part, "--max-steps", stop)[0] == 0  # TINY: inside stage 1 (6 steps)
    code, out, err = cli("run", "--resume", part, "--max-steps", 9)
    assert code == 0, out + err
    timing = ("images_per_s", "time_s")  # wall-clock readings differ, everything else must not
    strip = [{k: v for k, v in line.items() if k not in timing} for line in metrics(full)]
    assert strip == [{k: v for k, v in line.items() if k not in timing} for line in metrics(part)]
    assert metrics(part)[-1]["time_s"] > metrics(part)[4]["time_s"]  # training time adds up across resumes
    a, b = weights(full), weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# A resumed run can end an epoch before any optimizer step; torch's scheduler warning is noise there.
@pytest.mark.filterwarnings("error:Detected call of")
def test_sigterm_checkpoints_and_resumes_exactly(cli, tmp_path: Path) -> None:
    run = tmp_path / "signalled"
    proc = subprocess.Popen([sys.executable, "-m", "ganstack", "run", str(TINY), "--out", str(run),
                             "--set", "training.epochs=50"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=os.getcwd())
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "SIGTERM received" in output and f"ganstack run --resume {run}" in " ".join(output.split())
    stopped = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["position"]["step"]
    assert stopped >= 3
    target = stopped + 2
    assert cli("run", "--resume", run, "--max-steps", target)[0] == 0
    full = tmp_path / "full"
    assert cli("run", TINY, "--out", full, "--max-steps", target, "--set", "training.epochs=50")[0] == 0
    a, b = weights(full), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 1)[0] == 0
    before = (out / "checkpoints" / "last.pt").read_bytes()
    code, _out, err = cli("run", TINY, "--out", out, "--max-steps", 1)
    assert code == 2 and "already holds a run" in err and "--resume" in err
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "foreign", "garbage"])
def test_corrupt_checkpoint_is_named(cli, tmp_path: Path, damage: str) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 1)[0] == 0
    ckpt = out / "checkpoints" / "last.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    else:
        ckpt.write_bytes(os.urandom(4096))
    code, stdout, err = cli("run", "--resume", out)
    assert code == 2 and "Traceback" not in stdout + err
    message = " ".join(err.split())
    assert str(ckpt) in message and "Fix:" in message


def test_unwritable_output_folder(cli, tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "not a folder")
    code, _out, err = cli("run", TINY, "--out", blocker / "run", "--max-steps", 1)
    assert code == 2
    assert "cannot write to the output folder" in err and "--out" in err


def test_disk_full_keeps_previous_checkpoint(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 2)[0] == 0
    good = (out / "checkpoints" / "last.pt").read_bytes()

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    code, _out, err = cli("run", "--resume", out, "--max-steps", 4)
    assert code == 2 and "No space left on device" in err and "previous checkpoint is intact" in err
    assert (out / "checkpoints" / "last.pt").read_bytes() == good
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]


class _NaNAfter:
    """A plugin whose loss turns NaN after a few discriminator steps."""

    from ganstack.hookspecs import hookimpl

    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        import attrs
        from torch import nn

        @attrs.define(frozen=True)
        class Options:
            after: int = 2
            generator_too: bool = False

        class NaNAfter(nn.Module):
            def __init__(self, options, ctx) -> None:  # noqa: ANN001
                super().__init__()
                self.after = options.after
                self.generator_too = options.generator_too
                self.calls = 0

            def d_terms(self, step):  # noqa: ANN001
                self.calls += 1
                value = step.real.new_tensor(float("nan") if self.calls > self.after else 0.0)
                return {"exploding": value}

            def g_terms(self, step):  # noqa: ANN001
                nan = self.generator_too and self.calls > self.after
                return {"exploding_g": step.real.new_tensor(float("nan"))} if nan else {}

        register("loss", "nan-after", NaNAfter, options=Options)


def test_a_non_finite_phase_leaves_weights_optimiser_and_ema_untouched(tmp_path: Path) -> None:
    from ganstack.recipe.resolve import load_recipe
    from ganstack.testing import registered_plugin
    from ganstack.train.trainer import Trainer

    recipe = variant(tmp_path, "stages: {0: {losses: [{type: matching-aware}, {type: nan-after, after: 1,"
                     " generator_too: true}]}, 1: null}\ntraining: {ema: 0.9}")
    with registered_plugin(_NaNAfter(), "nan-plugin"):
        trainer = Trainer(load_recipe(recipe), tmp_path / "run", report=lambda _m: None)
        batch = trainer.to_device(next(iter(trainer.loader(0, 0, 0))))

        def snapshot() -> list[torch.Tensor]:
            stage = trainer.state.stages[0]
            opt_steps = [st["step"] for o in (stage.discriminator.optimizer, stage.generator.optimizer)
                         for st in o.state.values()]
            ema = trainer.state.ema
            return [t.detach().clone() for t in (*trainer.stack.parameters(), *ema.parameters(),
                                                  *ema.buffers(), *opt_steps)]

        trainer.step(batch, [0])  # finite: everything moves
        before = snapshot()
        trainer.step(batch, [0])  # NaN in both phases: skipped on the device
        after = snapshot()
    assert len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert trainer.guard.skipped == 0  # not read back yet: no host sync in the step
    trainer.guard.resolve()
    assert (trainer.guard.skipped, trainer.guard.in_a_row) == (1, 1)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(cli, tmp_path: Path) -> None:
    from ganstack.testing import registered_plugin

    recipe = variant(tmp_path, "stages: {0: {losses: [{type: matching-aware}, {type: nan-after, after: 2}]}}\n"
                     "training: {nan_patience: 3}")
    out = tmp_path / "run"
    with registered_plugin(_NaNAfter(), "nan-plugin"):
        code, stdout, err = cli("run", recipe, "--out", out, "--max-steps", 10)
    assert code == 2, stdout + err
    message = " ".join(err.split())
    assert "stage 1 loss term 'exploding' was not finite for 3 steps in a row" in message
    assert "last good checkpoint was kept" in message
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["position"]["step"] == 2  # no checkpoint is written while steps are being skipped
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if torch.is_tensor(v) and v.is_floating_point())


def test_stage_initialised_from_another_runs_checkpoint(cli, tmp_path: Path) -> None:
    first = tmp_path / "stage1"
    assert cli("run", variant(tmp_path, ONE_STAGE), "--out", first, "--max-steps", 2)[0] == 0
    trained = weights(first)
    # The paper's Stage-II run: Stage-I loaded from the first run and not trained again (epochs 0).
    recipe = write(tmp_path / "two.yaml", f"base: base.yaml\nstages: {{0: {{init_from: {first}, epochs: 0}}}}\n")
    code, out, err = cli("run", recipe, "--out", tmp_path / "two", "--max-steps", 2)
    assert code == 0, out + err
    assert [line["stage"] for line in metrics(tmp_path / "two")] == [2, 2]
    after = weights(tmp_path / "two")
    stage1 = [k for k in trained if k.startswith(("stages.0.", "text_encoder."))]
    assert stage1 and all(torch.equal(after[k], trained[k]) for k in stage1)
    bad = write(tmp_path / "bad.yaml", f"base: base.yaml\nstages: {{0: {{init_from: {tmp_path / 'none.pt'}}}}}\n")
    code, _out, err = cli("run", bad, "--out", tmp_path / "bad", "--max-steps", 1)
    assert code == 2 and "stages[0].init_from" in err


def test_tensorboard_without_the_extra_says_how_to_install(cli, tmp_path: Path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):  # noqa: ANN001
        if name == "torch.utils.tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, _out, err = cli("run", TINY, "--out", tmp_path / "run", "--max-steps", 1, "--set", "output.tensorboard=true")
    assert code == 2 and 'pip install "ganstack[tensorboard]"' in " ".join(err.split())


def test_evaluation_during_training_logs_and_keeps_the_best(cli, tmp_path: Path) -> None:
    from ganstack.testing import registered_plugin

    out = tmp_path / "run"
    with registered_plugin(MeanMetric(), "mean-metric"):
        code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 4, "--set",
                                "evaluation={metrics: [mean-brightness], every: 2, n: 4, best: mean-brightness/brightness}")
    assert code == 0, stdout + err
    evals = [line for line in metrics(out) if "eval/mean-brightness/brightness" in line]
    assert [line["step"] for line in evals] == [2, 4]
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    values = [line["eval/mean-brightness/brightness"] for line in evals]
    assert best["counters"]["best"] == max(values)
    assert best["position"]["step"] == [2, 4][values.index(max(values))]
