"""Reading the text files users hand to ganstack (recipes, captions, tables): UTF-8 or a clear error.

Every text file is read here, so a file in another encoding, a folder where a file should be or an
unreadable file ends in one paragraph naming the file and the line, never in ``UnicodeDecodeError``.
A UTF-8 byte-order mark (what some Windows editors write) is accepted and dropped.
"""

from __future__ import annotations

from pathlib import Path

from ganstack.errors import UserError

REENCODE = "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 OLD > NEW`, or your editor's 'save with encoding')"


MAX_BYTES = 1 << 30  # no text file ganstack reads comes near this; /dev/zero or a runaway pipe would


def read_text(path: Path, *, what: str = "file", error: type[UserError] = UserError,
              fix: str | None = None, max_bytes: int = MAX_BYTES, decode_fix: str = REENCODE) -> str:
    """The text of ``path``; ``what`` names it in messages, ``error`` is the class raised, ``fix`` says
    what the file should be when it is missing or unreadable, ``decode_fix`` what to do when it is not
    UTF-8. More than ``max_bytes`` is refused (read up to there, so an endless stream cannot hang the
    reader)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} not found", file=str(path), fix=fix or "check the path") from None
    except IsADirectoryError:
        raise error(f"{what} is a folder, not a file", file=str(path), fix=fix or "give the file's path") from None
    except OSError as exc:
        raise error(f"cannot read the {what}: {exc.strerror or exc}", file=str(path),
                    fix=fix or "check the file's permissions") from None
    if len(data) > max_bytes:
        raise error(f"{what} is larger than {max_bytes:,} bytes, far more than such a file holds", file=str(path),
                    fix=fix or "check the path")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(f"{what} is not UTF-8 text: line {line}, column {column} holds the byte "
                    f"0x{data[exc.start]:02x}", file=str(path), fix=decode_fix) from None
