"""`ganstack eval --protocol`: the literature's settings applied, recorded, and their errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from test_fid_inception import file_layout, random_state

from conftest import TINY
from ganstack.evaluate.protocols import PROTOCOLS


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ganstack.cli.main import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["run", str(TINY), "--out", str(out), "--max-steps", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file with the keys and shapes of pytorch-fid's, random values (not the released file)."""
    path = tmp_path_factory.mktemp("weights") / "pt_inception.pth"
    torch.save(random_state(file_layout()), path)
    return path


def test_the_cub_protocol_scores_fid_with_pytorch_fids_network_and_records_it(
        cli, tiny_run: Path, fid_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    code, stdout, err = cli("eval", tiny_run, "--protocol", "cub", "--metric", "fid", "--n", 4,
                            "--option", f"fid.weights={fid_weights}", "--option", f"cache_dir={tmp_path / 'c'}",
                            "--out", out)
    assert code == 0, stdout + err
    record = json.loads(out.read_text())
    results = record["results"]
    assert math.isfinite(results["fid/fid"]) and results["fid/fid"] > 0
    assert results["fid/network"] == "pytorch-fid"
    assert results["fid/weights_sha256"] == hashlib.sha256(fid_weights.read_bytes()).hexdigest()
    assert "not the released file" in results["fid/note"]  # random weights: not 6726825d...
    assert record["n"] == 4
    assert record["protocol"]["name"] == "cub"
    assert record["protocol"]["n"] == {"inception-score": 29_330, "fid": 30_000}
    assert record["protocol"]["metrics"]["fid"] == {"network": "pytorch-fid", "split": "test", "captions": "all",
                                                    "stage": None}
    assert "not comparable" in record["protocol"]["note"] and "not comparable" in stdout
    assert [p.name.split("-")[0] for p in (tmp_path / "c").glob("*.pt")] == ["fid"]  # the reference is cached


def test_the_cub_protocol_sets_is_and_fid_as_the_literature_does() -> None:
    cub = PROTOCOLS["cub"]
    is_, fid = cub.metrics["inception-score"], cub.metrics["fid"]
    # IS: StackGAN's CUB model, 10 splits over 10 images per test image's caption (2,933 x 10)
    assert (is_["network"], is_["splits"], is_["num_classes"], is_["captions"]) == ("stackgan-inception", 10, 50, "single")
    assert cub.n["inception-score"] == 2_933 * 10
    # FID: pytorch-fid's network on 30,000 images drawn from every test caption in turn
    assert (fid["network"], fid["captions"], cub.n["fid"]) == ("pytorch-fid", "all", 30_000)
    assert is_["split"] == fid["split"] == "test" and is_["stage"] is fid["stage"] is None


def test_protocol_errors_are_one_paragraph_with_exit_2(cli, tiny_run: Path, tmp_path: Path) -> None:
    code, _o, err = cli("eval", tiny_run, "--protocol", "cub", "--metric", "fid")
    assert code == 2 and "needs its weights file" in err and "pt_inception-2015-12-05-6726825d.pth" in err
    assert "--option fid.weights=PATH" in " ".join(err.split())
    code, _o, err = cli("eval", tiny_run, "--protocol", "cub", "--metric", "r-precision")
    assert code == 2 and "does not define 'r-precision'" in err
    code, _o, err = cli("eval", tiny_run, "--protocol", "cub", "--metric", "fid", "--option",
                        "fid.network=torchvision", "--option", "fid.weights=x.pt")
    assert code == 2 and "changes what the cub protocol fixes" in " ".join(err.split())
    code, _o, err = cli("eval", tiny_run, "--metric", "fid", "--option", "inception-score.splits=3")
    assert code == 2 and "names no chosen metric" in err and "Traceback" not in err
    code, _o, err = cli("eval", tiny_run, "--protocol", "cub")  # both metrics: the IS file is asked for
    assert code == 2 and "ganstack import stackgan-inception" in " ".join(err.split())


def test_a_foreign_weights_file_under_the_protocol_is_a_user_error(cli, tiny_run: Path, tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    imagenet = tmp_path / "imagenet.pt"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), imagenet)
    code, stdout, err = cli("eval", tiny_run, "--protocol", "cub", "--metric", "fid", "--n", 2,
                            "--option", f"fid.weights={imagenet}", "--option", f"cache_dir={tmp_path / 'c'}")
    assert code == 2, stdout + err
    text = " ".join(err.split())
    assert "do not fit the `pytorch-fid` network" in text and str(imagenet) in text
    assert "fid.weights" in text  # checked before any image is generated, named by metric
    assert "network `torchvision`" in text and "Traceback" not in err
    assert len([line for line in err.strip().splitlines() if not line.strip()]) == 0  # one paragraph
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a torch file")
    code, _o, err = cli("eval", tiny_run, "--protocol", "cub", "--metric", "fid", "--n", 2,
                        "--option", f"fid.weights={junk}", "--option", f"cache_dir={tmp_path / 'c'}")
    assert code == 2 and "cannot be loaded as a state dict" in " ".join(err.split()) and "Traceback" not in err


