"""A word-level recurrent text encoder: learnt word vectors read in order by a bidirectional GRU.

Where a bag of words (``bow``) only sees which words (and runs of words) occur, the GRU reads
them in order, so what it learns of "the circle is red" can carry over to "red is the colour of
the circle" or "on red, a white circle". Cheap enough to train with the generator from scratch,
or to pretrain with ``ganstack pretrain-encoder``.

Its word table has ``max_vocab`` rows whatever the data (row 0 pads, row 1 is the unknown word),
so a checkpoint loads into a freshly built encoder; the words travel in the state dict as a list.

Word features (for components that request ``words``): the GRU's state at each word, both
directions concatenated (``word_dim`` = 2 * ``hidden``), as AttnGAN's text encoder gives them; the
first ``max_words`` words of each caption, zero past them (an empty caption has no word: an
all-false mask row). The sentence vector is the mapped mean of the same states, as without words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ganstack.errors import CheckpointError
from ganstack.interfaces import CaptionDataset, TextFeatures
from ganstack_defaults.text.base import CaptionEncoder
from ganstack_defaults.text.vocab import Vocabulary, saved_words, training_vocabulary

_PAD = 0  # table row of padding; a vocabulary index i (0: unknown) is row i + 1


@attrs.define(frozen=True, kw_only=True)
class WordGruOptions:
    """Options of the ``word-gru`` text encoder.

    ``dim``: output size; ``max_vocab``: rows of the word table, padding and the unknown word
    included; ``min_count``: a word joins the vocabulary once seen this often in the training
    captions; ``word_dim``: size of the learnt word vectors; ``hidden``: hidden units of the GRU in
    each direction; ``layers``: stacked GRU layers; ``max_words``: words read per caption (longer
    ones are cut); ``word_dropout``: while training, the chance that a word is read as the unknown
    word, so that the encoder does not lean on any one word; ``trainable``: true to optimise it
    with the generator, false to keep its initialisation (use false after ``text_encoder_init``
    to freeze a pretrained one)
    """

    dim: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    max_vocab: int = attrs.field(default=2000, validator=attrs.validators.ge(3))
    min_count: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    word_dim: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    hidden: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    layers: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    max_words: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    word_dropout: float = attrs.field(default=0.1, validator=[attrs.validators.ge(0.0), attrs.validators.lt(1.0)])
    trainable: bool = True


class WordGruEncoder(CaptionEncoder):
    """Word vectors, a bidirectional GRU, the mean of its states over the words, a linear map to ``dim``."""

    def __init__(self, options: WordGruOptions) -> None:
        super().__init__(options.dim, options.trainable)
        self.options = options
        self.word_dim = 2 * options.hidden
        self.vocabulary: Vocabulary | None = None
        self.embed = nn.Embedding(options.max_vocab, options.word_dim, padding_idx=_PAD)
        self.gru = nn.GRU(options.word_dim, options.hidden, num_layers=options.layers, batch_first=True,
                          bidirectional=True)
        self.out = nn.Linear(2 * options.hidden, options.dim)
        self.requires_grad_(options.trainable)

    def prepare(self, dataset: CaptionDataset) -> None:
        """Build the vocabulary from the training captions."""
        vocabulary = training_vocabulary(dataset.captions(), encoder="word-gru", min_count=self.options.min_count,
                                         max_words=self.options.max_vocab - 2)
        self.vocabulary = vocabulary

    def rows(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, L]`` table rows of each caption's words (padded with 0) and ``[N]`` lengths (word
        counts, but 1 for an empty caption, which reads one padding word)."""
        if self.vocabulary is None:
            raise RuntimeError("text encoder 'word-gru' has no vocabulary: call prepare(dataset) or "
                               "load a checkpoint first")
        rows = [[i + 1 for i in self.vocabulary.indices(t)[: self.options.max_words]] for t in texts]
        lengths = torch.tensor([max(1, len(r)) for r in rows])
        table = torch.full((len(rows), int(lengths.max()) if rows else 1), _PAD, dtype=torch.long)
        for n, row in enumerate(rows):
            table[n, : len(row)] = torch.tensor(row, dtype=torch.long)
        return table.to(self.out.weight.device), lengths

    def encode_text(self, texts: Sequence[str]) -> TextFeatures:
        """Sentence ``[N, dim]`` (an empty caption reads as one padding word), the GRU's states
        ``[N, L, word_dim]`` and the mask ``[N, L]`` of real words."""
        table, lengths = self.rows(texts)
        if self.training and self.options.word_dropout > 0:
            drop = torch.rand(table.shape, device=table.device) < self.options.word_dropout
            table = torch.where(drop & (table != _PAD), torch.ones_like(table), table)  # row 1: unknown
        packed = pack_padded_sequence(self.embed(table), lengths, batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=table.shape[1])
        mask = (torch.arange(table.shape[1])[None, :] < lengths[:, None]).to(states.device, states.dtype)
        pooled = (states * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        words = table != _PAD  # real words (an empty caption's padding word is none)
        return TextFeatures(self.out(pooled), states * words[..., None], words)

    def get_extra_state(self) -> dict[str, Any]:
        return {"vocabulary": None if self.vocabulary is None else list(self.vocabulary.words)}

    def set_extra_state(self, state: Any) -> None:
        words = saved_words(state, encoder="word-gru")
        if words is None:  # saved before prepare()
            self.vocabulary = None
            return
        if len(words) > self.options.max_vocab - 2:
            raise CheckpointError(
                f"the checkpoint's 'word-gru' vocabulary has {len(words)} words, more than "
                f"text_encoder max_vocab {self.options.max_vocab} leaves room for",
                path="text_encoder.max_vocab",
                fix=f"set text_encoder max_vocab to at least {len(words) + 2}, as when it was saved",
            )
        self.vocabulary = Vocabulary(words)
