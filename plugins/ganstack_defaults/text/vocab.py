"""Word vocabulary learnt from training captions, kept as a plain word list so checkpoints stay safe.

A vocabulary may also hold n-grams (runs of up to ``ngrams`` words, stored joined by one space),
which give a bag of words some word order: "red circle" and "blue background" tell apart the
colours of "a red circle on a blue background" that single words leave ambiguous.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ganstack.errors import CheckpointError, DataError

UNKNOWN = 0  # index of every word outside the vocabulary

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters and digits, with an apostrophe suffix such as ``bird's``)."""
    return _WORD.findall(text.lower())


def terms(text: str, ngrams: int = 1) -> list[str]:
    """The caption's words, then its runs of 2 .. ``ngrams`` consecutive words (joined by a space)."""
    return _terms_of(tokenize(text), ngrams)


def _terms_of(words: list[str], ngrams: int) -> list[str]:
    return [" ".join(words[i:i + n]) for n in range(1, ngrams + 1) for i in range(len(words) - n + 1)]


class Vocabulary:
    """Terms at indices ``1..len(words)``; index :data:`UNKNOWN` stands for every other term.

    ``ngrams``: the longest run of words that counts as one term (1: single words only).
    """

    def __init__(self, words: Iterable[str], ngrams: int = 1) -> None:
        if ngrams < 1:
            raise ValueError(f"ngrams must be 1 or more, got {ngrams}")
        self.words = list(words)
        self.ngrams = ngrams
        self._index = {word: i + 1 for i, word in enumerate(self.words)}
        if len(self._index) != len(self.words):
            raise ValueError("a vocabulary lists each word once")

    @classmethod
    def from_captions(cls, captions: Iterable[str], *, min_count: int, max_words: int,
                      ngrams: int = 1) -> Vocabulary:
        """The ``max_words`` most frequent terms seen ``min_count`` times or more.

        Ties are broken alphabetically, so the same captions always give the same table.
        """
        counts = Counter(term for caption in captions for term in terms(caption, ngrams))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept[:max_words], ngrams)

    def __len__(self) -> int:
        return len(self.words)

    def indices(self, text: str) -> list[int]:
        return self.indices_and_words(text)[0]

    def indices_and_words(self, text: str) -> tuple[list[int], int]:
        """:meth:`indices` and the number of words of ``text`` (tokenised once)."""
        words = tokenize(text)
        return [self._index.get(term, UNKNOWN) for term in _terms_of(words, self.ngrams)], len(words)


def training_vocabulary(captions: Iterable[str], *, encoder: str, min_count: int, max_words: int,
                        ngrams: int = 1) -> Vocabulary:
    """The vocabulary a caption encoder named ``encoder`` learns in ``prepare``, or why it has none."""
    vocabulary = Vocabulary.from_captions(captions, min_count=min_count, max_words=max_words, ngrams=ngrams)
    if not len(vocabulary):
        raise DataError(
            f"no word of the training captions occurs {min_count} times or more, "
            f"so text encoder '{encoder}' has no vocabulary",
            path="text_encoder.min_count",
            fix="lower text_encoder min_count, or check that the dataset's captions are not empty",
        )
    return vocabulary


def saved_words(state: Any, *, encoder: str) -> list[str] | None:
    """The word list an encoder's ``get_extra_state`` saved (None: saved before ``prepare``), checked."""
    words = state.get("vocabulary", ...) if isinstance(state, dict) else ...
    if words is None:
        return None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise CheckpointError(f"the checkpoint holds no '{encoder}' vocabulary (a list of words)",
                              fix=f"load a checkpoint saved with text encoder '{encoder}'")
    return words
