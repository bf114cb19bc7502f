"""What training promises beyond running: every example shown, exact resume with workers, evaluation
that changes nothing, declared requests, loss terms that never collide, honest messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY, MeanMetric, write

ONE_STAGE = "stages: {1: null}"


def variant(tmp_path: Path, body: str) -> Path:
    write(tmp_path / "base.yaml", TINY.read_text())
    return write(tmp_path / "variant.yaml", f"base: base.yaml\n{body}\n")


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def message(err: str) -> str:
    return " ".join(err.split())


# ------------------------------------------------------------------------------------------- data
def test_sampler_shows_every_example_under_several_processes() -> None:
    from ganstack.train.data import EpochSampler

    n, world, epochs = 5, 2, 12
    shown: set[int] = set()
    for epoch in range(epochs):
        shares = []
        for rank in range(world):
            sampler = EpochSampler(n, seed=3, rank=rank, world=world)
            sampler.set_position(0, epoch, 0)
            shares.append(list(sampler))
        assert [len(s) for s in shares] == [n // world] * world and not set(shares[0]) & set(shares[1])
        shown.update(i for share in shares for i in share)
    assert shown == set(range(n))  # the n % world left out differ from epoch to epoch


def test_resume_is_exact_with_data_loading_workers(cli, tmp_path: Path) -> None:
    workers = ("--set", "training.num_workers=2")
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("run", TINY, "--out", full, "--max-steps", 5, *workers)[0] == 0
    assert cli("run", TINY, "--out", part, "--max-steps", 3, *workers)[0] == 0  # stops mid-epoch
    code, out, err = cli("run", "--resume", part, "--max-steps", 5)
    assert code == 0, out + err
    assert same_weights(full, part)


# ------------------------------------------------------------------------------------- evaluation
def test_evaluation_during_training_changes_nothing_in_training(cli, tmp_path: Path) -> None:
    from ganstack.testing import registered_plugin

    plain, evaluated = tmp_path / "plain", tmp_path / "evaluated"
    assert cli("run", TINY, "--out", plain, "--max-steps", 4)[0] == 0
    with registered_plugin(MeanMetric(), "mean-metric"):
        code, out, err = cli("run", TINY, "--out", evaluated, "--max-steps", 4, "--set",
                             "evaluation={metrics: [mean-brightness], every: 1, n: 4}")
    assert code == 0, out + err
    # BatchNorm kept training on batch statistics: the weights are those of the run without evaluation
    assert same_weights(plain, evaluated)


# ------------------------------------------------------------------------------- declared requests
class _Requesting:
    from ganstack.hookspecs import hookimpl

    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        from torch import nn

        class Asks(nn.Module):
            requests = frozenset({"wrong_images", "depth_maps"})

            def __init__(self, options, ctx) -> None:  # noqa: ANN001
                super().__init__()

            def d_terms(self, step):  # noqa: ANN001
                return {}

            def g_terms(self, step):  # noqa: ANN001
                return {}

        register("loss", "asks-for-depth", Asks)


def test_wrong_class_loss_gets_wrong_images_by_its_declared_request(tmp_path: Path) -> None:
    from ganstack.recipe.resolve import load_recipe
    from ganstack.train.trainer import Trainer

    asked = variant(tmp_path, "stages: {0: {losses: [{type: matching-aware, wrong: class}, {type: kl}]}}")
    trainer = Trainer(load_recipe(asked), tmp_path / "run", report=lambda _m: None)
    assert trainer.dataset.want_wrong is True and "wrong_images" in trainer.dataset[0]
    plain = Trainer(load_recipe(TINY), tmp_path / "run2", report=lambda _m: None)
    assert plain.dataset.want_wrong is False and "wrong_images" not in plain.dataset[0]


def test_an_unknown_request_is_refused_with_the_component_path(cli, tmp_path: Path) -> None:
    from ganstack.testing import registered_plugin

    recipe = variant(tmp_path, "stages: {1: {losses: [{type: matching-aware}, {type: asks-for-depth}]}}")
    with registered_plugin(_Requesting(), "requesting"):
        code, _out, err = cli("run", recipe, "--out", tmp_path / "run", "--max-steps", 1)
    text = message(err)
    assert code == 2 and "stages[1].losses[1]" in text and "'depth_maps'" in text and "wrong_images" in text
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------ loss terms
class _Echo:
    """A loss whose discriminator term is named like the matching-aware loss's ``d_real``."""

    from ganstack.hookspecs import hookimpl

    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        from torch import nn

        class Echo(nn.Module):
            def __init__(self, options, ctx) -> None:  # noqa: ANN001
                super().__init__()

            def d_terms(self, step):  # noqa: ANN001
                return {"d_real": step.real.new_tensor(1.0)}

            def g_terms(self, step):  # noqa: ANN001
                return {}

        register("loss", "echo-d-real", Echo)


