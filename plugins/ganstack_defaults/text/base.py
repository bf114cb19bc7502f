"""What every caption-reading text encoder shares: ``forward(batch)`` is ``encode_text(captions)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ganstack.interfaces import CaptionDataset

# The registered text encoders that read captions (and so can encode new sentences); named in
# the messages of the one that cannot.
CAPTION_ENCODERS: tuple[str, ...] = ("bow", "char-cnn-rnn", "sentence-transformer", "reed-char-cnn-rnn")


class CaptionEncoder(nn.Module):
    """Base of the encoders that turn the batch's ``caption`` strings into ``[B, dim]``."""

    can_encode_text = True

    def __init__(self, dim: int, trainable: bool) -> None:
        super().__init__()
        self.dim = dim
        self.trainable = trainable

    def prepare(self, dataset: CaptionDataset) -> None:
        """Nothing to learn from the data before training (subclasses with a vocabulary override)."""

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.encode_text(batch["caption"])

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError
