"""The literature's Inception judges: pytorch-fid's network (structure, every key and shape of its
weights file), StackGAN's CUB model, their input scaling and resize, and their class logits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ganstack.errors import UserError
from ganstack_defaults.metrics.inception import (
    INPUT_SIZE,
    load_network,
    preprocess_pytorch_fid,
    preprocess_stackgan,
)
from ganstack_defaults.metrics.tf_inception import TFInceptionA, TFInceptionC, TFInceptionE, tf_inception_v3

CPU = torch.device("cpu")


# ------------------------------------------------------------- the weights file's layout
def _convs() -> list[tuple[str, int, int, int, int]]:
    """Every BasicConv2d of Inception-v3 as (name, in, out, kh, kw), written out from the
    TensorFlow graph's layer table (Szegedy et al. 2015, Table 1, and the TF model's widths)."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
             ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    for block, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs += [(f"{block}.branch1x1", cin, 64, 1, 1), (f"{block}.branch5x5_1", cin, 48, 1, 1),
                  (f"{block}.branch5x5_2", 48, 64, 5, 5), (f"{block}.branch3x3dbl_1", cin, 64, 1, 1),
                  (f"{block}.branch3x3dbl_2", 64, 96, 3, 3), (f"{block}.branch3x3dbl_3", 96, 96, 3, 3),
                  (f"{block}.branch_pool", cin, pool, 1, 1)]
    convs += [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    for block, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += [(f"{block}.branch1x1", 768, 192, 1, 1), (f"{block}.branch7x7_1", 768, c, 1, 1),
                  (f"{block}.branch7x7_2", c, c, 1, 7), (f"{block}.branch7x7_3", c, 192, 7, 1),
                  (f"{block}.branch7x7dbl_1", 768, c, 1, 1), (f"{block}.branch7x7dbl_2", c, c, 7, 1),
                  (f"{block}.branch7x7dbl_3", c, c, 1, 7), (f"{block}.branch7x7dbl_4", c, c, 7, 1),
                  (f"{block}.branch7x7dbl_5", c, 192, 1, 7), (f"{block}.branch_pool", 768, 192, 1, 1)]
    convs += [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
              ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
              ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    for block, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs += [(f"{block}.branch1x1", cin, 320, 1, 1), (f"{block}.branch3x3_1", cin, 384, 1, 1),
                  (f"{block}.branch3x3_2a", 384, 384, 1, 3), (f"{block}.branch3x3_2b", 384, 384, 3, 1),
                  (f"{block}.branch3x3dbl_1", cin, 448, 1, 1), (f"{block}.branch3x3dbl_2", 448, 384, 3, 3),
                  (f"{block}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{block}.branch3x3dbl_3b", 384, 384, 3, 1),
                  (f"{block}.branch_pool", cin, 192, 1, 1)]
    return convs


def file_layout(classes: int = 1008, batches_tracked: bool = False) -> dict[str, tuple[int, ...]]:
    """Key -> shape of pytorch-fid's pt_inception-2015-12-05-6726825d.pth (``classes`` 1008)."""
    layout: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in _convs():
        layout[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for part in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.bn.{part}"] = (cout,)
        if batches_tracked:
            layout[f"{name}.bn.num_batches_tracked"] = ()
    layout["fc.weight"] = (classes, 2048)
    layout["fc.bias"] = (classes,)
    return layout


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("conv.weight"):
            state[key] = torch.randn(shape, generator=gen) * (2 / (shape[1] * shape[2] * shape[3])) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    return state


def test_the_network_has_every_key_and_shape_of_pytorch_fids_file_and_no_other() -> None:
    layout = file_layout()
    assert len(_convs()) == 94 and len(layout) == 94 * 5 + 2
    net = tf_inception_v3(num_classes=1008, last_pool="max")
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == layout
    assert net.AuxLogits is None


def test_the_mixed_blocks_are_tensorflows() -> None:
    net = tf_inception_v3(num_classes=1008, last_pool="max")
    assert all(isinstance(getattr(net, b), TFInceptionA) for b in ("Mixed_5b", "Mixed_5c", "Mixed_5d"))
    assert all(isinstance(getattr(net, b), TFInceptionC) for b in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"))
    assert (net.Mixed_7b.pool, net.Mixed_7c.pool) == ("avg", "max")
    assert tf_inception_v3(num_classes=51, last_pool="avg").Mixed_7c.pool == "avg"
    assert not net.transform_input


def test_the_pool_branches_average_without_padding_and_7c_takes_the_max() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 2048, 5, 5) + 1
    block = TFInceptionE(2048, pool="max").eval()
    pooled = torch.zeros_like(x)
    for i in range(5):  # max over the 3x3 window inside the image, by hand
        for j in range(5):
            pooled[..., i, j] = x[..., max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].amax(dim=(-2, -1))
    with torch.no_grad():
        assert torch.allclose(block(x)[:, -192:], block.branch_pool(pooled), atol=1e-5)
    a = TFInceptionA(4, pool_features=3).eval()
    ones = torch.ones(1, 4, 4, 4)
    with torch.no_grad():  # a constant image stays constant under an average that ignores the padding
        out = a(ones)[:, -3:]
        assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-6)
        padded_mean = F.avg_pool2d(ones, 3, 1, 1)  # torchvision's: the corners see 4/9
        assert not torch.allclose(a.branch_pool(padded_mean), out, atol=1e-3)


@pytest.mark.parametrize("batches_tracked", [False, True])
def test_a_file_with_pytorch_fids_keys_loads_strictly(tmp_path: Path, batches_tracked: bool) -> None:
    state = random_state(file_layout(batches_tracked=batches_tracked))
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    backbone = load_network("pytorch-fid", path, CPU)
    loaded = backbone.net.state_dict()
    assert torch.equal(loaded["Mixed_7c.branch_pool.conv.weight"], state["Mixed_7c.branch_pool.conv.weight"])
    assert torch.equal(loaded["Conv2d_1a_3x3.bn.running_var"], state["Conv2d_1a_3x3.bn.running_var"])
    assert torch.equal(backbone.fc.weight, state["fc.weight"])
    strict = tf_inception_v3(num_classes=1008, last_pool="max")
    strict.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
                           | {k: v for k, v in strict.state_dict().items() if k.endswith("num_batches_tracked")})


def test_pool3_features_and_bias_free_logits(tmp_path: Path) -> None:
    state = random_state(file_layout())
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    backbone = load_network("pytorch-fid", path, CPU)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    logits, pool = backbone(images)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.allclose(logits, pool @ state["fc.weight"].T, atol=1e-4)  # OpenAI's IS: no bias
    net = tf_inception_v3(num_classes=1008, last_pool="max")
    net.load_state_dict(state, strict=False)
    net.eval()
    with torch.no_grad():  # pool3 is the 2048-d average after Mixed_7c, before dropout and fc
        net.fc = torch.nn.Identity()
        assert torch.allclose(pool, net(preprocess_pytorch_fid(images)), atol=1e-5)


def test_the_stackgan_model_drops_its_background_class(tmp_path: Path) -> None:
    state = random_state(file_layout(classes=51))
    path = tmp_path / "stackgan.pt"
    torch.save(state, path)
    backbone = load_network("stackgan-inception", path, CPU)
    logits, pool = backbone(torch.zeros(1, 3, 16, 16))
    assert logits.shape == (1, 50)
    assert torch.allclose(logits, (pool @ state["fc.weight"].T + state["fc.bias"])[:, 1:], atol=1e-4)


# ------------------------------------------------------------------ scaling and resize
def _bilinear_1d(values: np.ndarray, out: int) -> np.ndarray:
    """Half-pixel-centred linear interpolation with edge clamping, written from its definition."""
    n = len(values)
    result = np.empty(out)
    for d in range(out):
        src = max((d + 0.5) * n / out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n - 1)
        i1 = min(i0 + 1, n - 1)
        w = src - i0
        result[d] = (1 - w) * values[i0] + w * values[i1]
    return result


def test_pytorch_fid_input_is_8_bit_levels_resized_bilinearly_then_scaled_to_minus_one_one() -> None:
    # a 2x2 image whose columns differ: -1 and 0.3 -> levels 0 and round(1.3 * 127.5) = 166
    image = torch.tensor([[-1.0, 0.3], [-1.0, 0.3]]).expand(1, 3, 2, 2)
    out = preprocess_pytorch_fid(image)
    assert out.shape == (1, 3, INPUT_SIZE, INPUT_SIZE)
    row = _bilinear_1d(np.array([0.0, 166.0]) / 255, INPUT_SIZE) * 2 - 1
    np.testing.assert_allclose(out[0, 1, 150].numpy(), row, atol=1e-6)
    assert out[0, 0, 0, 0].item() == pytest.approx(-1.0) and out[0, 0, 0, -1].item() == pytest.approx(166 / 255 * 2 - 1)
    assert torch.allclose(out[0, 0], out[0, 0, :1].expand(INPUT_SIZE, INPUT_SIZE), atol=1e-6)  # only columns vary


@pytest.mark.parametrize("size", [64, 256])
def test_stackgan_input_matches_pils_bilinear_resize_as_scipy_imresize_did(size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    levels = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
    image = levels.float() / 127.5 - 1  # exactly these 8-bit levels
    ours = (preprocess_stackgan(image[None])[0] + 1) * 127.5
    pil = Image.fromarray(levels.permute(1, 2, 0).numpy()).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    reference = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() <= 1.0 + 1e-4  # one 8-bit level of rounding at most
    assert torch.allclose(ours, ours.round(), atol=1e-4)  # 8-bit levels, as imresize returns


# ---------------------------------------------------------------------- wrong files
def test_a_torchvision_file_given_as_pytorch_fid_is_refused_with_a_hint(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    path = tmp_path / "imagenet.pt"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    with pytest.raises(UserError) as err:
        load_network("pytorch-fid", path, CPU)
    message = str(err.value)
    assert err.value.path == "weights" and "pytorch-fid" in message and "AuxLogits" in message
    assert "1000 classes" in message and "network `torchvision`" in message
    assert "pt_inception-2015-12-05-6726825d.pth" in message


def test_a_file_with_a_wrong_shape_names_the_entry(tmp_path: Path) -> None:
    state = random_state(file_layout())
    state["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"'Mixed_6b.branch7x7_2.conv.weight' \(\(128, 128, 7, 1\), not "
                                        r"\(128, 128, 1, 7\)\)"):
        load_network("pytorch-fid", path, CPU)


def test_tensorflow_variables_are_pointed_to_the_converter(tmp_path: Path) -> None:
    path = tmp_path / "tf.pt"
    torch.save({"conv0/weights": torch.zeros(3, 3, 3, 32), "fc.weight": torch.zeros(51, 2048)}, path)
    with pytest.raises(UserError, match="ganstack import stackgan-inception"):
        load_network("stackgan-inception", path, CPU)


def test_pool3_equals_pytorch_fids_own_code(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An end-to-end check against pytorch-fid itself (a test-only dependency, in the `test` extra)."""
    import pytorch_fid.inception as reference
    state = random_state(file_layout(), seed=3)
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    monkeypatch.setattr(reference, "load_state_dict_from_url", lambda *a, **k: dict(state))  # no download
    theirs = reference.InceptionV3([3]).eval()
    levels = torch.randint(0, 256, (3, 3, 64, 64), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        expected = theirs(levels / 255)[0].flatten(1)  # it reads PNGs as [0, 1]
    _, pool = load_network("pytorch-fid", path, CPU)(levels / 127.5 - 1)
    assert torch.allclose(pool, expected, atol=1e-6)
