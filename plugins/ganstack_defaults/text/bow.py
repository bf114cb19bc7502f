"""A bag-of-words text encoder: the mean of learnt word vectors, cheap enough to train from scratch.

With ``ngrams`` above 1 the bag also holds runs of words, so it sees which word goes with which.

Its table has ``max_vocab`` rows whatever the data (row 0 is the unknown word), so a checkpoint
loads into a freshly built encoder; the words themselves travel in the state dict as a list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from ganstack.errors import CheckpointError
from ganstack.interfaces import CaptionDataset
from ganstack_defaults.text.base import CaptionEncoder
from ganstack_defaults.text.vocab import Vocabulary, saved_words, training_vocabulary


@attrs.define(frozen=True, kw_only=True)
class BowOptions:
    """Options of the ``bow`` text encoder.

    ``dim``: output size. ``max_vocab``: rows of the word table, the unknown word included.
    ``min_count``: a word joins the vocabulary once seen this often in the training captions.
    ``word_dim``: when set, words are embedded at this size and a linear layer maps their mean
    to ``dim``; otherwise the mean itself is the output. ``ngrams``: runs of up to this many
    words are terms of the bag too (2 or 3 tell "a red circle on a blue background" from "a blue
    circle on a red background"; ``max_vocab`` must then leave room for them). ``trainable``:
    true to optimise the encoder with the generator; false keeps its random initialisation, a
    fixed random projection of the bag (a baseline that cannot drift during training).
    """

    dim: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    max_vocab: int = attrs.field(default=2000, validator=attrs.validators.ge(2))
    min_count: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    word_dim: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    ngrams: int = attrs.field(default=1, validator=[attrs.validators.ge(1), attrs.validators.le(4)])
    trainable: bool = True


class BagOfWordsEncoder(CaptionEncoder):
    """Mean of word vectors (``nn.EmbeddingBag``), then an optional linear map to ``dim``."""

    def __init__(self, options: BowOptions) -> None:
        super().__init__(options.dim, options.trainable)
        self.options = options
        self.vocabulary: Vocabulary | None = None
        self.bag = nn.EmbeddingBag(options.max_vocab, options.word_dim or options.dim, mode="mean")
        self.project = nn.Linear(options.word_dim, options.dim) if options.word_dim else None
        self.requires_grad_(options.trainable)

    def prepare(self, dataset: CaptionDataset) -> None:
        """Build the vocabulary from the training captions."""
        vocabulary = training_vocabulary(dataset.captions(), encoder="bow", min_count=self.options.min_count,
                                         max_words=self.options.max_vocab - 1, ngrams=self.options.ngrams)
        self.vocabulary = vocabulary

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), dim]``; unknown words share row 0 and an empty text gives the zero bag."""
        if self.vocabulary is None:
            raise RuntimeError("text encoder 'bow' has no vocabulary: call prepare(dataset) or "
                               "load a checkpoint first")
        device = self.bag.weight.device
        rows = [self.vocabulary.indices(text) for text in texts]
        flat = torch.tensor([i for row in rows for i in row], dtype=torch.long, device=device)
        offsets = torch.tensor([0, *(len(row) for row in rows)], device=device).cumsum(0)[:-1]
        out = self.bag(flat, offsets)
        return self.project(out) if self.project is not None else out

    def get_extra_state(self) -> dict[str, Any]:
        return {"vocabulary": None if self.vocabulary is None else list(self.vocabulary.words),
                "ngrams": self.options.ngrams}

    def set_extra_state(self, state: Any) -> None:
        words = saved_words(state, encoder="bow")
        if words is None:  # saved before prepare()
            self.vocabulary = None
            return
        saved_ngrams = state.get("ngrams", 1)
        if saved_ngrams != self.options.ngrams:
            raise CheckpointError(
                f"the checkpoint's 'bow' encoder reads runs of up to {saved_ngrams} words, but text_encoder "
                f"ngrams is {self.options.ngrams}",
                path="text_encoder.ngrams", fix=f"set text_encoder ngrams to {saved_ngrams}, as when it was saved")
        if len(words) >= self.options.max_vocab:
            raise CheckpointError(
                f"the checkpoint's 'bow' vocabulary has {len(words)} words, more than "
                f"text_encoder max_vocab {self.options.max_vocab} leaves room for",
                path="text_encoder.max_vocab",
                fix=f"set text_encoder max_vocab to at least {len(words) + 1}, as when it was saved",
            )
        self.vocabulary = Vocabulary(words, self.options.ngrams)
