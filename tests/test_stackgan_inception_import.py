"""`ganstack import stackgan-inception`: StackGAN's TF-slim CUB Inception variables to a state dict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_fid_inception import _convs

from ganstack.cli.main import main
from ganstack_defaults.metrics.inception import load_network

# The TF inception library's scopes, block by block as its inception_v3 creates them: each
# ops.conv2d in a branch scope is named Conv, Conv_1, Conv_2, ... (TF's unique scope names).
TF_BLOCKS = (
    [("mixed_35x35x256a", [("branch1x1", 1), ("branch5x5", 2), ("branch3x3dbl", 3), ("branch_pool", 1)]),
     ("mixed_35x35x288a", [("branch1x1", 1), ("branch5x5", 2), ("branch3x3dbl", 3), ("branch_pool", 1)]),
     ("mixed_35x35x288b", [("branch1x1", 1), ("branch5x5", 2), ("branch3x3dbl", 3), ("branch_pool", 1)]),
     ("mixed_17x17x768a", [("branch3x3", 1), ("branch3x3dbl", 3)])]
    + [(f"mixed_17x17x768{c}", [("branch1x1", 1), ("branch7x7", 3), ("branch7x7dbl", 5), ("branch_pool", 1)])
       for c in "bcde"]
    + [("mixed_17x17x1280a", [("branch3x3", 2), ("branch7x7x3", 4)])]
    + [(f"mixed_8x8x2048{c}", [("branch1x1", 1), ("branch3x3", 3), ("branch3x3dbl", 4), ("branch_pool", 1)])
       for c in "ab"])


def tf_scopes() -> list[str]:
    scopes = [f"conv{i}" for i in range(5)]
    for block, branches in TF_BLOCKS:
        for branch, count in branches:
            scopes += [f"{block}/{branch}/Conv" + (f"_{i}" if i else "") for i in range(count)]
    return scopes


def tf_variables(classes: int = 51, averages: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Variables shaped as the checkpoint holds them ([kh, kw, in, out]; no gamma), with EMA copies."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    scopes = tf_scopes()
    assert len(scopes) == len(_convs()) == 94
    for scope, (_name, cin, cout, kh, kw) in zip(scopes, _convs(), strict=True):
        out[f"{scope}/weights"] = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32) * (2 / (kh * kw * cin)) ** 0.5
        out[f"{scope}/BatchNorm/beta"] = rng.standard_normal(cout).astype(np.float32) * 0.1
        out[f"{scope}/BatchNorm/moving_mean"] = rng.standard_normal(cout).astype(np.float32) * 0.1
        out[f"{scope}/BatchNorm/moving_variance"] = rng.random(cout).astype(np.float32) + 0.5
    out["logits/logits/weights"] = rng.standard_normal((2048, classes)).astype(np.float32) * 0.02
    out["logits/logits/biases"] = rng.standard_normal(classes).astype(np.float32) * 0.1
    if averages:
        for name in list(out):
            out[name + "/ExponentialMovingAverage"] = out[name] * 0.5  # distinguishable from the raw value
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    variables = tf_variables()
    path = tmp_path_factory.mktemp("tf") / "birds_valid299.npz"
    np.savez(path, **variables)
    return path, variables


def test_import_maps_every_variable_and_prefers_the_moving_averages(checkpoint, tmp_path: Path, capsys) -> None:
    path, tf = checkpoint
    out = tmp_path / "stackgan_inception.pt"
    assert main(["import", "stackgan-inception", str(path), "--out", str(out)]) == 0
    assert "94 convolutions" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    ema = "/ExponentialMovingAverage"
    spot = {"Conv2d_2b_3x3.conv.weight": "conv2/weights",
            "Mixed_7b.branch3x3_2b.conv.weight": "mixed_8x8x2048a/branch3x3/Conv_2/weights",
            "Mixed_6b.branch7x7dbl_5.conv.weight": "mixed_17x17x768b/branch7x7dbl/Conv_4/weights",
            "Mixed_7a.branch7x7x3_4.conv.weight": "mixed_17x17x1280a/branch7x7x3/Conv_3/weights"}
    for key, name in spot.items():
        assert torch.equal(state[key], torch.from_numpy(tf[name + ema]).permute(3, 2, 0, 1))
    assert torch.equal(state["Mixed_5b.branch_pool.bn.running_var"],
                       torch.from_numpy(tf["mixed_35x35x256a/branch_pool/Conv/BatchNorm/moving_variance" + ema]))
    assert torch.equal(state["Mixed_5b.branch_pool.bn.bias"],
                       torch.from_numpy(tf["mixed_35x35x256a/branch_pool/Conv/BatchNorm/beta" + ema]))
    assert torch.equal(state["Conv2d_1a_3x3.bn.weight"], torch.ones(32))  # the library's batch norm has no gamma
    assert torch.equal(state["fc.weight"], torch.from_numpy(tf["logits/logits/weights" + ema]).T)
    backbone = load_network("stackgan-inception", out, torch.device("cpu"))
    logits, _ = backbone(torch.zeros(1, 3, 8, 8))
    assert logits.shape == (1, 50)  # 51 classes, the background dropped
    raw = tmp_path / "raw.pt"
    assert main(["import", "stackgan-inception", str(path), "--out", str(raw), "--raw-variables"]) == 0
    assert torch.equal(torch.load(raw, weights_only=True)["fc.bias"], torch.from_numpy(tf["logits/logits/biases"]))


def test_the_converted_kernel_computes_tensorflows_convolution(checkpoint, tmp_path: Path) -> None:
    path, tf = checkpoint
    out = tmp_path / "s.pt"
    assert main(["import", "stackgan-inception", str(path), "--out", str(out)]) == 0
    weight = torch.load(out, weights_only=True)["Mixed_6b.branch7x7_2.conv.weight"]  # a 1x7 kernel
    w_tf = tf["mixed_17x17x768b/branch7x7/Conv_1/weights/ExponentialMovingAverage"]  # [1, 7, in, out]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 9, 128)).astype(np.float32)  # NHWC, as TF holds it
    expected = np.zeros((1, 2, 3, 128))
    for h in range(2):  # TF's VALID conv2d: y[h, w, o] = sum_ijc x[h+i, w+j, c] W[i, j, c, o]
        for w in range(3):
            expected[0, h, w] = np.einsum("ijc,ijco->o", x[0, h:h + 1, w:w + 7], w_tf)
    ours = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), weight).permute(0, 2, 3, 1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_import_errors_are_user_errors(checkpoint, tmp_path: Path, capsys) -> None:
    path, tf = checkpoint
    partial = tmp_path / "partial.npz"
    np.savez(partial, **{k: v for k, v in tf.items() if "mixed_8x8x2048b/branch_pool" not in k})
    assert main(["import", "stackgan-inception", str(partial), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "mixed_8x8x2048b/branch_pool/Conv/weights" in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()
    assert main(["import", "stackgan-inception", str(tmp_path / "model.ckpt"), "--out", str(tmp_path / "y.pt")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert ("needs TensorFlow" in err or "TensorFlow cannot read" in err) and "Traceback" not in err
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    assert main(["import", "stackgan-inception", str(other), "--out", str(tmp_path / "z.pt")]) == 2
    assert "conv0/weights" in capsys.readouterr().err


def test_a_leading_scope_is_accepted(checkpoint, tmp_path: Path) -> None:
    path, tf = checkpoint
    scoped = tmp_path / "scoped.npz"
    np.savez(scoped, **{f"tower_0/{k}": v for k, v in tf.items()})
    out = tmp_path / "scoped.pt"
    assert main(["import", "stackgan-inception", str(scoped), "--out", str(out)]) == 0
    assert torch.equal(torch.load(out, weights_only=True)["fc.bias"],
                       torch.from_numpy(tf["logits/logits/biases/ExponentialMovingAverage"]))