def test_scoped_options_reach_one_metric_without_a_protocol(cli, tiny_run: Path, fid_weights: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    code, stdout, err = cli("eval", tiny_run, "--metric", "fid", "--n", 3, "--option", "fid.network=pytorch-fid",
                            "--inception-weights", fid_weights, "--option", f"cache_dir={tmp_path / 'c'}",
                            "--out", out)
    assert code == 0, stdout + err
    record = json.loads(out.read_text())
    assert record["results"]["fid/network"] == "pytorch-fid" and "protocol" not in record


def test_a_protocol_scores_each_metric_on_its_own_number_of_images(
        cli, tiny_run: Path, fid_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import attrs

    small = attrs.evolve(PROTOCOLS["cub"], n={"inception-score": 10, "fid": 3})  # the real ones take hours on a CPU
    monkeypatch.setitem(PROTOCOLS, "cub", small)
    is_weights = tmp_path / "stackgan_inception.pt"
    torch.save(random_state(file_layout(classes=51)), is_weights)
    out = tmp_path / "eval.json"
    code, stdout, err = cli("eval", tiny_run, "--protocol", "cub", "--option", f"inception-score.weights={is_weights}",
                            "--option", f"fid.weights={fid_weights}", "--option", f"cache_dir={tmp_path / 'c'}",
                            "--out", out)
    assert code == 0, stdout + err
    record = json.loads(out.read_text())
    assert record["n"] == {"inception-score": 10, "fid": 3} and "note" not in record["protocol"]
    results = record["results"]
    assert results["inception-score/network"] == "stackgan-inception" and results["fid/network"] == "pytorch-fid"
    # 10 splits of one image each: each split's score is exp(KL(p || p)) = 1 exactly
    assert results["inception-score/is_mean"] == pytest.approx(1.0) and results["inception-score/is_std"] < 1e-6
    assert results["inception-score/weights_sha256"] == hashlib.sha256(is_weights.read_bytes()).hexdigest()
    assert "10 for inception-score / 3 for fid" in " ".join(stdout.split())


def test_every_metric_is_prepared_before_any_generates() -> None:
    from ganstack.errors import UserError
    from ganstack.evaluate.scoring import prepare_metrics
    from ganstack.interfaces import PreparedMetric

    calls: list[str] = []

    class Fine:
        def prepare(self) -> None:
            calls.append("fine.prepare")

        def evaluate(self, source, n):  # pragma: no cover - never reached
            calls.append("fine.evaluate")
            return {}

    class WrongFile:
        def prepare(self) -> None:
            raise UserError("the Inception weights x.pt do not fit", path="weights", fix="pass the right file")

        def evaluate(self, source, n):  # pragma: no cover - never reached
            return {}

    assert isinstance(WrongFile(), PreparedMetric)
    with pytest.raises(UserError) as err:
        prepare_metrics([("inception-score", Fine()), ("fid", WrongFile())])
    assert err.value.path == "fid.weights" and calls == ["fine.prepare"]