def test_two_losses_naming_a_term_alike_stop_with_both_key_paths(cli, tmp_path: Path) -> None:
    from ganstack.testing import registered_plugin

    recipe = variant(tmp_path, "stages: {0: {losses: [{type: matching-aware}, {type: kl}, {type: echo-d-real}]}}")
    with registered_plugin(_Echo(), "echo"):
        code, out, err = cli("run", recipe, "--out", tmp_path / "run", "--max-steps", 1)
    text = message(err)
    assert code == 2, out + err
    assert "stages[0].losses[0]" in text and "stages[0].losses[2]" in text and "'d_real'" in text
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------- NaN guard
class _GeneratorNaN:
    from ganstack.hookspecs import hookimpl

    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        from torch import nn

        class GNaN(nn.Module):
            def __init__(self, options, ctx) -> None:  # noqa: ANN001
                super().__init__()

            def d_terms(self, step):  # noqa: ANN001
                return {}

            def g_terms(self, step):  # noqa: ANN001
                return {"exploding_g": step.real.new_tensor(float("nan"))}

        register("loss", "generator-nan", GNaN)


def test_joint_nan_names_the_stage_whose_term_failed_and_says_no_checkpoint_exists(cli, tmp_path: Path) -> None:
    from ganstack.testing import registered_plugin

    recipe = variant(tmp_path, "stages: {0: {losses: [{type: matching-aware}, {type: generator-nan}]}}\n"
                     "training: {nan_patience: 3, schedule: joint}")
    out = tmp_path / "run"
    with registered_plugin(_GeneratorNaN(), "gnan"):
        code, stdout, err = cli("run", recipe, "--out", out, "--max-steps", 10)
    text = message(err)
    assert code == 2, stdout + err
    assert "stage 1 loss term 'exploding_g' was not finite for 3 steps in a row" in text
    assert "no checkpoint had been written yet" in text and "last good checkpoint" not in text
    assert not (out / "checkpoints" / "last.pt").exists()


# ------------------------------------------------------------------------------------ init_from
def test_init_from_a_checkpoint_without_text_encoder_state_prepares_the_encoder(cli, tmp_path: Path) -> None:
    first = tmp_path / "stage1"
    assert cli("run", variant(tmp_path, ONE_STAGE), "--out", first, "--max-steps", 1)[0] == 0
    path = first / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("text_encoder.")}
    torch.save(ckpt, path)
    recipe = write(tmp_path / "two.yaml", f"base: base.yaml\nstages: {{0: {{init_from: {path}, epochs: 0}}}}\n")
    code, out, err = cli("run", recipe, "--out", tmp_path / "two", "--max-steps", 1)
    assert code == 0, out + err
    state = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["text_encoder._extra_state"]["vocabulary"]  # built by prepare() on the training data


# --------------------------------------------------------------------------------- amp and compile
def test_fp16_on_cpu_says_the_run_trains_in_fp32(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 1, "--set", "training.amp=fp16")
    assert code == 0, stdout + err
    text = message(stdout)
    assert "training.amp is 'fp16'" in text and "fp32" in text and "bf16" in text
    assert json.loads((out / "environment.json").read_text())["amp_active"] is False


@pytest.mark.parametrize(("flags", "native"), [("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
                                              ("fpu avx512f amx_bf16 amx_tile", True),
                                              ("fpu avx2 avx512f avx512bw avx512_vnni", False)])
def test_amp_auto_is_bf16_only_on_a_cpu_with_bf16_instructions(tmp_path: Path, flags: str, native: bool) -> None:
    from ganstack.build.devices import amp_dtype, cpu_computes_bf16

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
                    f"flags\t\t: {flags}\n")
    assert cpu_computes_bf16(info) is native
    assert cpu_computes_bf16(tmp_path / "absent") is False  # not Linux: fp32 unless bf16 is asked for
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ganstack.build.devices.cpu_computes_bf16", lambda: native)
        assert amp_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)
        assert amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16  # asked for: emulated or not


def test_amp_auto_run_records_the_precision_it_chose_and_says_nothing(cli, tmp_path: Path) -> None:
    from ganstack.build.devices import cpu_computes_bf16

    out = tmp_path / "run"
    code, stdout, err = cli("run", TINY, "--out", out, "--max-steps", 1, "--set", "training.amp=auto")
    assert code == 0, stdout + err
    assert "training.amp is" not in message(stdout)
    env = json.loads((out / "environment.json").read_text())
    assert env["amp"] == "auto" and env["amp_dtype"] == ("bfloat16" if cpu_computes_bf16() else None)


