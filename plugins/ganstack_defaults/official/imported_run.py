"""Writing imported weights as a run folder, the way a trained run looks.

``checkpoints/last.pt`` (a weights-only ganstack checkpoint: recipe, model, no EMA, position 0,
``resumable: False``), the resolved ``recipe.yaml`` and ``import.json`` (which file filled which
part). ``ganstack sample``, ``ganstack eval``, ``ganstack.load`` and a stage's ``init_from`` read
it like any run; ``ganstack run --resume`` refuses it (there is no optimiser state to resume).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from ganstack.atomic import write_text_atomic
from ganstack.build.stack import Stack
from ganstack.errors import UserError
from ganstack.recipe.resolve import ResolvedRecipe, to_data
from ganstack.run_folder.checkpoint import save_atomic


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_out_dir(out: Path, flag: str = "--out") -> None:
    """Refuse to overwrite a run, before any work is done."""
    if (out / "checkpoints" / "last.pt").exists():
        raise UserError(f"{out} already holds a run", path=flag,
                        fix="choose another --out folder (or delete that run first)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a folder", path=flag, fix="give a folder for the run")


def write_imported_run(out: Path, resolved: ResolvedRecipe, stack: Stack, record: dict[str, Any]) -> Path:
    """Write the run folder; returns the checkpoint's path. ``record`` becomes ``import.json``."""
    checkpoint = out / "checkpoints" / "last.pt"
    state = {
        "recipe": to_data(resolved.recipe),
        "model": stack.state_dict(),
        "ema": None,
        "position": {"block": 0, "epoch": 0, "batch": 0, "step": 0},
        "world_size": 1,
        "counters": {"skipped_steps": 0, "best": None, "train_seconds": 0.0},
        "resolutions": list(stack.resolutions),
        "recipe_dir": str(resolved.base_dir) if resolved.base_dir else None,
        "resumable": False,
        "imported": record.get("importer"),
    }
    save_atomic(state, checkpoint)
    write_text_atomic(out / "recipe.yaml", yaml.safe_dump(to_data(resolved.recipe), sort_keys=False))
    write_text_atomic(out / "import.json", json.dumps(record, indent=2) + "\n")
    return checkpoint
