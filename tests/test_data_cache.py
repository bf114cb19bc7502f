"""The decoded-data caches (``.ganstack-cache``) when their files are damaged: a truncated, corrupt,
not-UTF-8 or wrong-shape file is detected and the cache rebuilt, with a line saying so; the data read
afterwards is the data itself, never what the damaged file held."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from ganstack.components.loader import registry
from ganstack.interfaces import DataContext

COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]


def _folder(root: Path) -> Path:
    (root / "pics").mkdir(parents=True)
    lines = []
    for n, colour in enumerate(COLOURS):
        Image.new("RGB", (40, 30), colour).save(root / "pics" / f"img{n}.png")
        lines.append(json.dumps({"image": f"pics/img{n}.png", "captions": [f"picture {n}"]}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _build_folder(root: Path):  # noqa: ANN202
    entry = registry().get("dataset", "captioned-folder")
    ctx = DataContext(split="train", resolutions=(8, 16), cache_dir=root.parent / "cache", seed=2)
    return entry.factory(entry.options(root=str(root), test_fraction=0.0), ctx)


def _pixels(data) -> list[np.ndarray]:  # noqa: ANN001
    return [np.asarray(data.images[i]).copy() for i in range(len(data.images))]


def _damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(300))
    elif how == "not-utf8":
        path.write_bytes(b'{"undecodable": {}, "name": "\xff\xfe"}')
    elif how == "not-an-object":
        path.write_text("[1, 2, 3]", encoding="utf-8")
    elif how == "wrong-shape":
        np.save(path, np.zeros((2, 3), dtype=np.int64))
    elif how == "out-of-range":  # offsets past the end of the pixel file: slices would come back empty
        index = np.load(path)
        index[:, 0] += 10**6
        np.save(path, index)
    elif how == "undecodable-mismatch":  # the meta says image 1 was undecodable, the index does not
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["undecodable"] = {"1": "img1.png: broken"}
        path.write_text(json.dumps(meta), encoding="utf-8")
    elif how == "float":
        np.save(path, np.load(path).astype(np.float32))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(("suffix", "how"), [
    (".index.npy", "missing"), (".index.npy", "truncated"), (".index.npy", "garbage"),
    (".index.npy", "wrong-shape"), (".index.npy", "out-of-range"), (".index.npy", "float"),
    (".meta.json", "missing"), (".meta.json", "truncated"), (".meta.json", "not-utf8"),
    (".meta.json", "not-an-object"), (".meta.json", "undecodable-mismatch"),
    (".pixels.npy", "missing"), (".pixels.npy", "truncated"), (".pixels.npy", "garbage"),
])
def test_a_damaged_image_cache_is_rebuilt_and_reads_the_images(tmp_path: Path, suffix: str, how: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path / "mine")
    want = _pixels(_build_folder(root))
    # the decoded images themselves: a solid 40x30 picture stored at the 16 px stage's load size (19 px
    # shorter side, 76/64 of it, as StackGAN's loader), in its colour
    assert [tuple(p[0, 0]) for p in want] == COLOURS and all(p.shape == (19, 25, 3) for p in want)
    (stem,) = [p.name[: -len(".index.npy")] for p in (tmp_path / "cache").glob("*.index.npy")]
    _damage(tmp_path / "cache" / f"{stem}{suffix}", how)
    with caplog.at_level(logging.WARNING):
        data = _build_folder(root)
    assert len(data) == 4 and all(np.array_equal(a, b) for a, b in zip(_pixels(data), want, strict=True))
    if how != "missing" or suffix != ".index.npy":  # no index: a cache never built, nothing to say
        said = " ".join(caplog.text.split())
        assert "rebuil" in said and stem in said, caplog.text
    for name in (f"{stem}.index.npy", f"{stem}.meta.json", f"{stem}.pixels.npy"):
        assert (tmp_path / "cache" / name).is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # whole again: read as it is, nothing rebuilt
        _build_folder(root)
    assert "rebuil" not in caplog.text


def _weights(run: Path) -> dict:
    import torch

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


@pytest.mark.parametrize("how", ["truncated", "wrong-shape", "wrong-content"])
def test_a_damaged_shapes_render_is_rendered_again(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture, how: str) -> None:
    import torch

    monkeypatch.chdir(tmp_path)  # a cache of its own: the damage never reaches another test's
    assert cli("run", TINY, "--out", tmp_path / "first", "--max-steps", 1)[0] == 0
    (path,) = (tmp_path / ".ganstack-cache").glob("shapes-*-train-*.npy")
    if how == "wrong-content":  # the right shape, other pictures (e.g. another version of the renderer)
        np.save(path, 255 - np.load(path))
    elif how == "wrong-shape":
        np.save(path, np.zeros((3, 32, 32, 3), dtype=np.uint8))
    else:
        _damage(path, how)
    with caplog.at_level(logging.WARNING):  # a user sees the warning on stderr (logging's last resort)
        code, out, err = cli("run", TINY, "--out", tmp_path / "second", "--max-steps", 1)
    assert code == 0, out + err
    said = " ".join((out + err + caplog.text).split())
    assert "Traceback" not in said and "rebuil" in said and path.name in said
    a, b = _weights(tmp_path / "first"), _weights(tmp_path / "second")
    assert all(torch.equal(a[k], b[k]) for k in a)  # trained on the same pictures


def test_ctrl_c_while_the_cache_is_built_stops_without_decoding_the_rest(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from ganstack_defaults.data import cache

    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "one.png")
    images = [cache.ImageFile(tmp_path / "one.png")] * 400
    calls: list[int] = []

    def decode(out, image, shorter, shape):  # noqa: ANN001, ANN202 - a slow decoder; Ctrl-C during the first
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        time.sleep(0.01)

    monkeypatch.setattr(cache, "_decode_into", decode)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_images(tmp_path / "cache", "x", images, 8, skip_corrupt=False)
    # the images not started are dropped (decoding all 400 would take 2 s on 2 cores; a couple run on)
    assert len(calls) < 200
    assert not list((tmp_path / "cache").glob("*.index.npy")) and not list((tmp_path / "cache").glob(".*.tmp"))
