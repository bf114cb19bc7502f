"""Training as the official StackGAN-Pytorch port trains: its wrong pairs (``wrong: port``), its frozen
Stage-I left in training mode (``training.finished_stages: train``) and a stage's own batch size.

The port's loss arithmetic is written out here from what its ``compute_discriminator_loss``,
``compute_generator_loss`` and ``KL_loss`` do (probabilities through ``BCELoss``; the wrong pairs
are images ``0..B-2`` with the conditions of examples ``1..B-1``, labelled fake), and compared
term by term with ganstack's loss modules on one batch with the same weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from conftest import TINY, write
from ganstack.build.stack import build_stack
from ganstack.interfaces import Condition, StepState
from ganstack.recipe.resolve import load_recipe

PORT_LOSSES = ("stages:\n"
               "  0: {losses: [{type: matching-aware, wrong: port}, {type: kl, coeff: 2.0}]}\n"
               "  1: {losses: [{type: matching-aware, wrong: port, uncond_weight: 1.0}, {type: kl, coeff: 2.0}]}\n")


def variant(tmp_path: Path, body: str, name: str = "variant.yaml") -> Path:
    write(tmp_path / "base.yaml", TINY.read_text())
    return write(tmp_path / name, f"base: base.yaml\n{body}\n")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def model(run: Path) -> dict[str, Tensor]:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


# ------------------------------------------------------------------ the port's arithmetic, written out
def bce(p: Tensor, label: float) -> Tensor:
    """``nn.BCELoss()`` on probabilities: the mean of -[y log p + (1 - y) log(1 - p)]."""
    y = torch.full_like(p, label)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def port_cond(d, features: Tensor, mu: Tensor, text: Tensor) -> Tensor:  # noqa: ANN001 - a discriminator
    """``netD.get_cond_logits(features, mu)``: the port's D outputs the sigmoid of the logit."""
    return torch.sigmoid(d.cond_logits(features, Condition(mu, mu, None), text))


def port_d_loss(d, real: Tensor, fake: Tensor, mu: Tensor, text: Tensor) -> dict[str, Tensor]:  # noqa: ANN001
    b = real.shape[0]
    real_f, fake_f = d.features(real), d.features(fake)  # real before fake, as the port
    real_c = bce(port_cond(d, real_f, mu, text), 1.0)
    wrong_c = bce(port_cond(d, real_f[: b - 1], mu[1:], text[1:]), 0.0)
    fake_c = bce(port_cond(d, fake_f, mu, text), 0.0)
    parts = {"real": real_c, "wrong": wrong_c, "fake": fake_c}
    real_u_logits = d.uncond_logits(real_f)
    if real_u_logits is None:  # Stage-I: no unconditional head
        parts["total"] = real_c + (fake_c + wrong_c) * 0.5
        return parts
    real_u = bce(torch.sigmoid(real_u_logits), 1.0)
    fake_u = bce(torch.sigmoid(d.uncond_logits(fake_f)), 0.0)
    parts.update(real_u=real_u, fake_u=fake_u, total=(real_c + real_u) / 2.0 + (fake_c + wrong_c + fake_u) / 3.0)
    return parts


def port_g_loss(d, fake: Tensor, mu: Tensor, logvar: Tensor, text: Tensor, kl_coeff: float) -> dict[str, Tensor]:  # noqa: ANN001
    fake_f = d.features(fake)
    err_g = bce(port_cond(d, fake_f, mu, text), 1.0)
    if d.uncond_logits(fake_f) is not None:
        err_g = err_g + bce(torch.sigmoid(d.uncond_logits(fake_f)), 1.0)
    kl = torch.mean(-(mu.pow(2) + logvar.exp()) + 1 + logvar) * -0.5
    return {"g": err_g, "kl": kl * kl_coeff, "total": err_g + kl * kl_coeff}


def num(t: Tensor) -> float:
    return float(t.detach())


# ---------------------------------------------------------------------------------------- one batch
@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("port")
    torch.manual_seed(5)
    stack = build_stack(load_recipe(variant(root, PORT_LOSSES))).double().train()
    b = 6
    text = torch.randn(b, 16, dtype=torch.float64)
    sizes = stack.resolutions
    data = {"stack": stack, "text": text, "stages": []}
    for k, stage in enumerate(stack.stages):
        for m in stage.discriminator.modules():  # BatchNorm away from (1, 0), so every pairing shows
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 2.0)
                m.bias.data.uniform_(-0.5, 0.5)
        cond = stage.conditioner(text)
        real = torch.rand(b, 3, sizes[k], sizes[k], dtype=torch.float64) * 2 - 1
        fake = torch.rand(b, 3, sizes[k], sizes[k], dtype=torch.float64) * 2 - 1
        data["stages"].append({"cond": Condition(*(t.detach() if t is not None else None for t in cond)),
                               "real": real, "fake": fake})
    return data


