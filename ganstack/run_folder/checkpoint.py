"""Checkpoints: written atomically, read with ``weights_only=True``, with every RNG state inside."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganstack.atomic import write_bytes_atomic
from ganstack.errors import CheckpointError

FORMAT = "ganstack-checkpoint"
FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """Every random stream a run draws from, in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    internal, version, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: a crash leaves the old file."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **obj}
    write_bytes_atomic(path, lambda fh: torch.save(payload, fh),
                       fix="the previous checkpoint is intact; resume with `ganstack run --resume` once "
                       "there is room, or choose another --out")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ganstack checkpoint, refusing anything that is not one, with a clear message."""
    path = Path(path)
    if path.is_dir():
        path = find_checkpoint(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", file=str(path),
                              fix="give a run folder or a .pt file written by `ganstack run`")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise CheckpointError("refused to load: the file asks for more memory than this machine has",
                              file=str(path), fix=_ANOTHER) from None
    except Exception as exc:  # truncated zip, foreign pickle, random bytes, a refused global...
        refusal = refusal_reason(exc)
        if refusal:
            raise CheckpointError(f"refused to load: {refusal}; ganstack reads checkpoints with PyTorch's safe "
                                  "loader, which admits tensors and plain containers only, because a pickle "
                                  "can run code", file=str(path), fix=_FOREIGN) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"not a readable ganstack checkpoint ({first[:200]})", file=str(path),
                              fix="the file is truncated, corrupt or of another program; use another "
                              "checkpoint from the run's checkpoints/ folder") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError("this file is not a ganstack checkpoint", file=str(path),
                              fix="give a checkpoint written by `ganstack run` (checkpoints/last.pt)")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {data['format_version']} is newer than this ganstack "
                              f"reads ({FORMAT_VERSION})", file=str(path), fix="upgrade ganstack")
    data["path"] = str(path)
    return data


_ANOTHER = "use another checkpoint from the run's checkpoints/ folder"
_FOREIGN = ("use a checkpoint written by `ganstack run`; weights from another program are converted with "
            "`ganstack import` (e.g. `ganstack import stackgan-official ...`), never loaded as they are")


def refusal_reason(exc: BaseException) -> str | None:
    """What a ``weights_only`` load refused (the global the file asked to import), or None if it did not refuse.

    PyTorch's own message suggests re-running with ``weights_only=False``; ganstack never relays that.
    """
    text = str(exc)
    if "Weights only load failed" not in text and "weights_only" not in text:
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"the file asks to import '{found.group(1)}', which a checkpoint never needs"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines[1:] if "weights_only" not in line and "documentation" not in line), None)
    return f"the file uses a construct the safe loader does not admit ({detail[:200]})" if detail else \
        "the file uses a construct the safe loader does not admit"


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words fit for a message: what it refused, or the
    reader's first line; never PyTorch's suggestion to load unsafely."""
    if isinstance(exc, MemoryError):
        return "it asks for more memory than this machine has"
    refusal = refusal_reason(exc)
    if refusal:
        return f"refused to load: {refusal} (a pickle can run code, so only tensors and plain containers are read)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:200]}"


def checkpoint_recipe(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The recipe a checkpoint carries, or a CheckpointError when it has none."""
    recipe = ckpt.get("recipe")
    if not isinstance(recipe, dict) or not recipe:
        raise CheckpointError("this checkpoint carries no recipe, so the stack it holds cannot be rebuilt",
                              file=ckpt.get("path"), path="recipe",
                              fix="use a checkpoint written by `ganstack run` (its checkpoints/ folder); weights "
                              "from elsewhere go through `ganstack import`")
    return recipe


def checkpoint_step(ckpt: dict[str, Any]) -> int:
    position = ckpt.get("position")
    step = position.get("step") if isinstance(position, dict) else None
    return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else 0


def check_weights(own: dict[str, Any], state: Any, *, file: str | None, key: str,
                  against: str = "the recipe it carries", allow_extra: bool = False,
                  fit_fix: str = "use the checkpoint together with the recipe it was trained with (a checkpoint "
                  "from `ganstack run` carries it); the file may have been edited or mixed up") -> None:
    """Refuse ``state`` unless it can stand for ``own`` (a module's state dict, or the part of one being
    loaded): a mapping of tensors with every key, each of its shape, and finite.

    A mismatch names the first keys and shapes that differ; NaN or infinite weights (a run that
    diverged) are refused, as everything drawn from them would be noise or blank. ``allow_extra``
    leaves keys that ``own`` lacks unchecked (a stage taken from a larger stack).
    """
    # a module's `_extra_state` (a text encoder's vocabulary) is plain data; everything else is a tensor
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) or str(k).endswith("_extra_state")
                                              for k, v in state.items()):
        raise CheckpointError("its weights are not a mapping of tensors", file=file, path=key, fix=_ANOTHER)
    missing = [k for k in own if k not in state]
    extra = [] if allow_extra else [k for k in state if k not in own]
    shapes = [f"{k} is {list(getattr(state[k], 'shape', [])) or type(state[k]).__name__} here but "
              f"{list(own[k].shape)} in the recipe"
              for k in own if k in state and isinstance(own[k], torch.Tensor)
              and (not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)]
    if missing or extra or shapes:
        parts = ([f"{len(shapes)} of a different shape ({'; '.join(shapes[:2])})"] if shapes else []) + (
            [f"{len(missing)} missing ({', '.join(missing[:3])})"] if missing else []) + (
            [f"{len(extra)} not in the recipe ({', '.join(extra[:3])})"] if extra else [])
        raise CheckpointError(f"its weights do not fit {against}: {len(own)} tensors expected, "
                              f"{', '.join(parts)}", file=file, path=key, fix=fit_fix)
    bad = [k for k in own if isinstance(v := state[k], torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{len(bad)} of its {len(own)} weight tensors hold NaN or infinite values "
                              f"(e.g. {', '.join(bad[:3])}): the run diverged before this checkpoint, and "
                              "anything drawn from it would be noise", file=file, path=key,
                              fix="use an earlier checkpoint from the run's checkpoints/ folder, or retrain with "
                              "a lower learning rate")


def load_weights(module: torch.nn.Module, state: Any, *, file: str | None, key: str) -> None:
    """Load ``state`` into ``module``, checking first (:func:`check_weights`) that it is the module's own
    shape and finite."""
    check_weights(module.state_dict(), state, file=file, key=key)
    module.load_state_dict(state)


def find_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of a run folder (``checkpoints/last.pt``)."""
    for candidate in (run_dir / "checkpoints" / "last.pt", run_dir / "last.pt"):
        if candidate.is_file():
            return candidate
    raise CheckpointError("no checkpoint in this folder", file=str(run_dir),
                          fix="give a run folder written by `ganstack run` (it has checkpoints/last.pt) "
                          "or the path of a .pt file")
