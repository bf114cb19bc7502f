"""``stages[i].init_from``: a new run's stage from another run's checkpoint gets the checks a resumed or
sampled checkpoint gets (tensors, every key, the shapes, finite values), and a bad file is one
paragraph naming it, the recipe key and a fix, before anything is trained."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import TINY, write


def _damaged(ckpt: dict, how: str) -> dict:
    model = dict(ckpt["model"])
    first = next(k for k in model if k.startswith("stages.0.generator.") and model[k].is_floating_point())
    if how == "nan":  # a run that diverged
        model[first] = torch.full_like(model[first], float("nan"))
    elif how == "inf-text":
        key = next(k for k in model if k.startswith("text_encoder.") and torch.is_tensor(model[k])
                   and model[k].is_floating_point())
        model[key] = torch.full_like(model[key], float("inf"))
    elif how == "shape":
        model[first] = torch.zeros(3, 3)
    elif how == "missing":
        del model[first]
    elif how == "string":
        model[first] = "weights"
    elif how == "no-model":
        return {k: v for k, v in ckpt.items() if k != "model"}
    elif how == "list":
        model = [1, 2, 3]
    else:
        raise AssertionError(how)
    return {**ckpt, "model": model}


def test_a_bad_init_from_checkpoint_is_refused_by_name_before_training(cli, tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", TINY.read_text())
    first = tmp_path / "stage1"
    assert cli("run", write(tmp_path / "one.yaml", "base: base.yaml\nstages: {1: null}\n"), "--out", first,
               "--max-steps", 1)[0] == 0
    good = torch.load(first / "checkpoints" / "last.pt", weights_only=True)
    for how, said in [("nan", "NaN or infinite"), ("inf-text", "NaN or infinite"), ("shape", "different shape"),
                      ("missing", "missing"), ("string", "not a mapping of tensors"), ("no-model", "no weights"),
                      ("list", "not a mapping of tensors")]:
        bad = tmp_path / f"{how}.pt"
        torch.save(_damaged(good, how), bad)
        recipe = write(tmp_path / f"{how}.yaml", f"base: base.yaml\nstages: {{0: {{init_from: {bad}, epochs: 0}}}}\n")
        out = tmp_path / f"run-{how}"
        code, stdout, err = cli("run", recipe, "--out", out, "--max-steps", 1)
        text = " ".join(err.split())
        assert code == 2, (how, stdout + err)
        assert "Traceback" not in stdout + err and text.count("Fix:") == 1, (how, text)
        assert str(recipe) in text and "stages[0].init_from" in text and str(bad) in text, (how, text)
        assert said in text, (how, text)
        assert not (out / "checkpoints").exists()  # refused before a step was trained
