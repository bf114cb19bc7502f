"""The allow-list unpickler: data loads, code does not run."""

from __future__ import annotations

import builtins
import collections
import marshal
import os
import pickle
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ganstack.errors import DataError
from ganstack.safe_pickle import load_pickle


def _py2(obj: Any) -> bytes:
    """Opcodes Python 2's pickle (protocol 2) writes for ``obj``: str is a byte string there."""
    if isinstance(obj, str):
        raw = obj.encode("latin1")
        return b"T" + struct.pack("<I", len(raw)) + raw
    if isinstance(obj, bool) or not isinstance(obj, (int, list, np.ndarray)):
        raise TypeError(type(obj))
    if isinstance(obj, int):
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(v) for v in obj) + b"e"
    array = np.ascontiguousarray(obj, dtype="<f4")
    shape = b"(" + b"".join(_py2(int(d)) for d in array.shape) + b"t"
    dtype = b"cnumpy\ndtype\n" + _py2("f4") + b"K\x00K\x01\x87R(K\x03" + _py2("<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2("b") + b"\x87R("
            + b"K\x01" + shape + dtype + b"\x89" + _py2(array.tobytes().decode("latin1")) + b"tb")


def py2_pickle(obj: Any) -> bytes:
    """``obj`` (str, int, list, float32 array) as Python 2 would have pickled it with protocol 2."""
    return b"\x80\x02" + _py2(obj) + b"."


class _Exploit:
    """Unpickling it would call ``func(*args)``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_and_numpy_arrays_load(tmp_path: Path, protocol: int) -> None:
    data = {
        "list": [1, 2.5, "text", None, True, (3, 4)],
        "set": {1, 2}, "frozen": frozenset({"a"}), "bytes": b"\x00\xffraw", "buffer": bytearray(b"ab"),
        "complex": 1 + 2j, "ordered": collections.OrderedDict(a=1),
        "array": np.arange(12, dtype=np.float32).reshape(3, 4) / 7, "ints": np.array([1, -2], dtype=np.int64),
        "scalar": np.float32(0.25),
    }
    loaded = load_pickle(_write(tmp_path / "data.pickle", pickle.dumps(data, protocol=protocol)))
    assert loaded.keys() == data.keys()
    for key in ("list", "set", "frozen", "bytes", "buffer", "complex", "ordered", "scalar"):
        assert loaded[key] == data[key]
    np.testing.assert_array_equal(loaded["array"], data["array"])
    assert loaded["array"].dtype == np.float32 and loaded["ints"].dtype == np.int64


def test_python2_pickles_of_arrays_and_strings_load(tmp_path: Path) -> None:
    # 0.5 + k has float32 bytes >= 0x80, which only decode right through latin1
    array = np.arange(6, dtype=np.float32).reshape(2, 3) + 0.5
    assert max(array.tobytes()) >= 0x80
    loaded = load_pickle(_write(tmp_path / "emb.pickle", py2_pickle(array)))
    np.testing.assert_array_equal(loaded, array)
    assert loaded.dtype == np.float32
    keys = load_pickle(_write(tmp_path / "keys.pickle", py2_pickle(["001.Bird/Bird_0001_1", "caf\xe9"])))
    assert keys == ["001.Bird/Bird_0001_1", "caf\xe9"]


def test_a_pickle_that_runs_a_command_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "evil.pickle", pickle.dumps([1, _Exploit(os.system, f"touch {marker}")], protocol=2))
    with pytest.raises(DataError) as info:
        load_pickle(path)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message and "system" in message and "refused" in message


@pytest.mark.parametrize("payload", [
    _Exploit(marshal.loads, marshal.dumps(compile("1 + 1", "<x>", "eval"))),  # a code object
    _Exploit(builtins.eval, "1 + 1"),
    _Exploit(builtins.getattr, "", "join"),
    _Exploit(subprocess.Popen, ["true"]),
    _Exploit(np.load, "x.npy"),  # numpy, but not an array constructor
])
def test_globals_outside_the_allow_list_are_refused(tmp_path: Path, payload: _Exploit) -> None:
    path = _write(tmp_path / "bad.pickle", pickle.dumps({"nested": [payload]}))
    with pytest.raises(DataError, match="refused") as info:
        load_pickle(path)
    assert payload.func.__name__ in str(info.value)


def test_missing_and_truncated_files_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        load_pickle(tmp_path / "absent.pickle")
    assert "absent.pickle" in str(info.value)
    path = _write(tmp_path / "cut.pickle", pickle.dumps(list(range(100)))[:-20])
    with pytest.raises(DataError, match="not a readable pickle") as info:
        load_pickle(path)
    assert str(path) in str(info.value)


class _Call:
    """Unpickling it calls ``func(*args)`` (an admitted constructor, with arguments of the attacker's choice)."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


@pytest.mark.parametrize(
    ("payload", "asks"),
    [
        (_Call(np.ndarray.__reduce__(np.zeros(0))[0], np.ndarray, (10**12,), b"b"), "_reconstruct"),
        (_Call(np.ndarray, (10**6, 10**6), np.dtype("float32")), "numpy.ndarray"),
        (_Call(bytes, 10**12), "bytes(1000000000000)"),
        (_Call(bytearray, 10**12), "bytearray"),
        ([_Call(bytes, 400_000 + i) for i in range(100)], "bytes(4"),  # each small, 40 MB in all from 2 KB
    ],
)
def test_absurd_allocations_are_refused_before_they_happen(tmp_path: Path, payload: Any, asks: str) -> None:
    path = _write(tmp_path / "big.pickle", pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match="refused to load") as info:
        load_pickle(path)
    message = str(info.value)
    assert asks in message and "bytes" in message and str(path) in message


def test_a_large_real_array_still_loads(tmp_path: Path) -> None:
    array = np.arange(2_000_000, dtype=np.float32).reshape(1000, 2000)
    for protocol in (2, 5):
        loaded = load_pickle(_write(tmp_path / f"big{protocol}.pickle", pickle.dumps(array, protocol=protocol)))
        np.testing.assert_array_equal(loaded, array)
