"""Load pickles that may come from strangers: only numpy arrays and plain containers get through.

A pickle names the functions it calls to rebuild itself, so loading an untrusted one can run
anything (``os.system``). StackGAN's preprocessed data ships as pickles, so they are read with an
unpickler whose ``find_class`` admits an explicit allow-list and refuses every other global.
Python-2 pickles are decoded with ``encoding='latin1'``, which numpy understands for array bytes.
The admitted constructors are also held to a memory budget of a few times the file's size, so a
crafted header (an array "of 10^12 elements", ``bytes(10**12)``) is refused before it allocates.
"""

from __future__ import annotations

import _compat_pickle
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ganstack.errors import DataError

# (module, name) pairs a data pickle legitimately needs; numpy moved ``core`` to ``_core`` in 2.0.
_NUMPY = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol-5 arrays
    ("numpy._core.numeric", "_frombuffer"),
}
_CONTAINERS = {
    ("builtins", name)
    for name in ("list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "complex")
} | {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol 2 spells a bytes object (numpy array data included)
}
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(_NUMPY | _CONTAINERS)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global outside :data:`ALLOWED_GLOBALS`."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class RefusedAllocation(pickle.UnpicklingError):
    """An admitted constructor was asked for far more memory than the file's contents could fill."""

    def __init__(self, call: str, nbytes: int, budget: int) -> None:
        super().__init__(call)
        self.call, self.nbytes, self.budget = call, nbytes, budget


# Constructors are asked for memory by their arguments (ndarray((10**12,)), bytes(10**12)); data a real
# pickle holds is in the file, so allocations beyond a few times its size (plus slack) are an attack.
_SLACK = 1 << 20
_FACTOR = 4


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`, and lets none of them allocate more
    memory in all than ``budget`` bytes (by default a few times the file's size)."""

    def __init__(self, file: BinaryIO, *, budget: int, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._left = budget
        self._budget = budget

    def _spend(self, call: str, nbytes: int) -> None:
        if nbytes > self._left:
            raise RefusedAllocation(call, nbytes, self._budget)
        self._left -= nbytes

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set), as the unpickler itself maps them, checked after mapping
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(module, name)
        found = super().find_class(module, name)
        if name == "_reconstruct":
            return self._reconstruct(found)
        if (module, name) == ("numpy", "ndarray"):
            return self._ndarray_class()
        if (module, name) in {("builtins", "bytes"), ("builtins", "bytearray")}:
            return self._sized_bytes(found)
        return found

    def _array_bytes(self, call: str, shape: Any, dtype: Any) -> None:
        import numpy as np

        dims = shape if isinstance(shape, (tuple, list)) else (shape,)
        try:
            count = math.prod(int(d) for d in dims)
            itemsize = np.dtype(dtype if dtype is not None else float).itemsize
        except (TypeError, ValueError, OverflowError):
            return  # numpy itself refuses these arguments
        self._spend(f"{call}(shape={tuple(dims)!r})", max(count, 0) * itemsize)

    def _reconstruct(self, real: Callable[..., Any]) -> Callable[..., Any]:
        guarded = self._ndarray_class()

        def reconstruct(subtype: Any, shape: Any, dtype: Any, *args: Any) -> Any:
            self._array_bytes("numpy _reconstruct", shape, dtype if not isinstance(dtype, bytes) else "b")
            import numpy as np

            return real(np.ndarray if subtype is guarded else subtype, shape, dtype, *args)

        return reconstruct

    def _ndarray_class(self) -> type:
        if not hasattr(self, "_guarded_ndarray"):
            import numpy as np

            unpickler = self

            class GuardedNdarray:
                """Stands for numpy.ndarray: builds a plain array once its size is within budget."""

                def __new__(cls, shape: Any = (), dtype: Any = float, *args: Any, **kwargs: Any) -> Any:
                    unpickler._array_bytes("numpy.ndarray", shape, dtype)
                    return np.ndarray.__new__(np.ndarray, shape, dtype, *args, **kwargs)

            self._guarded_ndarray = GuardedNdarray
        return self._guarded_ndarray

    def _sized_bytes(self, real: type) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], int):
                self._spend(f"{real.__name__}({args[0]})", args[0])
            return real(*args, **kwargs)

        return build


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Load ``path`` with :class:`SafeUnpickler`; anything else it would need is a DataError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            budget = _FACTOR * os.fstat(f.fileno()).st_size + _SLACK
            return SafeUnpickler(f, budget=budget, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path),
                        fix="check the path; docs/datasets.md says where each dataset's files go") from None
    except RefusedGlobal as exc:
        raise DataError(
            f"refused to load: the pickle asks for '{exc.qualified}', which a data file never needs "
            "(only numpy arrays and plain containers are admitted; a pickle can run code)",
            file=str(path),
            fix="only use pickles from a source you trust, or re-save the data as plain numpy arrays",
        ) from None
    except RefusedAllocation as exc:
        raise DataError(
            f"refused to load: the pickle asks {exc.call} for {exc.nbytes:,} bytes, far more than its "
            f"{path.stat().st_size:,} bytes of data could fill (at most {exc.budget:,} are allowed)",
            file=str(path), fix="the file is damaged or crafted; download the data again from its source",
        ) from None
    except MemoryError:
        raise DataError("refused to load: the pickle asks for more memory than this machine has", file=str(path),
                        fix="the file is damaged or crafted; download the data again from its source") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"not a readable pickle ({type(exc).__name__}: {str(exc)[:200]})", file=str(path),
                        fix="the file may be truncated or of another format; download it again") from None
    except IsADirectoryError:
        raise DataError("a folder, not a pickle file", file=str(path), fix="give the file's path") from None
