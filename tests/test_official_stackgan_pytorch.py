"""`ganstack import stackgan-pytorch`: official StackGAN-Pytorch files in, the official outputs out.

The official files are rebuilt here from their documented layout (every key and shape of
STAGE1_G, STAGE1_D, STAGE2_G and STAGE2_D, written as PyTorch 0.3/0.4 did: legacy pickles without
``num_batches_tracked``, ``module.`` prefixes from DataParallel). The imported stack's images and
logits are compared with an independent forward pass of the official architecture, written below
with ``torch.nn.functional`` on the official state dicts (not with ganstack's modules).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_safe_pickle import py2_pickle
from torch import Tensor

from ganstack.interfaces import Condition

# ------------------------------------------------------------------ the official layout, by fact
Shape = tuple[int, ...]


def _bn(layout: dict[str, Shape], prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        layout[f"{prefix}.{name}"] = (channels,)
    layout[f"{prefix}.num_batches_tracked"] = ()


def stage1_g(gf: int = 128, ef: int = 128, text: int = 1024, z: int = 100) -> dict[str, Shape]:
    """STAGE1_G: CA, fc to 8gf x 4 x 4, four up blocks (upsample, conv, BN, ReLU), 3x3 conv to RGB."""
    ngf = 8 * gf
    layout: dict[str, Shape] = {"ca_net.fc.weight": (2 * ef, text), "ca_net.fc.bias": (2 * ef,),
                                "fc.0.weight": (ngf * 16, z + ef)}
    _bn(layout, "fc.1", ngf * 16)
    for k in range(1, 5):
        layout[f"upsample{k}.1.weight"] = (ngf >> k, ngf >> (k - 1), 3, 3)
        _bn(layout, f"upsample{k}.2", ngf >> k)
    layout["img.0.weight"] = (3, ngf >> 4, 3, 3)
    return layout


def stage2_g(gf: int = 128, ef: int = 128, text: int = 1024, z: int = 100, r: int = 4) -> dict[str, Shape]:
    """STAGE2_G: the Stage-I under STAGE1_G., then CA, image encoder, joint conv, r residual blocks, up."""
    layout = {f"STAGE1_G.{k}": v for k, v in stage1_g(gf, ef, text, z).items()}
    layout |= {"ca_net.fc.weight": (2 * ef, text), "ca_net.fc.bias": (2 * ef,), "encoder.0.weight": (gf, 3, 3, 3),
               "encoder.2.weight": (2 * gf, gf, 4, 4)}
    _bn(layout, "encoder.3", 2 * gf)
    layout["encoder.5.weight"] = (4 * gf, 2 * gf, 4, 4)
    _bn(layout, "encoder.6", 4 * gf)
    layout["hr_joint.0.weight"] = (4 * gf, ef + 4 * gf, 3, 3)
    _bn(layout, "hr_joint.1", 4 * gf)
    for i in range(r):
        for j in (0, 3):
            layout[f"residual.{i}.block.{j}.weight"] = (4 * gf, 4 * gf, 3, 3)
            _bn(layout, f"residual.{i}.block.{j + 1}", 4 * gf)
    for k in range(1, 5):
        layout[f"upsample{k}.1.weight"] = ((4 * gf) >> k, (4 * gf) >> (k - 1), 3, 3)
        _bn(layout, f"upsample{k}.2", (4 * gf) >> k)
    layout["img.0.weight"] = (3, gf // 4, 3, 3)
    return layout


def discriminator(df: int = 64, ef: int = 128, stage: int = 1) -> dict[str, Shape]:
    """STAGE1_D (four 4x4 s2 convs) or STAGE2_D (six, then two 3x3 convs back to 8df, and an uncond head)."""
    widths = [df << i for i in range(4 if stage == 1 else 6)]
    layout: dict[str, Shape] = {"encode_img.0.weight": (df, 3, 4, 4)}
    n = 2
    for a, b in itertools.pairwise(widths):
        layout[f"encode_img.{n}.weight"] = (b, a, 4, 4)
        _bn(layout, f"encode_img.{n + 1}", b)
        n += 3
    channels = widths[-1]
    while channels > 8 * df:
        layout[f"encode_img.{n}.weight"] = (channels // 2, channels, 3, 3)
        _bn(layout, f"encode_img.{n + 1}", channels // 2)
        n, channels = n + 3, channels // 2
    layout["get_cond_logits.outlogits.0.weight"] = (8 * df, 8 * df + ef, 3, 3)
    _bn(layout, "get_cond_logits.outlogits.1", 8 * df)
    layout |= {"get_cond_logits.outlogits.3.weight": (1, 8 * df, 4, 4), "get_cond_logits.outlogits.3.bias": (1,)}
    if stage == 2:
        layout |= {"get_uncond_logits.outlogits.0.weight": (1, 8 * df, 4, 4),
                   "get_uncond_logits.outlogits.0.bias": (1,)}
    return layout


def params(layout: dict[str, Shape]) -> int:
    return sum(math.prod(s) for k, s in layout.items() if not k.endswith(("running_mean", "running_var",
                                                                           "num_batches_tracked")))


# Reduced widths with the official layer structure: GF 8, DF 4, condition 8, text 16, z 10, R 2.
SMALL = {"gf": 8, "df": 4, "ef": 8, "text": 16, "z": 10, "r": 2}


def random_state(layout: dict[str, Shape], seed: int, *, legacy: bool = False) -> OrderedDict[str, Tensor]:
    """Weights of unit-variance outputs per layer, and BN statistics far from (0, 1), so that eval
    mode matters; ``legacy``: no num_batches_tracked, as PyTorch 0.3/0.4 wrote."""
    gen = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, Tensor] = OrderedDict()
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            if not legacy:
                state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.2 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # BN weight
            state[key] = 1 + 0.2 * torch.randn(shape, generator=gen)
        else:
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    return state


# --------------------------------------------------------- an independent official forward pass
def _sub(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _bn_eval(x: Tensor, s: dict[str, Tensor], p: str, train: bool = False) -> Tensor:
    """BatchNorm on the running statistics, or with ``train`` on the batch's own (running ones untouched)."""
    return F.batch_norm(x, s[f"{p}.running_mean"].clone(), s[f"{p}.running_var"].clone(), s[f"{p}.weight"],
                        s[f"{p}.bias"], training=train, eps=1e-5)


