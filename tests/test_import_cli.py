"""`ganstack import KIND`: an importer plugin's options become its flags, errors name the flag."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from ganstack.cli.main import main
from ganstack.hookspecs import hookimpl
from ganstack.testing import registered_plugin


@attrs.define
class CopyOptions:
    source: str = attrs.field(metadata={"positional": True, "doc": "file to read"})
    out: str = attrs.field(metadata={"doc": "file to write"})
    repeat: int = attrs.field(default=1, validator=attrs.validators.ge(1), metadata={"doc": "copies"})
    net_d: str | None = attrs.field(default=None, metadata={"flag": "--netD", "doc": "another file"})
    upper: bool = attrs.field(default=False, metadata={"doc": "shout"})


def copy_text(options: CopyOptions, ctx) -> None:
    """Copy a text file, repeated."""
    text = Path(options.source).read_text() * options.repeat
    if options.net_d:
        text += Path(options.net_d).read_text()
    Path(options.out).write_text(text.upper() if options.upper else text)
    ctx.report(f"wrote [{options.out}]")


class CopyPlugin:
    @hookimpl
    def register_components(self, register) -> None:
        register("importer", "copy-text", copy_text, options=CopyOptions)


@pytest.fixture
def copy_importer():
    with registered_plugin(CopyPlugin(), "copy-importer"):
        yield


def test_import_runs_the_importer_with_flags_from_its_options(copy_importer, tmp_path, capsys) -> None:
    (tmp_path / "a.txt").write_text("ab")
    (tmp_path / "d.txt").write_text("!")
    out = tmp_path / "b.txt"
    rc = main(["import", "copy-text", str(tmp_path / "a.txt"), "--out", str(out), "--repeat", "2",
               "--netD", str(tmp_path / "d.txt"), "--upper"])
    assert rc == 0
    assert out.read_text() == "ABAB!"
    assert f"wrote [{out}]" in capsys.readouterr().out  # printed as text, not as markup


def test_import_lists_importers(copy_importer, capsys) -> None:
    assert main(["import"]) == 0
    assert "copy-text" in capsys.readouterr().out


def test_bad_flag_value_names_the_flag(copy_importer, tmp_path, capsys) -> None:
    rc = main(["import", "copy-text", "a.txt", "--out", str(tmp_path / "b"), "--repeat", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "ganstack import copy-text --repeat" in err
    assert "Traceback" not in err


def test_unknown_importer_is_a_user_error(capsys) -> None:
    assert main(["import", "no-such-kind"]) == 2
    assert "unknown importer 'no-such-kind'" in capsys.readouterr().err
