"""Word vocabulary learnt from training captions, kept as a plain word list so checkpoints stay safe."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

UNKNOWN = 0  # index of every word outside the vocabulary

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters and digits, with an apostrophe suffix such as ``bird's``)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Words at indices ``1..len(words)``; index :data:`UNKNOWN` stands for every other word."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = list(words)
        self._index = {word: i + 1 for i, word in enumerate(self.words)}
        if len(self._index) != len(self.words):
            raise ValueError("a vocabulary lists each word once")

    @classmethod
    def from_captions(cls, captions: Iterable[str], *, min_count: int, max_words: int) -> Vocabulary:
        """The ``max_words`` most frequent words seen ``min_count`` times or more.

        Ties are broken alphabetically, so the same captions always give the same table.
        """
        counts = Counter(word for caption in captions for word in tokenize(caption))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept[:max_words])

    def __len__(self) -> int:
        return len(self.words)

    def indices(self, text: str) -> list[int]:
        return [self._index.get(word, UNKNOWN) for word in tokenize(text)]
