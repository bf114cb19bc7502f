"""A checkpoint is checked for what it holds, not just its format: `sample`, `eval` and `ganstack.load`
refuse one without a recipe, with weights that do not fit it, with NaN weights, or that asks the
safe loader for a global, with one paragraph and exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import TINY
from ganstack.errors import CheckpointError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ganstack.cli.main import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["run", str(TINY), "--out", str(out), "--max-steps", "2"]) == 0
    return out


def _edited(tiny_run: Path, tmp_path: Path, edit) -> Path:
    ckpt = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return path


def _refused(cli, path: Path, *expected: str, command: tuple[str, ...] = ("sample",)) -> str:
    extra = ("--text", "a red circle", "--out", path.parent / "s") if command == ("sample",) else (
        "--metric", "shapes-alignment", "--n", "4", "--out", path.parent / "eval.json")
    code, out, err = cli(*command, path, *extra)
    message = " ".join(err.split())
    assert code == 2, out + err
    assert "Traceback" not in out + err and str(path) in message and "Fix:" in message
    for text in expected:
        assert text in message, message
    assert not (path.parent / "s").exists() and not (path.parent / "eval.json").exists()
    return message


def test_a_checkpoint_without_its_recipe(cli, tiny_run: Path, tmp_path: Path) -> None:
    path = _edited(tiny_run, tmp_path, lambda c: c.pop("recipe"))
    _refused(cli, path, "carries no recipe")
    with pytest.raises(CheckpointError, match="carries no recipe"):
        __import__("ganstack").load(path)


def test_weights_that_do_not_fit_the_recipe(cli, tiny_run: Path, tmp_path: Path) -> None:
    def wider(ckpt: dict) -> None:
        ckpt["recipe"]["stages"][0]["generator"]["ngf"] = 16

    message = _refused(cli, _edited(tiny_run, tmp_path, wider), "do not fit the recipe", "stages.0.generator")
    assert "of a different shape" in message


def test_weights_with_missing_tensors(cli, tiny_run: Path, tmp_path: Path) -> None:
    def drop(ckpt: dict) -> None:
        for key in ("model", "ema"):
            if ckpt.get(key):
                ckpt[key] = {k: v for k, v in ckpt[key].items() if not k.startswith("stages.1.")}

    _refused(cli, _edited(tiny_run, tmp_path, drop), "do not fit the recipe", "missing (stages.1.")


def test_nan_weights_are_refused_for_sample_and_eval(cli, tiny_run: Path, tmp_path: Path) -> None:
    def poison(ckpt: dict) -> None:
        for key in ("model", "ema"):
            if ckpt.get(key):
                ckpt[key] = {k: torch.full_like(v, float("nan")) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                             for k, v in ckpt[key].items()}

    path = _edited(tiny_run, tmp_path, poison)
    _refused(cli, path, "NaN or infinite", "earlier checkpoint")
    _refused(cli, path, "NaN or infinite", command=("eval",))


def test_one_infinite_weight_is_enough(cli, tiny_run: Path, tmp_path: Path) -> None:
    def one(ckpt: dict) -> None:
        for key in ("model", "ema"):
            if ckpt.get(key):
                name = next(k for k, v in ckpt[key].items() if k.startswith("stages.1.generator")
                            and isinstance(v, torch.Tensor) and v.is_floating_point())
                ckpt[key][name] = ckpt[key][name].clone().flatten().index_fill(0, torch.tensor([0]), float("inf")
                                                                               ).view_as(ckpt[key][name])

    _refused(cli, _edited(tiny_run, tmp_path, one), "1 of its", "stages.1.generator")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned > owned.txt",))


def test_a_checkpoint_that_asks_for_a_global_is_refused_not_called_corrupt(cli, tiny_run: Path,
                                                                          tmp_path: Path) -> None:
    path = _edited(tiny_run, tmp_path, lambda c: c.__setitem__("extra", _Evil()))
    message = _refused(cli, path, "refused to load", "system'", "ganstack import")
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "corrupt" not in message and "truncated" not in message
    assert not Path("owned.txt").exists()


def test_every_torch_file_reader_names_a_refused_global_without_unsafe_advice(tmp_path: Path) -> None:
    """Inception weights and pretrained encoders are read by the same rule as checkpoints."""
    from ganstack.errors import UserError
    from ganstack.train.encoder_pretraining import load_pretrained
    from ganstack_defaults.metrics.inception import load_inception
    from ganstack_defaults.text.bow import BagOfWordsEncoder, BowOptions

    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(1), "x": _Evil()}, evil)
    for load in (lambda: load_inception(evil, torch.device("cpu")),
                 lambda: load_pretrained(evil, BagOfWordsEncoder(BowOptions(dim=4, max_vocab=8)))):
        with pytest.raises(UserError) as info:
            load()
        message = str(info.value)
        assert "refused to load" in message and "system'" in message and str(evil) in message
        assert "weights_only" not in message and "False" not in message
    assert not Path("owned.txt").exists()


def test_embeddings_whose_header_claims_more_than_the_file_holds(cli, tiny_run: Path, tmp_path: Path) -> None:
    from numpy.lib import format as npy

    path = tmp_path / "emb.npy"
    with path.open("wb") as fh:
        npy.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
        fh.write(bytes(64))
    code, out, err = cli("sample", tiny_run, "--embeddings", path, "--out", tmp_path / "s")
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in out + err and str(path) in message and "--embeddings" in message
