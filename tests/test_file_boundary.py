"""The file boundary: text in another encoding, writes that fail, a torn metrics.jsonl.

Each case runs the CLI and expects exit 2 and one paragraph naming the file and a fix, no
traceback, and nothing half-written left behind. Tests run as root, which ignores chmod, so a
read-only or full disk is simulated by a file standing where a folder should be, or by an
``os.replace``/``open`` that fails as the kernel would.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from conftest import TINY, write

SHAPES = "dataset: {type: shapes, train_size: 48, test_size: 16, holdout_size: 16}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ganstack.cli.main import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["run", str(TINY), "--out", str(out), "--max-steps", "2"]) == 0
    return out


def _refused(result: tuple[int, str, str], *expected: str) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    assert "Traceback" not in out + err and "Fix:" in err
    message = " ".join(err.split())
    for text in expected:
        assert text in message, message
    return message


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _full_disk(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``os.replace`` onto a file called ``name`` fails as a full disk does."""
    real = os.replace

    def replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


# --- text that is not UTF-8 ---------------------------------------------------------------------

def test_a_captions_file_not_in_utf8(cli, tiny_run: Path, tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_bytes("a red circle\nun carré bleu\n".encode("latin-1"))
    _refused(cli("sample", tiny_run, "--captions", captions, "--out", tmp_path / "s"),
             str(captions), "--captions", "not UTF-8 text: line 2, column 8", "iconv")
    assert not (tmp_path / "s").exists()


def test_a_missing_or_empty_captions_file(cli, tiny_run: Path, tmp_path: Path) -> None:
    _refused(cli("sample", tiny_run, "--captions", tmp_path / "none.txt"), "none.txt", "not found")
    _refused(cli("sample", tiny_run, "--captions", write(tmp_path / "empty.txt", "\n \n")), "has no captions")


def _folder(root: Path, captions: bytes) -> Path:
    from PIL import Image

    (root / "pics").mkdir(parents=True)
    for n in range(2):
        Image.new("RGB", (20, 20), (200 * n, 10, 10)).save(root / "pics" / f"img{n}.png")
    (root / "captions.jsonl").write_bytes(captions)
    return root


def _folder_recipe(tmp_path: Path, root: str = "mine") -> Path:
    return write(tmp_path / "mine.yaml", TINY.read_text().replace(
        SHAPES, f"dataset: {{type: captioned-folder, root: {root}, test_fraction: 0.0}}"))


def test_a_captions_jsonl_not_in_utf8(cli, tmp_path: Path) -> None:
    lines = ['{"image": "pics/img0.png", "captions": ["a red square"]}',
             '{"image": "pics/img1.png", "captions": ["un carré"]}']
    _folder(tmp_path / "mine", "\n".join(lines).encode("latin-1"))
    _refused(cli("data", "preview", _folder_recipe(tmp_path), "--out", tmp_path / "p"),
             "captions.jsonl", "not UTF-8 text: line 2")


def test_a_caption_sidecar_not_in_utf8(cli, tmp_path: Path) -> None:
    root = _folder(tmp_path / "mine", b"")
    (root / "captions.jsonl").unlink()
    (root / "pics" / "img0.txt").write_text("a red square\n")
    (root / "pics" / "img1.txt").write_bytes("une forêt\n".encode("cp1252"))
    _refused(cli("data", "preview", _folder_recipe(tmp_path), "--out", tmp_path / "p"),
             "img1.txt", "not UTF-8 text: line 1")


# --- writes that fail ---------------------------------------------------------------------------

def test_sample_into_a_folder_under_a_file(cli, tiny_run: Path, tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "x")
    _refused(cli("sample", tiny_run, "--text", "a red circle", "--out", blocker / "sub"),
             str(blocker / "sub"), "cannot write", "choose another --out")


def test_sample_pngs_on_a_full_disk(cli, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _full_disk(monkeypatch, "caption000_sample00_stage2.png")
    out = tmp_path / "s"
    _refused(cli("sample", tiny_run, "--text", "a red circle", "--out", out),
             str(out / "caption000_sample00_stage2.png"), "No space left on device", "free space")
    _no_temporaries(out)
    assert not (out / "manifest.jsonl").exists()


def test_sample_manifest_on_a_full_disk(cli, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _full_disk(monkeypatch, "manifest.jsonl")
    out = tmp_path / "s"
    _refused(cli("sample", tiny_run, "--text", "a red circle", "--out", out), str(out / "manifest.jsonl"))
    _no_temporaries(out)


def test_eval_json_under_a_file(cli, tiny_run: Path, tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "x")
    _refused(cli("eval", tiny_run, "--metric", "shapes-alignment", "--n", 4, "--out", blocker / "eval.json"),
             str(blocker), "cannot write")


def test_environment_json_on_a_full_disk(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _full_disk(monkeypatch, "environment.json")
    out = tmp_path / "run"
    _refused(cli("run", TINY, "--out", out, "--max-steps", 1), str(out / "environment.json"), "No space left")
    _no_temporaries(out)


def test_metrics_jsonl_that_cannot_be_opened(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "metrics.jsonl").mkdir(parents=True)  # a folder where the log goes
    _refused(cli("run", TINY, "--out", out, "--max-steps", 1), str(out / "metrics.jsonl"), "cannot write")


def test_metrics_jsonl_on_a_full_disk_mid_run(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ganstack import atomic

    class FullFile:
        def __init__(self, fh) -> None:
            self._fh = fh

        def write(self, _text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self._fh, name)

    real_init = atomic.AppendLog.__init__

    def init(self, path: Path) -> None:
        real_init(self, path)
        self._fh = FullFile(self._fh)

    monkeypatch.setattr(atomic.AppendLog, "__init__", init)
    out = tmp_path / "run"
    _refused(cli("run", TINY, "--out", out, "--max-steps", 2), str(out / "metrics.jsonl"), "No space left")


# --- a torn metrics.jsonl -----------------------------------------------------------------------

def test_resume_after_a_torn_metrics_line(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 2)[0] == 0
    log = out / "metrics.jsonl"
    before = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in before][-1] == 2
    log.write_text(log.read_text() + '{"step": 3, "stage1/d_to')  # what a kill mid-write leaves
    code, stdout, err = cli("run", "--resume", out, "--max-steps", 4)
    assert code == 0, stdout + err
    after = [json.loads(line) for line in log.read_text().splitlines()]  # every line parses
    assert after[: len(before)] == before
    assert [r["step"] for r in after if "step" in r][-2:] == [3, 4]


def test_a_damaged_line_before_the_last_is_named(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("run", TINY, "--out", out, "--max-steps", 2)[0] == 0
    log = out / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    _refused(cli("run", "--resume", out, "--max-steps", 3), str(log), "line 2 is not a JSON object")


def test_pretrain_encoder_into_a_folder_under_a_file(cli, tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "x")
    _refused(cli("pretrain-encoder", TINY, "--out", blocker / "bow.pt", "--steps", 2, "--batch-size", 8),
             str(blocker), "cannot write", "choose another --out")


def test_eval_option_that_is_not_yaml(cli, tiny_run: Path) -> None:
    _refused(cli("eval", tiny_run, "--metric", "shapes-alignment", "--option", "seed=[1"),
             "--option 'seed=[1'", "invalid YAML")


def test_data_preview_into_a_folder_under_a_file(cli, tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "x")
    _refused(cli("data", "preview", TINY, "--n", 1, "--out", blocker / "p"), str(blocker / "p"), "cannot write",
             "a file stands where a folder is needed")


def test_a_read_only_folder_names_the_file_and_a_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores chmod, so the kernel's answer for a read-only folder is given by os.open."""
    from ganstack.atomic import write_text_atomic
    from ganstack.errors import WriteError

    real = os.open

    def read_only(path, flags, *args):  # noqa: ANN001, ANN202
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(WriteError) as info:
        write_text_atomic(tmp_path / "x" / "environment.json", "{}")
    message = str(info.value)
    assert str(tmp_path / "x" / "environment.json") in message and "Read-only file system" in message
    assert "make the folder writable" in message and isinstance(info.value, OSError)
    assert info.value.errno == errno.EROFS
    assert [p.name for p in (tmp_path / "x").iterdir()] == []


@pytest.mark.parametrize(("content", "expected"), [(b"{ not json", "not JSON"),
                                                   ('{"a": "é"}'.encode("latin-1"), "not UTF-8 text"),
                                                   (b"[1, 2]", "not a JSON object")])
def test_a_damaged_minilm_config_is_a_plugin_error(tmp_path: Path, content: bytes, expected: str) -> None:
    from ganstack.errors import PluginError
    from ganstack_defaults.text.minilm import _check_config

    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(PluginError, match=expected) as info:
        _check_config(tmp_path)
    assert "config.json" in str(info.value) and "--force-reinstall" in str(info.value)
