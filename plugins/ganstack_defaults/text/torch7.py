"""A reader of Torch7's binary serialisation (``torch.save``'s ``.t7`` files), enough for trained nets.

Reed et al.'s char-CNN-RNN encoders exist only as ``.t7`` files; this reads them without Lua or
an extra package. A file is one object, written recursively: numbers, strings, booleans, Lua
tables and Torch classes (an ``nn`` module is its class name plus a table of its fields; a tensor
is its sizes, strides and offset into a storage). Tables and Torch objects carry an index, so an
object met twice (a storage shared by weight views, a graph node) is written once and referenced
after; the reader keeps that identity.

Nothing in a file is executed: a serialised Lua function is kept as its bytecode. Sizes are
checked against the bytes left before anything is allocated, and the reader is iterative, so a
corrupt or hostile file ends in a :class:`Torch7Error` (with the byte offset), never a crash.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

_NIL, _NUMBER, _STRING, _TABLE, _TORCH, _BOOLEAN = 0, 1, 2, 3, 4, 5
_FUNCTION, _LEGACY_RECUR_FUNCTION, _RECUR_FUNCTION = 6, 7, 8

# Element types of the tensor and storage classes (torch.CudaTensor holds floats); CUDA ones are
# saved as their host bytes.
_ELEMENTS = {"Double": "<f8", "Float": "<f4", "Half": "<f2", "Long": "<i8", "Int": "<i4", "Short": "<i2",
             "Char": "i1", "Byte": "u1"}
_DTYPES: dict[str, np.dtype] = {
    f"torch.{device}{'' if device and element == 'Float' else element}{kind}": np.dtype(code)
    for element, code in _ELEMENTS.items() for device in ("", "Cuda") for kind in ("Tensor", "Storage")
}


class Torch7Error(ValueError):
    """The bytes are not a Torch7 serialisation this reader understands."""


class LuaTable(dict):
    """A Lua table: a dict whose integral number keys are ints. Compared and hashed by identity, as
    Lua tables are, so a table can key another (nngraph's ``mapindex`` does)."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    def sequence(self) -> list[Any]:
        """The values at keys 1, 2, ... up to the first missing one (Lua's ``ipairs``)."""
        out = []
        while len(out) + 1 in self:
            out.append(self[len(out) + 1])
        return out


class TorchObject:
    """An instance of a Torch class other than a tensor or storage: ``typename`` and its field table."""

    def __init__(self, typename: str, version: int) -> None:
        self.typename = typename
        self.version = version
        self.fields: Any = LuaTable()

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default) if isinstance(self.fields, dict) else default

    def __repr__(self) -> str:
        return f"TorchObject({self.typename!r})"


class Storage:
    """A flat typed buffer that tensors view."""

    def __init__(self, typename: str, data: np.ndarray) -> None:
        self.typename = typename
        self.data = data


class Tensor:
    """A view into a :class:`Storage`: sizes, strides (in elements) and a 0-based offset."""

    def __init__(self, typename: str, size: tuple[int, ...], stride: tuple[int, ...], offset: int,
                 storage: Storage | None) -> None:
        self.typename = typename
        self.size = size
        self.stride = stride
        self.offset = offset
        self.storage = storage

    def numpy(self) -> np.ndarray:
        """A copy of the tensor's elements, checked to lie inside its storage."""
        if any(n < 0 for n in self.size):
            raise Torch7Error(f"a {self.typename} of size {self.size}")
        if not self.size or 0 in self.size:  # Torch7's empty tensor has no dimensions
            return np.zeros(self.size or (0,), dtype=_DTYPES[self.typename])
        if self.storage is None:
            raise Torch7Error(f"a {self.typename} of size {self.size} has no storage")
        data = self.storage.data
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or any(s < 0 for s in self.stride) or last >= len(data):
            raise Torch7Error(f"a {self.typename} of size {self.size} reaches past its storage "
                              f"of {len(data)} elements")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * data.itemsize for s in self.stride],
            writeable=False)
        return np.array(view)


class LuaFunction:
    """A serialised Lua function, kept as bytecode and never run."""

    def __init__(self, bytecode: bytes) -> None:
        self.bytecode = bytecode
        self.upvalues: Any = None


