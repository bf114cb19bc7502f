"""StackGAN-v2 exactly: official sizes, the official checkpoints imported, the same outputs and losses.

The reference here is written in this file from the published architecture and the released files'
key layout (``h_net1.fc.0.weight``, ``img_code_s16.0.weight``, ...): a functional forward of the
official G_NET and D_NET on a plain dict of tensors, at reduced widths. ganstack's stack is built
from the shipped recipe (``recipes/stackgan_v2_cub.yaml``) with only its widths changed, fed the
official-layout files through ``ganstack import stackgan-v2``, and compared with that reference.
"""

from __future__ import annotations

import contextlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import ganstack
from ganstack.build.stack import build_stack
from ganstack.hookspecs import hookimpl
from ganstack.interfaces import Condition, LossContext, StepState
from ganstack.recipe.resolve import load_recipe
from ganstack.testing import registered_plugin

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "stackgan_v2_cub.yaml"

# Reduced widths: GF_DIM, DF_DIM, EMBEDDING_DIM, Z_DIM, text size, R_NUM (official: 64, 64, 128, 100, 1024, 2).
GF, DF, EF, Z, T, R = 4, 2, 8, 6, 16, 2


# ------------------------------------------------------------------ official layout, from the facts
def _bn(sd: dict, prefix: str, n: int, gen: torch.Generator) -> None:
    sd[prefix + "weight"] = 1 + 0.3 * torch.randn(n, generator=gen)
    sd[prefix + "bias"] = 0.3 * torch.randn(n, generator=gen)
    sd[prefix + "running_mean"] = 0.3 * torch.randn(n, generator=gen)
    sd[prefix + "running_var"] = 0.5 + torch.rand(n, generator=gen)
    sd[prefix + "num_batches_tracked"] = torch.tensor(7)


def _w(sd: dict, key: str, *shape: int, gen: torch.Generator) -> None:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    sd[key] = torch.randn(*shape, generator=gen) / fan_in ** 0.5