def test_a_bare_off_in_a_recipe_is_explained(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {TINY}\ntraining: {{amp: off}}\n")
    code, stdout, err = cli("run", recipe, "--out", tmp_path / "run", "--max-steps", 1)
    assert code == 2 and "Traceback" not in err
    text = " ".join(err.split())
    assert "training.amp" in text and "got False" in text and "quote the word" in text and "'off'" in text
    assert not (tmp_path / "run").exists()


def test_compile_falling_back_to_eager_is_reported(tmp_path: Path) -> None:
    import logging

    from ganstack.recipe.resolve import load_recipe
    from ganstack.train.trainer import Trainer

    lines: list[str] = []
    trainer = Trainer(load_recipe(variant(tmp_path, "training: {compile: true}")), tmp_path / "run",
                      report=lines.append, max_steps=1)
    handler = trainer._compile_report
    assert handler is not None
    logging.getLogger("torch._dynamo").addHandler(handler)
    try:  # what dynamo logs when a function hits its limit (torch/_dynamo/convert_frame.py)
        for _ in range(2):
            logging.getLogger("torch._dynamo.convert_frame").warning(
                "torch._dynamo hit config.%s (%s)\n   function: %s\n   last reason: %s\n", "recompile_limit", 8,
                "'forward' (stage.py:10)", "grad mode changed")
    finally:
        logging.getLogger("torch._dynamo").removeHandler(handler)
    said = [line for line in lines if "training.compile" in line]
    assert len(said) == 1 and "'forward' (stage.py:10)" in said[0] and "uncompiled" in said[0]


# ------------------------------------------------------------------------------ shared conditioner
def test_a_conditioner_shared_by_two_stages_runs_once_and_has_one_owner(tmp_path: Path) -> None:
    from ganstack.build.stack import build_stack
    from ganstack.recipe.resolve import load_recipe
    from ganstack.train.state import TrainState

    resolved = load_recipe(TINY)
    stack = build_stack(resolved)
    shared = stack.stages[0].conditioner
    stack.stages[1].conditioner = shared  # one module object in both stages (StackGAN-v2)
    state = TrainState(stack, resolved.recipe, amp=None, device=torch.device("cpu"))
    state.start_ema(0.9)
    owners = [o for s in state.stages for o in (s.generator, s.discriminator)]
    counted = [id(p) for o in owners for group in o.optimizer.param_groups for p in group["params"]]
    assert sorted(counted) == sorted({id(p) for p in stack.parameters()} - {id(p) for p in stack.text_encoder.parameters()})
    assert all(id(p) in {id(q) for q in state.stages[0].generator.params} for p in shared.parameters())
    generator_side = {id(p) for p in stack.text_encoder.parameters()} | {
        id(p) for s in stack.stages for m in (s.conditioner, s.generator) for p in m.parameters()}
    assert state.ema is not None and len(state.ema.parameters()) == len(generator_side)

    calls: list[int] = []
    shared.register_forward_hook(lambda *_a: calls.append(1))
    outs = stack.generate(torch.randn(2, int(stack.text_encoder.dim)), torch.randn(2, stack.noise_dim))
    assert len(calls) == 1 and outs[0][0] is outs[1][0]  # computed once, the same condition for both


# ------------------------------------------------------------------------ checkpoints of before
def test_a_checkpoint_of_the_previous_layout_resumes_exactly(cli, tmp_path: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("run", TINY, "--out", full, "--max-steps", 4)[0] == 0
    assert cli("run", TINY, "--out", part, "--max-steps", 2)[0] == 0
    path = part / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    optimisers = ckpt.pop("optimisers")  # as ganstack wrote it before the train state: flat lists
    ckpt["g_opts"] = [s["generator"]["optimizer"] for s in optimisers["stages"]]
    ckpt["d_opts"] = [s["discriminator"]["optimizer"] for s in optimisers["stages"]]
    ckpt["schedulers"] = [s[side]["scheduler"] for s in optimisers["stages"] for side in ("generator", "discriminator")]
    text = optimisers["text_encoder"]
    ckpt["text_opt"] = text["optimizer"] if text else None
    del ckpt["rng_ranks"]
    torch.save(ckpt, path)
    code, out, err = cli("run", "--resume", part, "--max-steps", 4)
    assert code == 0, out + err
    assert same_weights(full, part)
