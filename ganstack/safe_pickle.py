"""Load pickles that may come from strangers: only numpy arrays and plain containers get through.

A pickle names the functions it calls to rebuild itself, so loading an untrusted one can run
anything (``os.system``). StackGAN's preprocessed data ships as pickles, so they are read with an
unpickler whose ``find_class`` admits an explicit allow-list and refuses every other global.
Python-2 pickles are decoded with ``encoding='latin1'``, which numpy understands for array bytes.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
from pathlib import Path
from typing import Any

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


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set), as the unpickler itself maps them, checked after mapping
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(module, name)
        return super().find_class(module, name)


def load_pickle(path: str | os.PathLike[str]) -> Any:
    """Load ``path`` with :class:`SafeUnpickler`; anything else it would need is a DataError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return SafeUnpickler(f, encoding="latin1").load()
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError) as exc:
        raise DataError(f"not a readable pickle ({type(exc).__name__}: {exc})", file=str(path),
                        fix="the file may be truncated or of another format; download it again") from None