def _ca(s: dict[str, Tensor], text: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    x = F.relu(F.linear(text, s["ca_net.fc.weight"], s["ca_net.fc.bias"]))
    mu, logvar = x.chunk(2, dim=1)
    return eps * torch.exp(0.5 * logvar) + mu, mu


def _up(x: Tensor, s: dict[str, Tensor], p: str, train: bool) -> Tensor:
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    return F.relu(_bn_eval(F.conv2d(x, s[f"{p}.1.weight"], padding=1), s, f"{p}.2", train))


def official_stage1_g(s: dict[str, Tensor], text: Tensor, z: Tensor, eps: Tensor, *,
                      train: bool = False) -> tuple[Tensor, Tensor]:
    c, mu = _ca(s, text, eps)
    h = F.relu(_bn_eval(F.linear(torch.cat([z, c], 1), s["fc.0.weight"]), s, "fc.1", train))
    h = h.view(h.shape[0], -1, 4, 4)
    for k in range(1, 5):
        h = _up(h, s, f"upsample{k}", train)
    return torch.tanh(F.conv2d(h, s["img.0.weight"], padding=1)), mu


def official_stage2_g(s: dict[str, Tensor], text: Tensor, z: Tensor, eps1: Tensor, eps2: Tensor, *,
                      train: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    low, mu1 = official_stage1_g(_sub(s, "STAGE1_G."), text, z, eps1, train=train)
    h = F.relu(F.conv2d(low, s["encoder.0.weight"], padding=1))
    h = F.relu(_bn_eval(F.conv2d(h, s["encoder.2.weight"], stride=2, padding=1), s, "encoder.3", train))
    h = F.relu(_bn_eval(F.conv2d(h, s["encoder.5.weight"], stride=2, padding=1), s, "encoder.6", train))
    c, mu2 = _ca(s, text, eps2)
    h = torch.cat([h, c[:, :, None, None].repeat(1, 1, 16, 16)], 1)
    h = F.relu(_bn_eval(F.conv2d(h, s["hr_joint.0.weight"], padding=1), s, "hr_joint.1", train))
    i = 0
    while f"residual.{i}.block.0.weight" in s:
        p = f"residual.{i}.block"
        y = F.relu(_bn_eval(F.conv2d(h, s[f"{p}.0.weight"], padding=1), s, f"{p}.1", train))
        h = F.relu(h + _bn_eval(F.conv2d(y, s[f"{p}.3.weight"], padding=1), s, f"{p}.4", train))
        i += 1
    for k in range(1, 5):
        h = _up(h, s, f"upsample{k}", train)
    return low, torch.tanh(F.conv2d(h, s["img.0.weight"], padding=1)), mu1, mu2


def official_d(s: dict[str, Tensor], image: Tensor, mu: Tensor) -> tuple[Tensor, Tensor | None]:
    """The official D's logits (before its Sigmoid): conditional, and unconditional where it has one."""
    h = F.leaky_relu(F.conv2d(image, s["encode_img.0.weight"], stride=2, padding=1), 0.2)
    n = 2
    while f"encode_img.{n}.weight" in s:
        w = s[f"encode_img.{n}.weight"]
        stride = 2 if w.shape[-1] == 4 else 1
        h = F.leaky_relu(_bn_eval(F.conv2d(h, w, stride=stride, padding=1), s, f"encode_img.{n + 1}"), 0.2)
        n += 3
    p = "get_cond_logits.outlogits"
    x = torch.cat([h, mu[:, :, None, None].repeat(1, 1, 4, 4)], 1)
    x = F.leaky_relu(_bn_eval(F.conv2d(x, s[f"{p}.0.weight"], padding=1), s, f"{p}.1"), 0.2)
    cond = F.conv2d(x, s[f"{p}.3.weight"], s[f"{p}.3.bias"], stride=4).view(-1)
    if "get_uncond_logits.outlogits.0.weight" not in s:
        return cond, None
    u = "get_uncond_logits.outlogits.0"
    return cond, F.conv2d(h, s[f"{u}.weight"], s[f"{u}.bias"], stride=4).view(-1)


# ------------------------------------------------------------------------------ files on disk
def save_legacy(state: dict[str, Tensor], path: Path, *, prefix: str = "") -> Path:
    """As PyTorch 0.4 saved a state dict: a non-zip pickle of an OrderedDict (tensors by _rebuild_tensor_v2)."""
    torch.save(OrderedDict((prefix + k, v) for k, v in state.items()), path, _use_new_zipfile_serialization=False)
    return path


class _Storage:
    def __init__(self, key: str, tensor: Tensor) -> None:
        self.key, self.tensor = key, tensor.contiguous()


class _Py2TorchPickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be changed
    """Protocol 2 as Python 2.7 wrote it (str as SHORT_BINSTRING), tensors as PyTorch 0.3 reduced them
    (``torch._utils._rebuild_tensor``), their storages on the GPU (``torch.cuda.FloatStorage``, ``cuda:0``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str) -> None:
        data = obj.encode("ascii")
        self.write(b"U" + bytes([len(data)]) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str

    def __init__(self, fh: io.BytesIO, storages: list[_Storage]) -> None:
        super().__init__(fh, protocol=2)
        self.storages = storages

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, Tensor):
            storage = _Storage(str(len(self.storages)), obj)
            self.storages.append(storage)
            return torch._utils._rebuild_tensor, (storage, 0, tuple(obj.shape), storage.tensor.stride())
        return NotImplemented

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _Storage):
            return ("storage", torch.cuda.FloatStorage, obj.key, "cuda:0", obj.tensor.numel(), None)
        return None


def save_py2_torch03(state: dict[str, Tensor], path: Path) -> Path:
    """A state dict as the official trainer wrote it under Python 2.7 and PyTorch 0.3 on a GPU: the legacy
    layout (magic number, protocol 1001, system info, the OrderedDict, its storage keys, then each
    storage as an int64 element count and its raw float32 data)."""
    fh, storages = io.BytesIO(), []
    system = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    for obj in (0x1950A86A20F9469CFC6C, 1001, system, OrderedDict(state)):
        _Py2TorchPickler(fh, storages).dump(obj)
    _Py2TorchPickler(fh, storages).dump([s.key for s in storages])
    for s in storages:
        fh.write(struct.pack("<q", s.tensor.numel()) + s.tensor.float().numpy().tobytes())
    path.write_bytes(fh.getvalue())
    return path


RECIPE = """\
schema_version: 1
name: official_small
text_encoder: {{type: precomputed, dim: {text}}}
dataset: {{type: stackgan-flowers, root: data, image_dir: jpg}}
noise_dim: {z}
stages:
  - name: stage-I
    conditioner: {{type: ca, condition_dim: {ef}, activation: relu}}
    generator: {{type: stackgan-stage1, ngf: {gf}, out_size: 64}}
    discriminator: {{type: matching-aware, ndf: {df}, condition: mu}}
    losses: [{{type: matching-aware}}, {{type: kl, coeff: 2.0}}]
  - name: stage-II
    conditioner: {{type: ca, condition_dim: {ef}, activation: relu}}
    generator: {{type: stackgan-refiner, ngf: {gf}, scale: 4, residual_blocks: {r}, input: image}}
    discriminator: {{type: matching-aware, ndf: {df}, condition: mu, unconditional_head: true}}
    losses: [{{type: matching-aware, uncond_weight: 1.0}}, {{type: kl, coeff: 2.0}}]
training: {{batch_size: 2, device: cpu, num_workers: 0}}
output: {{sample_every: 1000, checkpoint_every: 1000}}
"""


def _flowers(root: Path, text_dim: int) -> None:
    """A miniature of StackGAN's flowers layout: 4 train and 4 test images with 10 embeddings each."""
    rng = np.random.default_rng(0)
    for split, first in (("train", 1), ("test", 5)):
        keys = [f"image_{first + i:05d}" for i in range(4)]
        (root / split).mkdir(parents=True)
        (root / split / "filenames.pickle").write_bytes(py2_pickle(keys))
        emb = rng.standard_normal((4, 10, text_dim)).astype(np.float32)
        (root / split / "char-CNN-RNN-embeddings.pickle").write_bytes(py2_pickle(emb))
        for i, key in enumerate(keys):
            (root / "jpg").mkdir(exist_ok=True)
            pixels = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "jpg" / f"{key}.jpg")
            (root / "text").mkdir(exist_ok=True)
            (root / "text" / f"{key}.txt").write_text("".join(f"flower {first + i} caption {j}\n" for j in range(10)))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The official files of a Stage-II run at reduced width, and a recipe they fit: netG as Python 2.7 and
    PyTorch 0.3 wrote it on a GPU, netD as PyTorch 0.4 wrote it from DataParallel, the Stage-I files as
    current PyTorch writes them (zip, with num_batches_tracked; netG from DataParallel)."""
    root = tmp_path_factory.mktemp("official")
    recipe = root / "official_small.yaml"
    recipe.write_text(RECIPE.format(**SMALL))
    _flowers(root / "data", SMALL["text"])
    gf, df, ef, text, z, r = (SMALL[k] for k in ("gf", "df", "ef", "text", "z", "r"))
    g2 = random_state(stage2_g(gf, ef, text, z, r), 1, legacy=True)
    d2 = random_state(discriminator(df, ef, 2), 2, legacy=True)
    d1 = random_state(discriminator(df, ef, 1), 3)
    g1 = random_state(stage1_g(gf, ef, text, z), 4)
    files = {"netG": save_py2_torch03(g2, root / "netG_epoch_90.pth"),
             "netD": save_legacy(d2, root / "netD_epoch_last.pth", prefix="module."),  # DataParallel
             "stage1_netD": root / "stage1_netD_epoch_120.pth", "stage1_netG": root / "stage1_netG_epoch_120.pth"}
    torch.save(d1, files["stage1_netD"])  # a current (zip) file, with num_batches_tracked
    torch.save({f"module.{k}": v for k, v in g1.items()}, files["stage1_netG"])
    return {"root": root, "recipe": recipe, "files": files, "g2": g2, "d2": d2, "d1": d1, "g1": g1}


@pytest.fixture(scope="module")
def imported(small: dict) -> Path:
    from ganstack.cli.main import main

    out = small["root"] / "run"
    f = small["files"]
    assert main(["import", "stackgan-pytorch", str(f["netG"]), "--netD", str(f["netD"]), "--stage1-netD",
                 str(f["stage1_netD"]), "--recipe", str(small["recipe"]), "--out", str(out)]) == 0
    return out


def _inputs(n: int = 3, seed: int = 11) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, SMALL["text"], generator=gen), torch.randn(n, SMALL["z"], generator=gen),
            torch.randn(n, SMALL["ef"], generator=gen), torch.randn(n, SMALL["ef"], generator=gen))


# ------------------------------------------------------------------------------------- tests
def test_the_layout_written_here_is_the_published_one() -> None:
    """Entry and parameter counts of the official CUB-settings networks, as released."""
    assert (len(stage1_g()), params(stage1_g())) == (33, 10_301_248)
    assert (len(discriminator()), params(discriminator())) == (27, 5_715_713)
    assert (len(stage2_g()), params(stage2_g())) == (127, 36_591_328)
    assert (len(discriminator(stage=2)), params(discriminator(stage=2))) == (53, 71_269_122)
    assert params(stage2_g()) - params(stage1_g()) == 26_290_080


@pytest.mark.parametrize(("recipe", "gf", "df", "r"), [("stackgan_cub", 128, 64, 4), ("stackgan_flowers", 128, 64, 4),
                                                      ("stackgan_coco", 192, 96, 2)])
def test_full_size_official_files_fit_the_shipped_recipes_key_for_key(recipe: str, gf: int, df: int, r: int) -> None:
    """Every tensor of the paper-size official networks lands on a tensor of the recipe's stack with the
    same shape, and every tensor of the stack is filled (shapes only: built on the meta device)."""
    from conftest import ROOT
    from ganstack.build.stack import build_stack
    from ganstack.recipe.resolve import load_recipe
    from ganstack_defaults.official.stackgan_pytorch import Part, disagreements, mapped

    resolved = load_recipe(ROOT / "recipes" / f"{recipe}.yaml")
    with torch.device("meta"):
        stack = build_stack(resolved)
    own = stack.state_dict()
    empty = {name: {k: torch.empty(s, device="meta") for k, s in layout.items()} for name, layout in
             {"g2": stage2_g(gf, r=r), "d1": discriminator(df), "d2": discriminator(df, stage=2)}.items()}
    parts = [Part("G2", 1, _sub_not(empty["g2"], "STAGE1_G."), "netG", "NETG"),
             Part("G1", 0, _sub(empty["g2"], "STAGE1_G."), "netG", "NETG"),
             Part("D1", 0, empty["d1"], "netD1", "--stage1-netD"), Part("D2", 1, empty["d2"], "netD", "--netD")]
    filled: set[str] = set()
    for part in parts:
        assert disagreements(part, resolved, 1024, stack.resolutions) == []
        tensors, problems = mapped(part, own)
        assert problems == []
        assert len(tensors) == len(part.state)  # one place for each official tensor
        filled |= set(tensors)
    assert filled == set(own)  # and nothing of the stack left over


def _sub_not(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(prefix)}


def test_imported_stage2_run_draws_the_official_images(small: dict, imported: Path) -> None:
    import ganstack

    text, z, eps1, eps2 = _inputs()
    model = ganstack.load(imported, device="cpu")
    samples = model.generate(embeddings=text, z=z, ca_eps=[eps1, eps2])
    low, high, _mu1, _mu2 = official_stage2_g(small["g2"], text, z, eps1, eps2)
    assert [tuple(t.shape) for t in samples.images] == [(3, 3, 64, 64), (3, 3, 256, 256)]
    assert 0.05 < float(high.std()) and float(high.abs().max()) < 1  # a comparison tanh does not flatten
    assert (samples.images[0] - low).abs().max() < 1e-5
    assert (samples.images[1] - high).abs().max() < 1e-5
    other = model.generate(embeddings=text, z=z, ca_eps=[eps1, -eps2])  # eps2 matters
    assert (other.images[1] - high).abs().max() > 1e-2 and (other.images[0] - low).abs().max() < 1e-5


def test_in_training_mode_too_the_generators_compute_the_official_functions(small: dict, imported: Path) -> None:
    """With BatchNorm on batch statistics (the official Stage-II trainer runs its Stage-I so)."""
    import ganstack

    text, z, eps1, eps2 = _inputs(4, seed=8)
    model = ganstack.load(imported, device="cpu")
    model.stack.train()
    low, high = model.generate(embeddings=text, z=z, ca_eps=[eps1, eps2]).images
    want_low, want_high, _, _ = official_stage2_g(small["g2"], text, z, eps1, eps2, train=True)
    assert (low - want_low).abs().max() < 1e-5 and (high - want_high).abs().max() < 1e-5
    eval_low = official_stage2_g(small["g2"], text, z, eps1, eps2)[0]
    assert (low - eval_low).abs().max() > 1e-2  # the modes differ, so the check tells them apart


def test_imported_discriminators_give_the_official_logits(small: dict, imported: Path) -> None:
    import ganstack

    text, z, eps1, eps2 = _inputs(4, seed=5)
    model = ganstack.load(imported, device="cpu")
    stages = model.stack.stages
    low, high, mu1, mu2 = official_stage2_g(small["g2"], text, z, eps1, eps2)
    real = torch.rand(4, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        for k, (state, images) in enumerate([(small["d1"], [low, F.interpolate(real, size=64)]),
                                             (small["d2"], [high, real])]):
            cond = stages[k].conditioner(text, [eps1, eps2][k])
            assert (cond.mu - [mu1, mu2][k]).abs().max() < 1e-5
            d = stages[k].discriminator
            for image in images:
                want_cond, want_uncond = official_d(state, image, cond.mu)
                features = d.features(image)
                got = d.cond_logits(features, Condition(c=cond.c, mu=cond.mu, logvar=cond.logvar), text)
                assert (got - want_cond).abs().max() < 1e-5
                assert (torch.sigmoid(got) - torch.sigmoid(want_cond)).abs().max() < 1e-5  # the port's output
                if want_uncond is None:
                    assert d.uncond_logits(features) is None
                else:
                    assert (d.uncond_logits(features) - want_uncond).abs().max() < 1e-5


def test_import_writes_a_run_folder_and_names_what_it_read(small: dict, imported: Path) -> None:
    from ganstack.run_folder.checkpoint import load_checkpoint

    ckpt = load_checkpoint(imported)
    assert ckpt["resumable"] is False and ckpt["ema"] is None and ckpt["position"]["step"] == 0
    assert (imported / "recipe.yaml").is_file()
    record = json.loads((imported / "import.json").read_text())
    assert record["kept_initialisation"] == []
    assert {(p["stage"], p["part"], p["official"], p["flag"]) for p in record["parts"]} == {
        (1, "conditioner+generator", "STAGE1_G", "NETG (its STAGE1_G.*)"), (1, "discriminator", "STAGE1_D", "--stage1-netD"),
        (2, "conditioner+generator", "STAGE2_G", "NETG"), (2, "discriminator", "STAGE2_D", "--netD")}
    assert any("legacy" in n for n in record["files"][str(small["files"]["netG"])]["notes"])
    netd = record["files"][str(small["files"]["netD"])]
    assert any("module." in n for n in netd["notes"]) and any("legacy" in n for n in netd["notes"])
    # the state dict holds the official tensors under ganstack's names
    assert torch.equal(ckpt["model"]["stages.1.generator.residual.1.body.3.weight"], small["g2"]["residual.1.block.3.weight"])
    assert torch.equal(ckpt["model"]["stages.1.discriminator.image_path.7.1.running_var"],
                       small["d2"]["encode_img.21.running_var"])


def test_stage1_file_fills_stage1_names_the_rest_and_initialises_a_stage2_run(small: dict, cli, tmp_path: Path) -> None:
    out = tmp_path / "stage1"
    f = small["files"]
    code, stdout, err = cli("import", "stackgan-pytorch", f["stage1_netG"], "--netD", f["stage1_netD"],
                            "--recipe", small["recipe"], "--out", out)
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "stage 2 (stage-II) generator: not in the given files, keeps ganstack's initialisation" in text
    assert "stage 2 (stage-II) discriminator: not in the given files" in text
    assert "'module.' prefix" in text
    record = json.loads((out / "import.json").read_text())
    assert record["kept_initialisation"] == ["stage 2 (stage-II) generator", "stage 2 (stage-II) discriminator"]

    import ganstack

    text_e, z, eps1, _ = _inputs()
    got = ganstack.load(out, device="cpu").generate(embeddings=text_e, z=z, ca_eps=[eps1, None]).images[0]
    assert (got - official_stage1_g(small["g1"], text_e, z, eps1)[0]).abs().max() < 1e-5

    # A Stage-II run that starts from the imported Stage-I (frozen: epochs 0), as the paper's does.
    recipe = small["root"] / "stage2_from_official.yaml"
    import yaml

    data = yaml.safe_load(small["recipe"].read_text())
    data["stages"][0] |= {"init_from": str(out), "epochs": 0}
    recipe.write_text(yaml.safe_dump(data))
    run = tmp_path / "stage2_run"
    code, stdout, err = cli("run", recipe, "--out", run, "--max-steps", 1)
    assert code == 0, stdout + err
    from ganstack.run_folder.checkpoint import load_checkpoint

    trained = load_checkpoint(run)["model"]
    assert torch.equal(trained["stages.0.generator.up.2.1.weight"], small["g1"]["upsample3.1.weight"])
    assert torch.equal(trained["stages.0.generator.fc.1.running_mean"], small["g1"]["fc.1.running_mean"])
    assert torch.equal(trained["stages.0.discriminator.cond_head.1.bias"], small["d1"]["get_cond_logits.outlogits.3.bias"])


def test_stage1_netg_replaces_the_copy_inside_a_stage2_file(small: dict, cli, tmp_path: Path) -> None:
    import ganstack

    f, out = small["files"], tmp_path / "run"
    code, stdout, err = cli("import", "stackgan-pytorch", f["netG"], "--stage1-netG", f["stage1_netG"],
                            "--recipe", small["recipe"], "--out", out)
    assert code == 0, err
    assert "stage 1 generator: from --stage1-netG" in stdout and "replacing the one from NETG (its STAGE1_G.*)" in stdout
    text, z, eps1, eps2 = _inputs()
    low, high = ganstack.load(out, device="cpu").generate(embeddings=text, z=z, ca_eps=[eps1, eps2]).images
    assert (low - official_stage1_g(small["g1"], text, z, eps1)[0]).abs().max() < 1e-5
    mixed = {**small["g2"], **{f"STAGE1_G.{k}": v for k, v in small["g1"].items()}}  # what was asked for
    assert (high - official_stage2_g(mixed, text, z, eps1, eps2)[1]).abs().max() < 1e-5
    record = json.loads((out / "import.json").read_text())
    assert record["kept_initialisation"] == ["stage 1 (stage-I) discriminator", "stage 2 (stage-II) discriminator"]


def test_sample_and_eval_run_on_the_imported_folder(small: dict, imported: Path, cli, tmp_path: Path) -> None:
    import torchvision

    emb = tmp_path / "emb.npy"
    np.save(emb, _inputs(2)[0].numpy())
    out = tmp_path / "samples"
    code, _o, err = cli("sample", imported, "--embeddings", emb, "--out", out)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted((r["stage"], r["resolution"]) for r in records) == [(1, 64), (1, 64), (2, 256), (2, 256)]
    assert all(Image.open(out / r["file"]).size == (r["resolution"],) * 2 for r in records)

    weights = tmp_path / "inception.pt"  # random weights in torchvision's layout: the metric's machinery, not its value
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                               num_classes=10).state_dict(), weights)
    report = tmp_path / "eval.json"
    code, stdout, err = cli("eval", imported, "--metric", "inception-score", "--inception-weights", weights, "--n", 4,
                            "--option", "splits=2", "--option", "batch_size=2", "--out", report)
    assert code == 0, stdout + err
    results = json.loads(report.read_text())["results"]
    assert 1.0 - 1e-6 <= results["inception-score/is_mean"] <= 10.0  # IS of 10 classes lies in [1, 10]
    assert results["inception-score/weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_the_released_coco_model_against_the_birds_recipe_names_the_coco_values(cli, tmp_path: Path) -> None:
    """The released netG_epoch_90.pth (GF 192, R 2) given with the CUB recipe. Its tensors are zero-stride
    views, so the file has the real layout and shapes at a few bytes each."""
    from conftest import ROOT

    netg = tmp_path / "netG_epoch_90.pth"
    save_legacy({k: torch.zeros(1).expand(s) if s else torch.tensor(0) for k, s in stage2_g(192, r=2).items()
                 if not k.endswith("num_batches_tracked")}, netg)
    assert netg.stat().st_size < 100_000
    err = _refused(cli, netg, "--recipe", ROOT / "recipes" / "stackgan_cub.yaml", "--out", tmp_path / "run")
    assert "stages[0].generator.ngf: the file has 1536 channels at 4x4 where the recipe makes 1024 channels at 4x4; set ngf: 192" in err
    assert "stages[1].generator.ngf: the file has 192 channels after its first conv where the recipe makes 128" in err
    assert "stages[1].generator.residual_blocks: the file has 2 residual blocks where the recipe makes 4 residual blocks; set residual_blocks: 2" in err
    assert "The files' settings (GF 192, R 2) are those of recipes/stackgan_coco.yaml" in err
    assert not (tmp_path / "run").exists()


def _refused(cli, *args) -> str:
    code, _o, err = cli("import", "stackgan-pytorch", *args)
    assert code == 2, err
    assert "Traceback" not in err
    return " ".join(err.split())


def test_files_that_do_not_fit_the_recipe_name_each_entry_and_the_fitting_value(small: dict, cli, tmp_path: Path) -> None:
    wide = small["root"] / "wide.yaml"
    wide.write_text(RECIPE.format(**(SMALL | {"gf": 16, "r": 3})).replace("ndf: 4, condition: mu, unc",
                                                                             "ndf: 8, condition: mu, unc"))
    f = small["files"]
    err = _refused(cli, f["netG"], "--netD", f["netD"], "--recipe", wide, "--out", tmp_path / "x")
    assert "stages[0].generator.ngf: the file has 64 channels at 4x4 where the recipe makes 128 channels at 4x4; set ngf: 8" in err
    assert "stages[1].generator.ngf: the file has 8 channels after its first conv where the recipe makes 16 channels after its first conv; set ngf: 8" in err
    assert "stages[1].generator.residual_blocks: the file has 2 residual blocks where the recipe makes 3 residual blocks; set residual_blocks: 2" in err
    assert "stages[1].discriminator.ndf: the file has 4 channels in its first conv where the recipe makes 8 channels in its first conv; set ndf: 4" in err
    assert not (tmp_path / "x").exists()
    # the paper's recipe against these small files: the text size and noise are named too
    from conftest import ROOT

    err = _refused(cli, f["stage1_netG"], "--recipe", ROOT / "recipes" / "stackgan_cub.yaml", "--out", tmp_path / "y")
    assert "text_encoder.dim: the file reads 16-d text embeddings where the recipe gives 1024; set dim: 16" in err
    assert "noise_dim: the file's fc takes z of 10" in err and "set noise_dim: 10" in err
    assert "stages[0].conditioner.condition_dim: the file has a 8-d condition where the recipe makes a 128-d condition" in err


def test_wrong_and_unsafe_files_are_refused_in_one_paragraph(small: dict, cli, tmp_path: Path) -> None:
    f, recipe = small["files"], small["recipe"]
    err = _refused(cli, f["netD"], "--recipe", recipe, "--out", tmp_path / "a")
    assert "NETG takes a generator, but the file holds STAGE2_D" in err
    err = _refused(cli, f["netG"], "--netD", f["stage1_netD"], "--recipe", recipe, "--out", tmp_path / "a")
    assert "stages[1].discriminator: the file judges 64x64 images but stage 2 draws 256x256" in err and "--stage1-netD" in err
    v2 = tmp_path / "netG_210000.pth"
    torch.save({"ca_net.fc.weight": torch.zeros(512, 1024), "h_net1.fc.0.weight": torch.zeros(4, 228)}, v2)
    err = _refused(cli, v2, "--recipe", recipe, "--out", tmp_path / "a")
    assert "StackGAN-v2 file" in err and "ganstack import stackgan-v2" in err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    err = _refused(cli, junk, "--recipe", recipe, "--out", tmp_path / "a")
    assert "not a readable PyTorch file" in err and "weights_only" not in err
    assert "file not found" in _refused(cli, tmp_path / "missing.pth", "--recipe", recipe, "--out", tmp_path / "a")

    one_stage = tmp_path / "one_stage.yaml"
    one_stage.write_text(RECIPE.format(**SMALL).split("  - name: stage-II")[0] + "training: {batch_size: 2}\n")
    err = _refused(cli, f["netG"], "--recipe", one_stage, "--out", tmp_path / "a")
    assert "the recipe has 1 stage(s) but NETG holds STAGE2_G (a Stage-II generator) for stage 2" in err
    err = _refused(cli, f["stage1_netG"], "--stage1-netD", f["stage1_netD"], "--recipe", recipe, "--out", tmp_path / "a")
    assert "--stage1-netD is for a Stage-II NETG" in err

    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:  # a legacy-format file whose pickle would call Path.touch
        torch.save({"fc.0.weight": Exploit()}, fh, _use_new_zipfile_serialization=False, pickle_module=pickle)
    err = _refused(cli, evil, "--recipe", recipe, "--out", tmp_path / "a")
    assert "refused" in err and "os.makedirs" in err and "weights_only=False" not in err
    assert not marker.exists() and not (tmp_path / "a").exists()


def test_explicit_noise_of_the_wrong_shape_is_a_user_error(imported: Path) -> None:
    import ganstack
    from ganstack.errors import UserError

    text, z, eps1, eps2 = _inputs()
    model = ganstack.load(imported, device="cpu")
    with pytest.raises(UserError, match=r"z has shape \(3, 9\); this stack needs \(3, 10\)"):
        model.generate(embeddings=text, z=z[:, :9])
    with pytest.raises(UserError, match="ca_eps has 1 entries for a stack of 2 stages"):
        model.generate(embeddings=text, ca_eps=[eps1])
    seeded = model.generate(embeddings=text, seed=3)
    assert torch.equal(model.generate(embeddings=text, seed=3, ca_eps=[None, None]).images[1], seeded.images[1])