def _state(stack, k: int, s: dict, text: Tensor, phase: str, d=None) -> StepState:  # noqa: ANN001
    return StepState(stage=k, phase=phase, discriminator=d or stack.stages[k].discriminator, real=s["real"],
                     fake=s["fake"], condition=s["cond"], text=text)


@pytest.mark.parametrize("k", [0, 1])
def test_every_discriminator_term_is_the_ports(batch: dict, k: int) -> None:
    """Stage-I (conditional head only) and Stage-II (both heads): real, wrong, fake (and unconditional)
    terms and the total, each with the weight the port's total gives it; D's BatchNorm running statistics
    move as the port's do (same pairs, same rows, same order)."""
    stack, text, s = batch["stack"], batch["text"], batch["stages"][k]
    adversarial = stack.stages[k].losses[0]
    d_ours, d_port = copy.deepcopy(stack.stages[k].discriminator), copy.deepcopy(stack.stages[k].discriminator)
    terms = adversarial.d_terms(_state(stack, k, s, text, "d", d_ours))
    port = port_d_loss(d_port, s["real"], s["fake"], s["cond"].mu, text)
    if k == 0:
        expected = {"d_real": port["real"], "d_wrong": port["wrong"] / 2, "d_fake": port["fake"] / 2}
    else:
        expected = {"d_real": port["real"] / 2, "d_real_uncond": port["real_u"] / 2, "d_wrong": port["wrong"] / 3,
                    "d_fake": port["fake"] / 3, "d_fake_uncond": port["fake_u"] / 3}
    assert terms.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(num(terms[name]) - num(value)) < 1e-6, (name, num(terms[name]), num(value))
    assert abs(num(sum(terms.values())) - num(port["total"])) < 1e-6
    ours, theirs = d_ours.state_dict(), d_port.state_dict()
    buffers = [n for n in ours if "running_" in n]
    assert buffers and all(torch.allclose(ours[n], theirs[n], rtol=0, atol=1e-9) for n in buffers)


@pytest.mark.parametrize("k", [0, 1])
def test_the_generator_and_kl_terms_are_the_ports(batch: dict, k: int) -> None:
    stack, text, s = batch["stack"], batch["text"], batch["stages"][k]
    stage = stack.stages[k]
    state = _state(stack, k, s, text, "g")
    terms = {**stage.losses[0].g_terms(state), **stage.losses[1].g_terms(state)}
    port = port_g_loss(copy.deepcopy(stage.discriminator), s["fake"], s["cond"].mu, s["cond"].logvar, text, 2.0)
    g_ours = terms["g_fake"] + terms.get("g_fake_uncond", 0)
    assert ("g_fake_uncond" in terms) == (k == 1)
    assert abs(num(g_ours) - num(port["g"])) < 1e-6
    assert abs(num(terms["kl"]) - num(port["kl"])) < 1e-6
    assert abs(num(sum(terms.values())) - num(port["total"])) < 1e-6


def test_the_other_pairings_are_not_the_ports(batch: dict) -> None:
    """The comparison above can fail: ``wrong: shift`` (B rolled pairs), and the port's B-1 pairs cut
    from logits of all B rows (D's conditional BatchNorm then sees B rows), both differ from the port."""
    from ganstack_defaults.losses.plugin import AdversarialOptions, MatchingAwareLoss

    stack, text, s = batch["stack"], batch["text"], batch["stages"][0]
    d = copy.deepcopy(stack.stages[0].discriminator)
    port = port_d_loss(copy.deepcopy(d), s["real"], s["fake"], s["cond"].mu, text)
    shift = MatchingAwareLoss(AdversarialOptions(wrong="shift"), None).d_terms(_state(stack, 0, s, text, "d", d))
    assert abs(num(shift["d_wrong"]) - num(port["wrong"]) / 2) > 1e-4
    features = d.features(s["real"])
    all_rows = torch.sigmoid(d.cond_logits(features, Condition(*(t[[1, 2, 3, 4, 5, 0]] for t in s["cond"])),
                                           text[[1, 2, 3, 4, 5, 0]]))[:-1]
    assert abs(num(bce(all_rows, 0.0)) - num(port["wrong"])) > 1e-4


