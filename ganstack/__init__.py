"""ganstack: a plug-in toolkit for stacked text-to-image GANs."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ganstack.sample.draw import TextToImage

try:
    __version__ = version("ganstack")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load"]


def load(run_or_checkpoint: str | Path, *, device: str = "auto", ema: bool = True) -> TextToImage:
    """A trained run (folder or ``.pt``) ready to draw: ``ganstack.load(path).generate(texts)``.

    Imported on first call, so ``import ganstack`` (and ``ganstack --help``) stays free of torch.
    """
    from ganstack.sample.draw import load as load_run

    return load_run(run_or_checkpoint, device=device, ema=ema)