class _Reader:
    """Reads one object from ``data``; ``_object`` is a generator so nesting costs no Python stack."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.memo: dict[int, Any] = {}

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise Torch7Error(f"the data ends early (byte {self.pos} of {len(self.data)}, {n} more needed)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def _int(self) -> int:
        return struct.unpack("<i", self._take(4))[0]

    def _long(self) -> int:
        return struct.unpack("<q", self._take(8))[0]

    def _count(self, n: int, item_bytes: int, what: str) -> int:
        if n < 0 or n * item_bytes > len(self.data) - self.pos:
            raise Torch7Error(f"byte {self.pos}: {what} of {n} entries does not fit in the file")
        return n

    def _string(self) -> bytes:
        return bytes(self._take(self._count(self._int(), 1, "a string")))

    def read(self) -> Any:
        """Run the object generators with an explicit stack; each yields to ask for a nested object."""
        stack: list[Generator[None, Any, Any]] = [self._object()]
        value: Any = None
        while stack:
            try:
                stack[-1].send(value)
                stack.append(self._object())
                value = None
            except StopIteration as done:
                stack.pop()
                value = done.value
        return value

    def _object(self) -> Generator[None, Any, Any]:
        start = self.pos
        kind = self._int()
        if kind == _NIL:
            return None
        if kind == _NUMBER:
            return struct.unpack("<d", self._take(8))[0]
        if kind == _BOOLEAN:
            return self._int() == 1
        if kind == _STRING:
            return self._string().decode("utf-8", errors="replace")
        if kind in (_TABLE, _TORCH, _RECUR_FUNCTION, _LEGACY_RECUR_FUNCTION):
            index = self._int()
            if index in self.memo:
                return self.memo[index]
        if kind == _TABLE:
            table = self.memo[index] = LuaTable()
            for _ in range(self._count(self._int(), 8, "a table")):
                key = yield
                value = yield
                if isinstance(key, float) and key.is_integer():
                    key = int(key)
                if key is None or isinstance(key, (list, np.ndarray)):
                    raise Torch7Error(f"byte {start}: a table key of type {type(key).__name__}")
                table[key] = value
            return table
        if kind == _TORCH:
            return (yield from self._torch(index))
        if kind in (_FUNCTION, _RECUR_FUNCTION, _LEGACY_RECUR_FUNCTION):
            function = LuaFunction(self._string())
            if kind != _FUNCTION:
                self.memo[index] = function
            function.upvalues = yield
            return function
        raise Torch7Error(f"byte {start}: unknown object type {kind} (not a Torch7 binary file, or a "
                          "corrupt one)")

    def _torch(self, index: int) -> Generator[None, Any, Any]:
        version_or_name = self._string().decode("latin1")
        if version_or_name.startswith("V "):
            try:
                version = int(version_or_name[2:])
            except ValueError:
                raise Torch7Error(f"byte {self.pos}: bad class version {version_or_name!r}") from None
            typename = self._string().decode("latin1")
        else:
            version, typename = 0, version_or_name
        if typename.endswith("Storage") and typename in _DTYPES:
            dtype = _DTYPES[typename]
            n = self._count(self._long(), dtype.itemsize, f"a {typename}")
            data = np.frombuffer(self._take(n * dtype.itemsize), dtype=dtype).copy()
            storage = self.memo[index] = Storage(typename, data)
            return storage
        if typename.endswith("Tensor") and typename in _DTYPES:
            ndim = self._count(self._int(), 16, f"a {typename}'s dimensions")
            size = tuple(self._long() for _ in range(ndim))
            stride = tuple(self._long() for _ in range(ndim))
            offset = self._long() - 1
            tensor = self.memo[index] = Tensor(typename, size, stride, offset, None)
            storage = yield
            if storage is not None and not isinstance(storage, Storage):
                raise Torch7Error(f"a {typename} whose storage is a {type(storage).__name__}")
            tensor.storage = storage
            return tensor
        obj = self.memo[index] = TorchObject(typename, version)
        obj.fields = yield  # an nn module and the like: the table of its fields
        return obj


def read_torch7(data: bytes) -> Any:
    """The object serialised in ``data``."""
    reader = _Reader(data)
    obj = reader.read()
    return obj


def load_torch7(path: str | Path) -> Any:
    """The object in the ``.t7`` file at ``path`` (``OSError`` and :class:`Torch7Error` propagate)."""
    return read_torch7(Path(path).read_bytes())
