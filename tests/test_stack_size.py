"""Sizes are estimated before anything is allocated: a stack that cannot fit is refused by `check`,
`check --params` and `run` with the estimate and the key path, and `sample` draws large requests in
batches that give the same images."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from conftest import TINY
from ganstack.build import estimate
from ganstack.build.stack import build_stack, estimate_stack
from ganstack.recipe.resolve import load_recipe

HUGE = ("--set", "stages.0.generator.ngf=100000")


@pytest.mark.parametrize("command", [("check",), ("check", "--params"), ("run", "--max-steps", "1")])
def test_a_width_that_cannot_fit_is_refused_quickly(cli, tmp_path: Path, command: tuple[str, ...]) -> None:
    out = ("--out", tmp_path / "run") if command[0] == "run" else ()
    start = time.monotonic()
    code, stdout, err = cli(*command, TINY, *HUGE, *out)
    assert time.monotonic() - start < 60  # nothing of the hundreds of TiB is allocated
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in stdout + err, stdout + err
    assert str(TINY) in message and "stages[0].generator" in message and "TiB" in message and "Fix:" in message
    assert "parameters" in message and "has" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_estimate_is_the_real_parameter_count() -> None:
    resolved = load_recipe(TINY, [])
    size = estimate_stack(resolved)
    stack = build_stack(resolved)
    assert size is not None
    assert size.total == sum(p.numel() for p in stack.parameters())
    assert size.params["stages[1].discriminator"] == sum(p.numel() for p in stack.stages[1].discriminator.parameters())
    assert size.params["text_encoder"] == sum(p.numel() for p in stack.text_encoder.parameters())


def test_the_refusal_compares_with_the_memory_there_is(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    size = estimate_stack(load_recipe(TINY, []))
    assert size is not None
    weights = size.total * 4
    stage = max(sum(p.numel() for p in s.parameters()) for s in build_stack(load_recipe(TINY, [])).stages)
    assert size.optimiser_bytes() == 3 * 4 * stage  # gradients and Adam's two moments of the largest stage
    assert 0 < size.activation_bytes() and size.batch == 8
    assert size.training_bytes() == weights + size.optimiser_bytes() + size.activation_bytes()
    # enough for the weights but not for training: check (which counts training) refuses, sampling would not
    monkeypatch.setattr(estimate, "host_memory", lambda: size.training_bytes() - 1)
    code, _out, err = cli("check", TINY)
    message = " ".join(err.split())
    assert code == 2 and "training needs at least" in message and "Adam's moments" in message
    estimate.require_fits(size, for_training=False, device="cpu", file=None)  # weights alone fit
    monkeypatch.setattr(estimate, "host_memory", lambda: size.training_bytes())
    assert cli("check", TINY)[0] == 0


def test_a_batch_whose_activations_cannot_fit_is_refused_naming_the_stage(cli) -> None:
    code, out, err = cli("check", TINY, "--set", "training.batch_size=100000000")
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in out + err
    assert "one batch of 100000000 keeps for the backward pass in stages[1]" in message
    assert "stages[1]:" in message and "lower training.batch_size" in message


def test_activations_scale_with_the_batch_and_halve_with_amp() -> None:
    small = estimate_stack(load_recipe(TINY, []))
    double = estimate_stack(load_recipe(TINY, ["training.batch_size=16"]))
    half = estimate_stack(load_recipe(TINY, ["training.amp=bf16"]))
    assert small is not None and double is not None and half is not None
    assert double.activations == {k: 2 * v for k, v in small.activations.items()}
    assert half.activations == {k: v // 2 for k, v in small.activations.items()}


def test_sample_draws_in_batches_with_the_same_images(tmp_path: Path) -> None:
    import ganstack
    from ganstack.cli.main import main

    out = tmp_path / "run"
    assert main(["run", str(TINY), "--out", str(out), "--max-steps", "1"]) == 0
    model = ganstack.load(out)
    texts = ["a red circle", "a blue square on white", "a green triangle"]
    whole = model.generate(texts, n=5, seed=11)
    calls: list[int] = []
    real = model.stack.generate

    def counting(text, z, **kwargs):
        calls.append(len(text))
        return real(text, z, **kwargs)

    model.stack.generate = counting
    model.batch_size = 4
    batched = model.generate(texts, n=5, seed=11)
    assert calls == [4, 4, 4, 3]  # 15 images, at most 4 at a time
    for a, b in zip(whole.images, batched.images, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    # sample i of every caption uses seed SEED+i alone: caption 2's sample 3 is the same drawn alone
    alone = model.generate([texts[2]], n=1, seed=14)
    assert torch.allclose(alone.images[-1][0], batched.image(2, 3, 1), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ganstack.cli.main import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["run", str(TINY), "--out", str(out), "--max-steps", "1"]) == 0
    return out


@pytest.mark.parametrize("flags", [("--text", "a red circle", "--n", "1000000000"),
                                   ("--text", "a red circle", "--ca-variations", "1000000000"),
                                   ("--interpolate", "a red circle", "a blue square", "--steps", "1000000000")])
def test_a_request_too_large_to_hold_is_refused_at_once(cli, tiny_run: Path, tmp_path: Path,
                                                         flags: tuple[str, ...]) -> None:
    start = time.monotonic()
    code, out, err = cli("sample", tiny_run, *flags, "--out", tmp_path / "s")
    assert time.monotonic() - start < 60
    message = " ".join(err.split())
    flag = next(f for f in flags if f in ("--n", "--ca-variations", "--steps"))
    assert code == 2 and "Traceback" not in out + err and f"{flag}:" in message and "1,000,000,000 images" in message
    assert "higher --seed continues" in message and not (tmp_path / "s").exists()


def test_the_contact_sheet_shows_its_first_rows_and_the_manifest_all(cli, tiny_run: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from PIL import Image

    from ganstack.sample import draw

    out = tmp_path / "s"
    assert cli("sample", tiny_run, "--text", "a red circle", "--n", 3, "--out", tmp_path / "all")[0] == 0
    monkeypatch.setattr(draw, "SHEET_ROWS", 2)
    assert cli("sample", tiny_run, "--text", "a red circle", "--n", 3, "--out", out)[0] == 0
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3 * 2
    assert all(json.loads(line)["file"] for line in (out / "manifest.jsonl").read_text().splitlines())
    full, capped = Image.open(tmp_path / "all" / "contact_sheet.png"), Image.open(out / "contact_sheet.png")
    assert full.width == capped.width and capped.height < full.height
    assert full.height - capped.height == (full.height - 16 - 4) // 3  # exactly one row fewer


def test_the_activation_estimate_is_a_lower_bound_of_what_autograd_keeps() -> None:
    """Measured on a real forward pass with gradients: the estimate never exceeds it, so a refusal
    never turns away a batch that would fit."""
    resolved = load_recipe(TINY, [])
    size = estimate_stack(resolved)
    stack = build_stack(resolved).train()
    assert size is not None
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(size.batch, int(stack.text_encoder.dim), generator=gen)
    z = torch.randn(size.batch, stack.noise_dim, generator=gen)
    prev = None
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    for i, stage in enumerate(stack.stages):
        kept.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            cond = stage.conditioner(text, None)
            prev = stage.generator(z if i == 0 else None, cond, prev)
        generator_kept = sum(kept.values())
        kept.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            d = stage.discriminator
            d.cond_logits(d.features(prev.image), cond, text)
        discriminator_kept = sum(kept.values())
        assert 0 < size.activations[f"stages[{i}]"] <= max(generator_kept, discriminator_kept), i
