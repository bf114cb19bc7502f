"""Reading the state-dict files official GAN code wrote, from PyTorch 0.3 on, without running their pickles.

The official StackGAN code saved ``torch.save(net.state_dict(), path)``: with PyTorch 0.3/0.4 and
Python 2 that is a legacy (non-zip) pickle of an ``OrderedDict`` of (often CUDA) tensors; with
``DataParallel`` every key starts with ``module.``. Both read here with ``weights_only=True``, onto
the CPU, so a file cannot run code. Importers of every official format share this reader.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ganstack.errors import CheckpointError

WRAPPER_PREFIX = "module."
_REFUSED_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")


def strip_wrapper_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop ``module.`` (``DataParallel``/``DistributedDataParallel``, possibly nested) from every key."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIX):
            key = key[len(WRAPPER_PREFIX):]
        out[key] = value
    return out


def is_legacy_file(path: str | Path) -> bool:
    """True for the pre-1.6 (non-zip) serialisation that PyTorch 0.3/0.4 wrote."""
    with open(path, "rb") as fh:
        return fh.read(4) != b"PK\x03\x04"


def _unwrap(obj: Any, path: str, flag: str | None) -> Mapping[str, Any]:
    if isinstance(obj, Mapping) and obj.get("format") == "ganstack-checkpoint":
        raise CheckpointError("this is already a ganstack checkpoint, not an official state dict", file=path,
                              path=flag, fix="use it directly: `ganstack sample`, `ganstack eval` and init_from "
                              "read it as it is")
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # {"epoch": ..., "state_dict": ...}, as some training scripts save
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"the file holds a {type(obj).__name__}, not a state dict of tensors", file=path,
                              path=flag, fix="give the file the official code saved with "
                              "torch.save(net.state_dict(), ...), e.g. netG_epoch_90.pth")
    return obj


def read_state_dict(path: str | Path, *, flag: str | None = None) -> dict[str, Tensor]:
    """The tensors of a state-dict file, on the CPU, with ``module.`` prefixes stripped.

    Zip and legacy (PyTorch 0.3/0.4, Python 2) files alike are read with ``weights_only=True``;
    a file that asks for anything else is refused, naming what it asked for. ``flag`` is the
    command-line flag that named the file, for error messages.
    """
    return strip_wrapper_prefix(load_state_dict_file(path, flag=flag))


def load_state_dict_file(path: str | Path, *, flag: str | None = None) -> dict[str, Tensor]:
    """:func:`read_state_dict` with the keys as saved (``module.`` prefixes kept)."""
    file = str(path)
    if not Path(path).is_file():
        raise CheckpointError("file not found", file=file, path=flag,
                              fix="give the path of the .pth file the official code saved")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        asked = _REFUSED_GLOBAL.search(text)
        if asked:
            raise CheckpointError(f"the file asks to load '{asked.group(1)}', which a state dict of tensors never "
                                  "needs, so it is refused (loading is restricted to tensors and plain containers)",
                                  file=file, path=flag,
                                  fix="give the state-dict file itself (torch.save(net.state_dict(), ...)); "
                                  "a pickled whole model must be re-saved as its state_dict by whoever "
                                  "trusts its code") from None
        reason = next((line.strip() for line in text.splitlines() if line.strip()
                       and not line.strip().startswith(_TORCH_ADVICE)), "unpickling failed")
        raise CheckpointError(f"not a readable PyTorch file ({reason[:200]})", file=file, path=flag,
                              fix="the file is truncated or not a .pth state dict; download or copy it "
                              "again") from None
    except Exception as exc:  # truncated zip, random bytes, a Torch7 .t7 file...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"not a readable PyTorch file ({first[:200]})", file=file, path=flag,
                              fix="the file is truncated or not a .pth state dict; download or copy it "
                              "again") from None
    state = _unwrap(obj, file, flag)
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"entries that are not named tensors: {', '.join(bad[:5])}", file=file, path=flag,
                              fix="give a state dict (name -> tensor), as torch.save(net.state_dict(), ...) "
                              "writes it")
    return dict(state)
