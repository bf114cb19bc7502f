"""The paper's setting: the dataset ships one embedding per caption, computed once by Reed's encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from ganstack.errors import DataError, UserError
from ganstack.interfaces import CaptionDataset
from ganstack_defaults.text.base import CAPTION_ENCODERS

_READERS = ", ".join(CAPTION_ENCODERS)


@attrs.define(frozen=True, kw_only=True)
class PrecomputedOptions:
    """Options of the ``precomputed`` text encoder.

    ``dim``: size of the dataset's embeddings (1024 for Reed's char-CNN-RNN ones); checked against
    the dataset before training
    """

    dim: int = attrs.field(default=1024, validator=attrs.validators.ge(1))


class PrecomputedEncoder(nn.Module):
    """Passes on ``batch['embedding']``; nothing to train, and no way to embed a new sentence."""

    trainable = False
    can_encode_text = False

    def __init__(self, options: PrecomputedOptions) -> None:
        super().__init__()
        self.dim = options.dim

    def _check_dim(self, found: int) -> None:
        if found != self.dim:
            raise DataError(
                f"the dataset's text embeddings have {found} dimensions, but text encoder "
                f"'precomputed' was set to {self.dim}",
                path="text_encoder.dim",
                fix=f"set text_encoder dim: {found}",
            )

    def prepare(self, dataset: CaptionDataset) -> None:
        """Fail before training starts when the dataset has no embeddings, or not of ``dim``."""
        if dataset.embedding_dim is None:
            raise self._no_embeddings()
        self._check_dim(dataset.embedding_dim)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        embedding = batch.get("embedding")
        if embedding is None:
            raise self._no_embeddings()
        self._check_dim(embedding.shape[-1])
        return embedding.float()

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        raise UserError(
            "text encoder 'precomputed' cannot encode new sentences: it only passes on the "
            "embeddings stored with the dataset",
            fix=f"train with a text encoder that reads captions ({_READERS}), or give the "
            "embeddings of your sentences, computed by the encoder that made the dataset's, "
            "with --embeddings FILE.npy",
        )

    @staticmethod
    def _no_embeddings() -> DataError:
        return DataError(
            "text encoder 'precomputed' reads the dataset's stored text embeddings, but this "
            "dataset has none",
            path="text_encoder",
            fix=f"use a text encoder that reads the captions ({_READERS}), or point the dataset "
            "at its embeddings file",
        )