def official_g(gf: int = GF, ef: int = EF, z: int = Z, text: int = T, r: int = R, branches: int = 3,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """A G_NET state dict with the released file's keys (random values)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _w(sd, "ca_net.fc.weight", 4 * ef, text, gen=gen)
    sd["ca_net.fc.bias"] = 0.1 * torch.randn(4 * ef, generator=gen)
    ngf = 16 * gf
    _w(sd, "h_net1.fc.0.weight", 2 * ngf * 16, ef + z, gen=gen)
    _bn(sd, "h_net1.fc.1.", 2 * ngf * 16, gen)
    for i in range(4):
        c_in, c_out = ngf >> i, ngf >> (i + 1)
        _w(sd, f"h_net1.upsample{i + 1}.1.weight", 2 * c_out, c_in, 3, 3, gen=gen)
        _bn(sd, f"h_net1.upsample{i + 1}.2.", 2 * c_out, gen)
    _w(sd, "img_net1.img.0.weight", 3, gf, 3, 3, gen=gen)
    c = gf
    for k in range(2, branches + 1):
        p = f"h_net{k}."
        _w(sd, p + "jointConv.0.weight", 2 * c, c + ef, 3, 3, gen=gen)
        _bn(sd, p + "jointConv.1.", 2 * c, gen)
        for j in range(r):
            _w(sd, p + f"residual.{j}.block.0.weight", 2 * c, c, 3, 3, gen=gen)
            _bn(sd, p + f"residual.{j}.block.1.", 2 * c, gen)
            _w(sd, p + f"residual.{j}.block.3.weight", c, c, 3, 3, gen=gen)
            _bn(sd, p + f"residual.{j}.block.4.", c, gen)
        _w(sd, p + "upsample.1.weight", c, c, 3, 3, gen=gen)
        _bn(sd, p + "upsample.2.", c, gen)
        _w(sd, f"img_net{k}.img.0.weight", 3, c // 2, 3, 3, gen=gen)
        c //= 2
    return sd


def official_d(size: int, df: int = DF, ef: int = EF, seed: int = 1) -> dict[str, torch.Tensor]:
    """A D_NET64 / D_NET128 / D_NET256 state dict with the released files' keys."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _w(sd, "img_code_s16.0.weight", df, 3, 4, 4, gen=gen)
    for conv, bn, a, b in ((2, 3, df, 2 * df), (5, 6, 2 * df, 4 * df), (8, 9, 4 * df, 8 * df)):
        _w(sd, f"img_code_s16.{conv}.weight", b, a, 4, 4, gen=gen)
        _bn(sd, f"img_code_s16.{bn}.", b, gen)
    for name, a, b in {128: [("img_code_s32", 8, 16), ("img_code_s32_1", 16, 8)],
                       256: [("img_code_s32", 8, 16), ("img_code_s64", 16, 32), ("img_code_s64_1", 32, 16),
                             ("img_code_s64_2", 16, 8)]}.get(size, []):
        _w(sd, f"{name}.0.weight", b * df, a * df, *((3, 3) if "_" in name[9:] else (4, 4)), gen=gen)
        _bn(sd, f"{name}.1.", b * df, gen)
    _w(sd, "logits.0.weight", 1, 8 * df, 4, 4, gen=gen)
    sd["logits.0.bias"] = 0.1 * torch.randn(1, generator=gen)
    _w(sd, "jointConv.0.weight", 8 * df, 8 * df + ef, 3, 3, gen=gen)
    _bn(sd, "jointConv.1.", 8 * df, gen)
    _w(sd, "uncond_logits.0.weight", 1, 8 * df, 4, 4, gen=gen)
    sd["uncond_logits.0.bias"] = 0.1 * torch.randn(1, generator=gen)
    return sd


# ------------------------------------------------------------- the official forward, re-implemented
def _glu(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[1] // 2
    return x[:, :n] * torch.sigmoid(x[:, n:])


def _norm(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=1e-5)


def _up(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    return _glu(_norm(F.conv2d(x, sd[p + "1.weight"], padding=1), sd, p + "2."))


def reference_g(sd: dict, text: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, ef: int = EF,
                r: int = R) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """G_NET.forward in eval mode with the CA noise given: (images, mu, logvar)."""
    h = _glu(F.linear(text, sd["ca_net.fc.weight"], sd["ca_net.fc.bias"]))
    mu, logvar = h[:, :ef], h[:, ef:]
    c = eps * torch.exp(0.5 * logvar) + mu
    x = _glu(_norm(F.linear(torch.cat([c, z], 1), sd["h_net1.fc.0.weight"]), sd, "h_net1.fc.1."))
    x = x.view(x.shape[0], -1, 4, 4)
    for i in range(1, 5):
        x = _up(x, sd, f"h_net1.upsample{i}.")
    images = [torch.tanh(F.conv2d(x, sd["img_net1.img.0.weight"], padding=1))]
    k = 2
    while f"h_net{k}.jointConv.0.weight" in sd:
        p = f"h_net{k}."
        cc = c[:, :, None, None].repeat(1, 1, x.shape[2], x.shape[3])
        x = _glu(_norm(F.conv2d(torch.cat([cc, x], 1), sd[p + "jointConv.0.weight"], padding=1), sd,
                       p + "jointConv.1."))
        for j in range(r):
            q = p + f"residual.{j}.block."
            y = _glu(_norm(F.conv2d(x, sd[q + "0.weight"], padding=1), sd, q + "1."))
            x = x + _norm(F.conv2d(y, sd[q + "3.weight"], padding=1), sd, q + "4.")
        x = _up(x, sd, p + "upsample.")
        images.append(torch.tanh(F.conv2d(x, sd[f"img_net{k}.img.0.weight"], padding=1)))
        k += 1
    return images, mu, logvar


def _leaky_bn_conv(x: torch.Tensor, sd: dict, conv: str, bn: str, stride: int, pad: int) -> torch.Tensor:
    return F.leaky_relu(_norm(F.conv2d(x, sd[conv], stride=stride, padding=pad), sd, bn), 0.2)


def reference_d(sd: dict, image: torch.Tensor, c: torch.Tensor, ef: int = EF) -> tuple[torch.Tensor, torch.Tensor]:
    """D_NET.forward in eval mode, before the final sigmoids: (conditional, unconditional)."""
    x = F.leaky_relu(F.conv2d(image, sd["img_code_s16.0.weight"], stride=2, padding=1), 0.2)
    for conv, bn in ((2, 3), (5, 6), (8, 9)):
        x = _leaky_bn_conv(x, sd, f"img_code_s16.{conv}.weight", f"img_code_s16.{bn}.", 2, 1)
    for name in ("img_code_s32", "img_code_s64"):
        if f"{name}.0.weight" in sd:
            x = _leaky_bn_conv(x, sd, f"{name}.0.weight", f"{name}.1.", 2, 1)
    for name in ("img_code_s32_1", "img_code_s64_1", "img_code_s64_2"):
        if f"{name}.0.weight" in sd:
            x = _leaky_bn_conv(x, sd, f"{name}.0.weight", f"{name}.1.", 1, 1)
    cc = c.view(-1, ef, 1, 1).repeat(1, 1, 4, 4)
    h = _leaky_bn_conv(torch.cat([cc, x], 1), sd, "jointConv.0.weight", "jointConv.1.", 1, 1)
    cond = F.conv2d(h, sd["logits.0.weight"], sd["logits.0.bias"], stride=4).view(-1)
    uncond = F.conv2d(x, sd["uncond_logits.0.weight"], sd["uncond_logits.0.bias"], stride=4).view(-1)
    return cond, uncond


# ---------------------------------------------------------------------------------------- helpers
def reduced_recipe(tmp_path: Path, gf: int = GF, df: int = DF, text: int = T, data_root: Path | None = None) -> Path:
    """The shipped recipe with only its widths reduced (and its data folder moved)."""
    data = yaml.safe_load(RECIPE.read_text())
    data["text_encoder"]["dim"] = text
    if data_root is not None:
        data["dataset"]["root"] = str(data_root)
    data["noise_dim"] = Z
    data["stages"][0]["conditioner"]["condition_dim"] = EF
    data["stages"][0]["generator"]["gf_dim"] = gf
    for stage in data["stages"]:
        stage["discriminator"]["df_dim"] = df
    path = tmp_path / "v2_small.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _rebuild_v1(tensor: torch.Tensor, _protocol: int) -> tuple:
    """How PyTorch 0.3 pickled a tensor: ``torch._utils._rebuild_tensor(storage, offset, size, stride)``."""
    return torch._utils._rebuild_tensor, (tensor.storage(), tensor.storage_offset(), tuple(tensor.size()),
                                          tensor.stride())


def _save(sd: dict, path: Path, *, legacy: bool = False, data_parallel: bool = False,
          old_torch: bool = False, torch03: bool = False) -> Path:
    """Write a state dict as the official code did: a legacy (non-zip) pickle, without the
    ``num_batches_tracked`` of PyTorch >= 0.4.1 (``old_torch``), with 0.3's tensor records (``torch03``),
    with ``module.`` keys (``data_parallel``)."""
    from collections import OrderedDict
    from unittest import mock

    sd = {k: v for k, v in sd.items() if not ((old_torch or torch03) and k.endswith("num_batches_tracked"))}
    if data_parallel:
        sd = {f"module.{k}": v for k, v in sd.items()}
    with mock.patch.object(torch.Tensor, "__reduce_ex__", _rebuild_v1) if torch03 else contextlib.nullcontext():
        torch.save(OrderedDict(sd), path, _use_new_zipfile_serialization=not (legacy or torch03))
    if torch03:
        assert b"_rebuild_tensor\n" in path.read_bytes()
    return path


@pytest.fixture
def official_files(tmp_path: Path) -> dict[str, Path]:
    return {"g": _save(official_g(), tmp_path / "netG_210000.pth", data_parallel=True, torch03=True),
            "d0": _save(official_d(64), tmp_path / "netD0.pth"),
            "d1": _save(official_d(128, seed=2), tmp_path / "netD1.pth", legacy=True, old_torch=True),
            "d2": _save(official_d(256, seed=3), tmp_path / "netD2.pth", data_parallel=True)}


# -------------------------------------------------------------------------------------- the tests
def test_shipped_recipe_has_the_official_sizes(cli) -> None:
    code, out, err = cli("check", RECIPE, "--params", "--json")
    assert code == 0, err
    rows = {(r["stage"], r["role"]): r for r in json.loads(out)}
    assert rows[("-", "generator (all stages)")]["params"] == 21_239_696  # G_NET, the shared CA once
    assert rows[("stage1", "conditioner")]["params"] == 524_800
    assert [rows[(f"stage{k}", "generator")]["params"] for k in (1, 2, 3)] == [20_075_968, 481_248, 157_680]
    assert [rows[(f"stage{k}", "discriminator")]["params"] for k in (1, 2, 3)] == [5_723_906, 18_834_178,
                                                                                 71_269_122]
    assert [rows[(f"stage{k}", "conditioner")]["type"] for k in (2, 3)] == ["shared (stage 1)"] * 2
    assert rows[("stage3", "generator")]["output_shape"] == [2, 3, 256, 256]


def test_the_reference_layout_is_the_released_files_and_fits_the_shipped_recipe() -> None:
    from ganstack_defaults.official.v2 import _disagreements, _generator_targets

    assert len(official_g()) == 107 and [len(official_d(s)) for s in (64, 128, 256)] == [29, 41, 53]
    with torch.device("meta"):  # the official sizes, without their memory
        stack = build_stack(load_recipe(RECIPE))
    full_g = official_g(gf=64, ef=128, z=100, text=1024)
    assert full_g["h_net1.fc.0.weight"].shape == (32768, 228) and full_g["img_net3.img.0.weight"].shape == (3, 16, 3, 3)
    assert _disagreements(full_g, _generator_targets(stack)) == []
    for k, size in enumerate((64, 128, 256)):
        d = stack.stages[k].discriminator
        targets = {"": (d, ""), "uncond_logits.": (d.uncond_logits_head, "")}
        assert _disagreements(official_d(size, df=64, ef=128), targets) == [], size


def test_import_gives_the_official_outputs(cli, official_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli("import", "stackgan-v2", official_files["g"], "--recipe", reduced_recipe(tmp_path),
                            "--out", out, "--netD0", official_files["d0"], "--netD1", official_files["d1"],
                            "--netD2", official_files["d2"])
    assert code == 0, err
    assert "(NETG, 90 entries)" in stdout and "checkpoints/last.pt" in stdout and "initial weights" not in stdout
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["ema"] is None and ckpt["resumable"] is False
    assert ckpt["position"] == {"block": 0, "epoch": 0, "batch": 0, "step": 210000}
    assert yaml.safe_load((out / "recipe.yaml").read_text())["stages"][1]["conditioner"] == {"type": "ganstack:shared",
                                                                                           "stage": 1}
    model = ganstack.load(out, device="cpu")
    stack = model.stack
    gen = torch.Generator().manual_seed(5)
    text, z, eps = torch.randn(3, T, generator=gen), torch.randn(3, Z, generator=gen), torch.randn(3, EF, generator=gen)
    g, ds = official_g(), [official_d(64), official_d(128, seed=2), official_d(256, seed=3)]
    want, mu, _logvar = reference_g(g, text, z, eps)
    with torch.no_grad():
        got = stack.generate(text, z, eps=[eps, None, None])
        for k, ((cond, stage_out), image) in enumerate(zip(got, want, strict=True)):
            assert stage_out.image.shape == image.shape
            assert (stage_out.image - image).abs().max() < 1e-5, k
            assert (cond.mu - mu).abs().max() < 1e-5
            d = stack.stages[k].discriminator
            features = d.features(image)
            want_c, want_u = reference_d(ds[k], image, mu)
            assert (d.cond_logits(features, cond, text) - want_c).abs().max() < 1e-5
            assert (d.uncond_logits(features) - want_u).abs().max() < 1e-5


def test_sample_and_eval_accept_the_imported_run(cli, official_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("import", "stackgan-v2", official_files["g"], "--recipe", reduced_recipe(tmp_path),
               "--out", out)[0] == 0
    emb = tmp_path / "emb.npy"
    np.save(emb, np.random.default_rng(0).standard_normal((2, T)).astype(np.float32))
    code, _out, err = cli("sample", out, "--embeddings", emb, "--out", tmp_path / "samples")
    assert code == 0, err
    assert len(list((tmp_path / "samples").rglob("*.png"))) >= 6  # two captions, three stages


class PixelMean:
    """A metric that only draws: the images of two test captions, and how many stages drew them."""

    def evaluate(self, source, n: int) -> dict[str, float]:
        data = source.dataset("test")
        images = source.generate([data[i]["caption"] for i in range(2)])
        return {"stages": float(len(images)), "side": float(images[-1].shape[-1])}


class PixelMeanPlugin:
    @hookimpl
    def register_components(self, register) -> None:
        register("metric", "pixel-mean", lambda options, ctx: PixelMean())


def test_eval_accepts_the_imported_run(cli, tmp_path: Path) -> None:
    from test_datasets_stackgan import _embeddings, _layout

    birds = _layout(tmp_path / "birds", split="test")
    dim = int(np.asarray(_embeddings(1)).shape[-1])
    g = _save(official_g(text=dim), tmp_path / "netG_5.pth")
    out = tmp_path / "run"
    assert cli("import", "stackgan-v2", g, "--recipe", reduced_recipe(tmp_path, text=dim, data_root=birds),
               "--out", out)[0] == 0
    with registered_plugin(PixelMeanPlugin(), "pixel-mean"):
        code, _out, err = cli("eval", out, "--metric", "pixel-mean", "--n", 2, "--device", "cpu")
    assert code == 0, err
    results = json.loads((out / "eval.json").read_text())
    assert results["step"] == 5 and results["results"] == {"pixel-mean/stages": 3.0, "pixel-mean/side": 256.0}


def test_missing_discriminators_keep_init_and_are_named(cli, official_files: dict[str, Path],
                                                         tmp_path: Path) -> None:
    code, out, err = cli("import", "stackgan-v2", official_files["g"], "--recipe", reduced_recipe(tmp_path),
                         "--out", tmp_path / "run", "--netD1", official_files["d1"])
    assert code == 0, err
    assert "stage1 discriminator (--netD0)" in out and "stage3 discriminator (--netD2)" in out
    assert "stage2 discriminator" not in out.split("initial weights")[-1]
    model = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.equal(model["stages.1.discriminator.jointConv.0.weight"], official_d(128, seed=2)["jointConv.0.weight"])
    assert torch.equal(model["stages.1.discriminator.uncond_logits_head.0.bias"],
                       official_d(128, seed=2)["uncond_logits.0.bias"])
    kept = model["stages.0.discriminator.jointConv.0.weight"].flatten(1)  # ganstack's orthogonal init
    assert torch.allclose(kept @ kept.T, torch.eye(kept.shape[0]), atol=1e-5)


def test_generator_of_fewer_branches_fills_the_first_stages(cli, tmp_path: Path) -> None:
    two = _save(official_g(branches=2), tmp_path / "netG_2.pth")
    out = tmp_path / "run"
    code, stdout, err = cli("import", "stackgan-v2", two, "--recipe", reduced_recipe(tmp_path), "--out", out)
    assert code == 0, err
    assert "stage3 generator (NETG has no h_net3)" in stdout.split("initial weights")[-1]
    stack = ganstack.load(out, device="cpu").stack
    gen = torch.Generator().manual_seed(6)
    text, z, eps = torch.randn(2, T, generator=gen), torch.randn(2, Z, generator=gen), torch.randn(2, EF, generator=gen)
    want, _mu, _logvar = reference_g(official_g(branches=2), text, z, eps)
    with torch.no_grad():
        got = stack.generate(text, z, eps=[eps, None, None])
    assert len(want) == 2 and all((g[1].image - w).abs().max() < 1e-5 for g, w in zip(got, want, strict=False))
    assert got[2][1].image.shape == (2, 3, 256, 256)


def test_file_of_other_widths_is_refused_with_what_would_fit(cli, tmp_path: Path) -> None:
    wide = _save(official_g(gf=8), tmp_path / "netG_wide.pth")
    code, _out, err = cli("import", "stackgan-v2", wide, "--recipe", reduced_recipe(tmp_path), "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in err
    assert "h_net1.fc.0.weight is (4096, 14) in the file, (2048, 14) in the recipe" in err
    assert "stages[0].generator.gf_dim 8" in err
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_discriminator_of_other_widths_is_refused(cli, official_files: dict[str, Path], tmp_path: Path) -> None:
    bad = _save(official_d(128, df=4), tmp_path / "netD1.pth")
    code, _out, err = cli("import", "stackgan-v2", official_files["g"], "--recipe", reduced_recipe(tmp_path),
                          "--out", tmp_path / "run", "--netD1", bad)
    assert code == 2 and "--netD1" in err and "img_code_s16.0.weight is (4, 3, 4, 4) in the file" in err
    assert "df_dim 4" in err
    code, _out, err = cli("import", "stackgan-v2", official_files["d0"], "--recipe", reduced_recipe(tmp_path),
                          "--out", tmp_path / "run")
    assert code == 2 and "discriminator file (D_NET), given as the generator" in err


def test_v1_file_is_refused_as_v1(cli, tmp_path: Path) -> None:
    v1 = {"ca_net.fc.weight": torch.zeros(16, T), "ca_net.fc.bias": torch.zeros(16),
          "fc.0.weight": torch.zeros(1024, 14), "img.0.weight": torch.zeros(3, 8, 3, 3)}
    code, _out, err = cli("import", "stackgan-v2", _save(v1, tmp_path / "netG_epoch_120.pth", legacy=True),
                          "--recipe", reduced_recipe(tmp_path), "--out", tmp_path / "run")
    assert code == 2 and "StackGAN-v1" in err and "fc.0.weight" in err


class Payload:
    def __reduce__(self):  # noqa: ANN204 - a pickle that would run code if loaded unsafely
        return (print, ("loaded unsafely",))


def test_unsafe_pickle_is_refused_naming_what_it_asks_for(cli, tmp_path: Path) -> None:
    bad = tmp_path / "netG_1.pth"
    torch.save({"h_net1.fc.0.weight": Payload()}, bad, _use_new_zipfile_serialization=False)
    code, out, err = cli("import", "stackgan-v2", bad, "--recipe", reduced_recipe(tmp_path), "--out", tmp_path / "run")
    assert code == 2 and "loaded unsafely" not in out
    assert "asks to load 'print'" in err and "weights_only" not in err and "safe_globals" not in err
    bad.write_bytes(pickle.dumps({"h_net1.fc.0.weight": Payload()}))  # not a torch file at all
    code, out, err = cli("import", "stackgan-v2", bad, "--recipe", reduced_recipe(tmp_path), "--out", tmp_path / "run")
    assert code == 2 and "loaded unsafely" not in out and "not a PyTorch state-dict file" in err


def test_non_v2_recipe_is_refused(cli, official_files: dict[str, Path], tmp_path: Path) -> None:
    code, _out, err = cli("import", "stackgan-v2", official_files["g"], "--recipe",
                          ROOT / "recipes" / "stackgan_v2_style_cub.yaml", "--out", tmp_path / "run")
    assert code == 2 and "stages[0].generator.type" in err and "stackgan-v2-stage1" in err


# ---------------------------------------------------------------------------- shared conditioner
def test_stages_share_one_conditioner_run_once(tmp_path: Path) -> None:
    stack = build_stack(load_recipe(reduced_recipe(tmp_path)))
    ca = stack.stages[0].conditioner
    assert stack.stages[1].conditioner is ca and stack.stages[2].conditioner is ca
    assert ca not in stack.stages[1].generator_parts() and ca in stack.stages[0].generator_parts()
    calls = []
    ca.register_forward_hook(lambda *a: calls.append(1))
    outs = stack.eval().generate(torch.randn(2, T), torch.randn(2, Z))
    assert len(calls) == 1
    assert outs[0][0] is outs[1][0] is outs[2][0]  # one eps, one mu/logvar: one KL term


def test_shared_conditioner_must_name_an_earlier_stage(cli, tmp_path: Path) -> None:
    data = yaml.safe_load(reduced_recipe(tmp_path).read_text())
    data["stages"][1]["conditioner"] = {"type": "shared", "stage": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    code, _out, err = cli("check", bad, "--params")
    assert code == 2 and "stages[1].conditioner.stage" in err and "earlier stage" in err


# ---------------------------------------------------------------------------------------- losses
def _loss_setup(tmp_path: Path):
    stack = build_stack(load_recipe(reduced_recipe(tmp_path)))
    stage = stack.stages[1]
    stage.discriminator.load_state_dict({k.replace("uncond_logits.", "uncond_logits_head."): v
                                         for k, v in official_d(128, seed=2).items()})
    gen = torch.Generator().manual_seed(3)
    real, wrong = torch.rand(4, 3, 128, 128, generator=gen) * 2 - 1, torch.rand(4, 3, 128, 128, generator=gen) * 2 - 1
    fake = torch.rand(4, 3, 128, 128, generator=gen) * 2 - 1
    mu = torch.randn(4, EF, generator=gen, requires_grad=True)
    cond = Condition(c=mu * 1.0, mu=mu, logvar=torch.zeros(4, EF))
    return stack, stage, real, wrong, fake, mu, cond


def test_v2_discriminator_loss_is_the_official_six_term_sum(tmp_path: Path) -> None:
    _stack, stage, real, wrong, fake, mu, cond = _loss_setup(tmp_path)
    loss = stage.losses[0]
    assert loss.requests == frozenset({"wrong_images"})
    d = stage.discriminator.eval()  # eval: the reference D uses running statistics
    step = StepState(stage=1, phase="d", discriminator=d, real=real, fake=fake, condition=cond,
                     text=torch.zeros(4, T), wrong_real=wrong)
    terms = loss.d_terms(step)
    sd = official_d(128, seed=2)
    bce = torch.nn.BCELoss()  # the official criterion, on the official sigmoid outputs
    probs = {name: [torch.sigmoid(t) for t in reference_d(sd, x, mu.detach())]
             for name, x in (("real", real), ("wrong", wrong), ("fake", fake))}
    ones, zeros = torch.ones(4), torch.zeros(4)
    want = {"d_real": bce(probs["real"][0], ones), "d_wrong": bce(probs["wrong"][0], zeros),
            "d_fake": bce(probs["fake"][0], zeros), "d_real_uncond": bce(probs["real"][1], ones),
            "d_wrong_uncond": bce(probs["wrong"][1], ones), "d_fake_uncond": bce(probs["fake"][1], zeros)}
    assert set(terms) == set(want)
    for name in want:
        assert abs(float(terms[name].detach()) - float(want[name])) < 1e-5, name
    err_d = sum(want.values())  # errD_real + errD_wrong + errD_fake, each with its unconditional part
    assert abs(float(sum(terms.values()).detach()) - float(err_d)) < 1e-5
    sum(terms.values()).backward()
    assert mu.grad is None  # D's phase never reaches the CA


def test_v2_generator_loss_keeps_the_ca_mean_gradient(tmp_path: Path) -> None:
    _stack, stage, real, _wrong, fake, mu, cond = _loss_setup(tmp_path)
    d = stage.discriminator.eval()
    step = StepState(stage=1, phase="g", discriminator=d, real=real, fake=fake, condition=cond, text=torch.zeros(4, T))
    terms = stage.losses[0].g_terms(step)
    c, u = (torch.sigmoid(t) for t in reference_d(official_d(128, seed=2), fake, mu.detach()))
    bce, ones = torch.nn.BCELoss(), torch.ones(4)
    assert abs(float(terms["g_fake"].detach()) - float(bce(c, ones))) < 1e-5
    assert abs(float(terms["g_fake_uncond"].detach()) - float(bce(u, ones))) < 1e-5
    terms["g_fake"].backward()
    assert mu.grad is not None and mu.grad.abs().sum() > 0  # the official G pass feeds D the undetached mu


def test_colour_consistency_against_the_detached_lower_stage(tmp_path: Path) -> None:
    from ganstack_defaults.losses.plugin import ColourConsistencyLoss, ColourOptions

    gen = torch.Generator().manual_seed(4)
    low = torch.rand(2, 3, 8, 8, generator=gen).requires_grad_()
    high = torch.rand(2, 3, 16, 16, generator=gen).requires_grad_()
    loss = ColourConsistencyLoss(ColourOptions(mean_weight=1.0, cov_weight=5.0), LossContext(index=1, num_stages=2))
    step = StepState(stage=1, phase="g", discriminator=None, real=high, fake=high, condition=None, text=None,
                     prev_fake=low)
    terms = loss.g_terms(step)

    def stats(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # compute_mean_covariance
        m = img.mean(2, keepdim=True).mean(3, keepdim=True)
        hat = (img - m).view(img.shape[0], img.shape[1], -1)
        return m, torch.bmm(hat, hat.transpose(1, 2)) / hat.shape[2]

    (m1, c1), (m2, c2) = stats(high), stats(low.detach())
    assert abs(float(terms["colour_mean"]) - float(F.mse_loss(m1, m2))) < 1e-6
    assert abs(float(terms["colour_cov"]) - float(5 * F.mse_loss(c1, c2))) < 1e-6
    sum(terms.values()).backward()
    assert low.grad is None and high.grad is not None


def test_weights_start_orthogonal(tmp_path: Path) -> None:
    stack = build_stack(load_recipe(reduced_recipe(tmp_path, gf=8)))
    for w in (stack.stages[1].generator.jointConv[0].weight, stack.stages[0].conditioner.net[0].weight,
              stack.stages[0].discriminator.img_code_s16[5].weight):
        m = w.detach().flatten(1)
        gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-5)


def test_v2_components_are_registered_and_meet_their_protocols() -> None:
    from ganstack.components.loader import load_plugins
    from ganstack.interfaces import Discriminator, GeneratorStage, StageContext

    registry = load_plugins().registry
    names = {(e.kind, e.name) for e in registry.entries() if e.plugin == "stackgan-v2" and e.summary}
    assert names == {("generator_stage", "stackgan-v2-stage1"), ("generator_stage", "stackgan-v2-next"),
                     ("discriminator", "stackgan-v2")}
    assert registry.get("loss", "stackgan-v2").summary and registry.get("importer", "stackgan-v2").summary
    assert registry.get("conditioner", "shared").plugin == "ganstack"
    base = StageContext(index=0, num_stages=2, text_dim=T, noise_dim=Z, cond_dim=EF)
    first = registry.get("generator_stage", "stackgan-v2-stage1")
    g1 = first.factory(first.options(gf_dim=2), base)
    nxt = registry.get("generator_stage", "stackgan-v2-next")
    g2 = nxt.factory(nxt.options(), StageContext(index=1, num_stages=2, text_dim=T, noise_dim=Z, cond_dim=EF,
                                                 in_size=64, in_feature_channels=g1.feature_channels))
    disc = registry.get("discriminator", "stackgan-v2")
    d = disc.factory(disc.options(df_dim=2), StageContext(index=1, num_stages=2, text_dim=T, noise_dim=Z,
                                                          cond_dim=EF, image_size=128))
    assert isinstance(g1, GeneratorStage) and isinstance(g2, GeneratorStage) and isinstance(d, Discriminator)
    assert (g1.out_size, g2.out_size, g2.feature_channels) == (64, 128, 1)


def test_v2_stage_order_and_sizes_are_checked(cli, tmp_path: Path) -> None:
    data = yaml.safe_load(reduced_recipe(tmp_path).read_text())
    data["stages"][1]["generator"] = {"type": "stackgan-v2-stage1", "gf_dim": 4}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    code, _out, err = cli("check", bad, "--params")
    assert code == 2 and "stages[1].generator" in err and "must be the first stage" in err
    data = yaml.safe_load(reduced_recipe(tmp_path).read_text())
    data["stages"][0]["generator"]["out_size"] = 32
    bad.write_text(yaml.safe_dump(data))
    code, _out, err = cli("check", bad, "--params")
    assert code == 2 and "stages[0].discriminator" in err and "64 * 2**k" in err


def test_v2_loss_without_wrong_images_or_unconditional_terms(tmp_path: Path) -> None:
    from ganstack.errors import UserError
    from ganstack_defaults.losses.stackgan_v2 import StackGANv2Loss, V2LossOptions

    _stack, stage, real, wrong, fake, _mu, cond = _loss_setup(tmp_path)
    d = stage.discriminator.eval()
    no_wrong = StepState(stage=1, phase="d", discriminator=d, real=real, fake=fake, condition=cond,
                         text=torch.zeros(4, T))
    with pytest.raises(UserError, match="real image of another class"):
        stage.losses[0].d_terms(no_wrong)
    plain = StackGANv2Loss(V2LossOptions(uncond_weight=0.0), LossContext(index=1, num_stages=3))
    step = StepState(stage=1, phase="d", discriminator=d, real=real, fake=fake, condition=cond,
                     text=torch.zeros(4, T), wrong_real=wrong)
    assert set(plain.d_terms(step)) == {"d_real", "d_wrong", "d_fake"}
    assert set(plain.g_terms(step)) == {"g_fake"}