def test_wrong_port_is_a_documented_choice_and_others_are_refused(cli, tmp_path: Path) -> None:
    code, out, err = cli("plugins", "show", "loss:matching-aware", "--json")
    assert code == 0, out + err
    assert "port" in json.dumps(json.loads(out)) and "B-1 pairs" in out
    bad = variant(tmp_path, "stages: {0: {losses: [{type: matching-aware, wrong: next}]}}")
    code, out, err = cli("check", bad)
    assert code == 2 and "stages[0].losses[0]" in err and "Traceback" not in err


# ------------------------------------------------------------------------- finished stages in training
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_stage_ii_step_moves_the_frozen_stage_i_batchnorm_only_in_train_mode(cli, tmp_path: Path,
                                                                              mode: str) -> None:
    """Stage-I trains 6 steps; one more step trains Stage-II. With ``finished_stages: train`` that step
    moves Stage-I's BatchNorm running statistics (as the port's Stage-II does), never its weights."""
    recipe = variant(tmp_path, f"training: {{finished_stages: {mode}}}")
    before, after = tmp_path / "six", tmp_path / "seven"
    assert cli("run", recipe, "--out", before, "--max-steps", 6)[0] == 0
    code, out, err = cli("run", recipe, "--out", after, "--max-steps", 7)
    assert code == 0, out + err
    assert metrics(after)[-1]["stage"] == 2
    a, b = model(before), model(after)
    stage1 = [n for n in a if n.startswith("stages.0.") and ".discriminator." not in n]
    running = [n for n in stage1 if n.endswith(("running_mean", "running_var"))]
    weights = [n for n in stage1 if n.endswith(("weight", "bias"))]
    assert running and weights
    assert all(torch.equal(a[n], b[n]) for n in weights)  # frozen either way
    moved = [n for n in running if not torch.equal(a[n], b[n])]
    if mode == "train":
        assert moved == running  # every BatchNorm of Stage-I's generator saw the batch
    else:
        assert moved == []


def test_finished_stages_takes_only_eval_or_train(cli, tmp_path: Path) -> None:
    code, out, err = cli("check", variant(tmp_path, "training: {finished_stages: frozen}"))
    assert code == 2 and "finished_stages" in err and "Traceback" not in err


# ------------------------------------------------------------------------------- a stage's batch size
def test_a_stage_trains_at_its_own_batch_size(cli, tmp_path: Path) -> None:
    """48 examples: Stage-I at 8 is 6 steps an epoch, Stage-II at 16 is 3 (at 8 it would be 6)."""
    recipe = variant(tmp_path, "stages: {1: {batch_size: 16, epochs: 2}}")
    out = tmp_path / "run"
    code, stdout, err = cli("run", recipe, "--out", out)
    assert code == 0, stdout + err
    lines = metrics(out)
    assert [line["stage"] for line in lines] == [1] * 6 + [2] * 6
    assert [line["epoch"] for line in lines[6:]] == [0, 0, 0, 1, 1, 1]
    assert "step 12/12" in stdout  # the progress total counts each block at its own batch size
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["position"]["step"] == 12


def test_a_stage_batch_size_larger_than_the_data_is_refused(cli, tmp_path: Path) -> None:
    code, out, err = cli("run", variant(tmp_path, "stages: {1: {batch_size: 64}}"), "--out", tmp_path / "r")
    assert code == 2 and "stages[1].batch_size" in err and "Traceback" not in err


def test_the_joint_schedule_refuses_a_stage_batch_size_that_differs(cli, tmp_path: Path) -> None:
    recipe = variant(tmp_path, "stages: {1: {batch_size: 16}}\ntraining: {schedule: joint}")
    code, out, err = cli("check", recipe)
    assert code == 2 and "stages[1].batch_size" in err and "joint" in err and "Traceback" not in err
    same = variant(tmp_path, "stages: {1: {batch_size: 8}}\ntraining: {schedule: joint}", "same.yaml")
    assert cli("check", same)[0] == 0


@pytest.mark.parametrize("name", ["stackgan_cub", "stackgan_flowers", "stackgan_coco"])
def test_the_paper_recipes_train_as_the_port(name: str) -> None:
    from conftest import ROOT

    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml").recipe
    assert recipe.training.finished_stages == "train" and recipe.training.schedule == "stagewise"
    assert [stage.losses[0].options.wrong for stage in recipe.stages] == ["port", "port"]
    coco = name == "stackgan_coco"
    assert recipe.training.lr_decay_every == (20 if coco else 600)  # the port's coco_s*.yml; its default
    assert (recipe.training.batch_size, recipe.training.epochs) == ((128, 120) if coco else (64, 600))
    assert (recipe.stages[1].batch_size, recipe.stages[1].epochs) == ((40, 100) if coco else (None, None))
