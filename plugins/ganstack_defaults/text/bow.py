"""A bag-of-words text encoder: the mean of learnt word vectors, cheap enough to train from scratch.

With ``ngrams`` above 1 the bag also holds runs of words, so it sees which word goes with which.

Its table has ``max_vocab`` rows whatever the data (row 0 is the unknown word), so a checkpoint
loads into a freshly built encoder; the words themselves travel in the state dict as a list.

Word features (for components that request ``words``): a bag has no state per word, so the feature
of a word is the mean of the table rows of the terms of the bag that hold it: its own row and, with
``ngrams`` above 1, the rows of the runs of words through it ("red" in "a red circle on blue" is
the mean of "red", "a red", "red circle", "a red circle", "red circle on"). With single words it
is the word's own vector; the runs tell a region attending to "red" that red is the circle's. The
size is the table's (``word_dim`` when set, else ``dim``); they are not mapped by the ``word_dim``
option's linear layer, which serves the sentence. The sentence vector is the bag's, as without words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from ganstack.errors import CheckpointError
from ganstack.interfaces import CaptionDataset, TextFeatures
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
    """Mean of word vectors (``nn.EmbeddingBag``), then an optional linear map to ``dim``; per word,
    the mean of the rows of the terms holding it (see the module's docstring)."""

    def __init__(self, options: BowOptions) -> None:
        super().__init__(options.dim, options.trainable)
        self.options = options
        self.vocabulary: Vocabulary | None = None
        self.word_dim = options.word_dim or options.dim
        self.bag = nn.EmbeddingBag(options.max_vocab, self.word_dim, mode="mean")
        self.project = nn.Linear(options.word_dim, options.dim) if options.word_dim else None
        self.requires_grad_(options.trainable)

    def prepare(self, dataset: CaptionDataset) -> None:
        """Build the vocabulary from the training captions."""
        vocabulary = training_vocabulary(dataset.captions(), encoder="bow", min_count=self.options.min_count,
                                         max_words=self.options.max_vocab - 1, ngrams=self.options.ngrams)
        self.vocabulary = vocabulary

    def encode_text(self, texts: Sequence[str]) -> TextFeatures:
        """Sentence ``[N, dim]`` (unknown words share row 0, an empty text gives the zero bag), word
        features ``[N, L, word_dim]`` (zero past each caption's words) and mask ``[N, L]``, L the most
        words of a caption (at least 1)."""
        if self.vocabulary is None:
            raise RuntimeError("text encoder 'bow' has no vocabulary: call prepare(dataset) or "
                               "load a checkpoint first")
        device = self.bag.weight.device
        rows, counts = zip(*map(self.vocabulary.indices_and_words, texts), strict=True) if texts else ((), ())
        flat = torch.tensor([i for row in rows for i in row], dtype=torch.long, device=device)
        starts = torch.tensor([0, *(len(row) for row in rows)], device=device).cumsum(0)[:-1]
        out = self.bag(flat, starts)
        sentence = self.project(out) if self.project is not None else out
        return TextFeatures(sentence, *self._words(flat, starts, counts))

    def _words(self, flat: torch.Tensor, starts: torch.Tensor, counts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each word's bag of the terms holding it, found with tensor arithmetic on the positions of
        :func:`~ganstack_defaults.text.vocab.terms`'s list and bagged in one ``EmbeddingBag`` call."""
        device, n = flat.device, self.options.ngrams
        count = torch.tensor(counts, dtype=torch.long, device=device).view(-1, 1, 1, 1)
        length = max(1, max(counts, default=0))
        word = torch.arange(length, device=device).view(1, -1, 1, 1)
        run = torch.arange(1, n + 1, device=device).view(1, 1, -1, 1)  # run length
        back = torch.arange(n, device=device).view(1, 1, 1, -1)  # the run starts this many words before
        first = word - back  # the run's first word
        held = (back < run) & (first >= 0) & (first <= count - run)
        # terms() lists the runs by length: those of length m (count - m + 1 of them) before longer ones
        per_length = (count.view(-1, 1) - torch.arange(n, device=device)).clamp(min=0)
        before = (per_length.cumsum(1) - per_length).view(-1, 1, n, 1)
        term = starts.view(-1, 1, 1, 1) + before + first
        sizes = held.sum(dim=(2, 3)).flatten()
        vectors = self.bag(flat[term[held]], sizes.cumsum(0) - sizes)
        mask = word.view(1, -1) < count.view(-1, 1)
        return vectors.view(len(counts), length, self.word_dim), mask

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
