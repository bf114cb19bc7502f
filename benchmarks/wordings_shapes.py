"""Wording benchmark: which held-out sentence shapes defeat a fixed bag of terms, and would other terms
do better if they were chosen without looking at the held-out shapes?

``encoders_shapes.py`` scores each encoder on the unseen wordings as a whole; this one breaks the
score down by sentence shape (frame) and asks whether a different bag (skip-pairs of words a few
apart, pairs of words within a clause) would follow new wordings better. Choosing terms by their
score on the held-out frames would tune on the test set, so each bag is first scored by
*leave-frames-out validation on the seen frames*: the 15 training frames are split into three
folds, and a linear probe fitted on captions of two folds' frames is scored on the third's (new
frames to it, as the held-out ones are to a trained model). Then every bag is also scored on the
8 held-out frames, one by one, and on the ``holdout`` split's colour pairs.

Each bag is a fixed random projection, as the quickstart's ``bow`` encoder is: every term kept gets
a Gaussian vector and a caption is the mean of its terms' vectors. The first row is the ``bow``
plugin itself, built as ``recipes/shapes_quickstart.yaml`` builds it; the others are candidates kept
inside this benchmark. Probes are those of ``encoders_shapes.py`` (logistic regression, L-BFGS).

Usage::

    python benchmarks/wordings_shapes.py --out benchmarks/results/wordings-shapes.json
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence

import torch
from encoders_shapes import LABELS, QUICKSTART_BOW, embed, probe, write_report

from ganstack.components.loader import load_plugins
from ganstack.interfaces import TextEncoderContext
from ganstack_defaults.shapes import grammar
from ganstack_defaults.shapes import scenes as shapes
from ganstack_defaults.text.vocab import terms, tokenize

ATTRIBUTES = ("background", "color", "shape")
_CLAUSE_END = re.compile(r"[,.;:!?]|\band\b")
_LITTLE_WORDS = frozenset({"a", "an", "the", "is", "of", "one", "in", "on", "at", "there", "s", "it", "that",
                           "which"})
Example = tuple[str, str, dict[str, str]]  # (frame, caption, the scene's attributes)


def bag_terms(text: str, ngrams: int, skip: int, clause_pairs: bool) -> list[str]:
    """Runs of 1..``ngrams`` words; ordered pairs of words 2..``skip`` apart; with ``clause_pairs``,
    unordered pairs of the content words of each clause (split at punctuation and "and")."""
    words = tokenize(text)
    out = terms(text, ngrams)  # the bow encoder's own runs of words
    out += [f"{words[i]}>{words[i + d]}" for d in range(2, skip + 1) for i in range(len(words) - d)]
    if clause_pairs:
        for clause in _CLAUSE_END.split(text.lower()):
            content = sorted(set(tokenize(clause)) - _LITTLE_WORDS)
            out += [f"{a}+{b}" for i, a in enumerate(content) for b in content[i + 1:]]
    return out


class TermBag:
    """A candidate: a fixed random projection of a bag of :func:`bag_terms`, the ``vocab`` most frequent."""

    def __init__(self, *, dim: int, vocab: int, ngrams: int, skip: int = 0, clause_pairs: bool = False) -> None:
        self.options = {"ngrams": ngrams, "skip": skip, "clause_pairs": clause_pairs}
        self.vocab, self.index = vocab, {}
        self.table = torch.randn(vocab, dim, generator=torch.Generator().manual_seed(0))

    def prepare(self, captions: Sequence[str]) -> None:
        counts = Counter(t for text in captions for t in bag_terms(text, **self.options))
        kept = sorted(counts, key=lambda w: (-counts[w], w))[: self.vocab - 1]
        self.index = {w: i + 1 for i, w in enumerate(kept)}  # row 0: every other term

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.table[[self.index.get(t, 0) for t in bag_terms(text, **self.options)]].mean(0)
                            for text in texts])


class _Captions:
    """What ``bow``'s ``prepare`` reads of a dataset: its training captions."""

    def __init__(self, captions: Sequence[str]) -> None:
        self._captions = list(captions)

    def captions(self) -> list[str]:
        return self._captions


def quickstart_bow(captions: Sequence[str]) -> Callable[[Sequence[str]], torch.Tensor]:
    torch.manual_seed(0)
    entry = load_plugins().registry.get("text_encoder", "bow")
    encoder = entry.factory(entry.options(**QUICKSTART_BOW), TextEncoderContext())
    encoder.prepare(_Captions(captions))
    return lambda texts: embed(encoder, texts)


def candidate(**options: object) -> Callable[[Sequence[str]], Callable[[Sequence[str]], torch.Tensor]]:
    def build(captions: Sequence[str]) -> Callable[[Sequence[str]], torch.Tensor]:
        bag = TermBag(**options)
        bag.prepare(captions)
        return bag
    return build


BAGS: tuple[tuple[str, Callable], ...] = (
    ("bow plugin as in the quickstart (1-3-grams, 1,024 terms, 512-d)", quickstart_bow),
    ("1-3-grams, 2,048 terms", candidate(dim=512, vocab=2048, ngrams=3)),
    ("1-2-grams, 1,024 terms", candidate(dim=512, vocab=1024, ngrams=2)),
    ("1-3-grams + pairs 2-4 apart, 2,048 terms", candidate(dim=512, vocab=2048, ngrams=3, skip=4)),
    ("1-3-grams + pairs 2-5 apart, 4,096 terms, 1024-d", candidate(dim=1024, vocab=4096, ngrams=3, skip=5)),
    ("1-3-grams + clause pairs, 2,048 terms", candidate(dim=512, vocab=2048, ngrams=3, clause_pairs=True)),
    ("1-3-grams + pairs 2-4 apart + clause pairs, 4,096 terms, 1024-d",
     candidate(dim=1024, vocab=4096, ngrams=3, skip=4, clause_pairs=True)),
)


def seen_frame_examples(scenes: int, seed: int) -> list[Example]:
    """Four captions per training scene, each in a seen frame drawn at random, naming size and
    position each with probability 0.6, so every frame occurs with what it can name."""
    rng = random.Random(seed)
    out = []
    for i, scene in enumerate(shapes.make_scenes(scenes, seed, "train")):
        for j in range(4):
            include = frozenset(a for a in ("size", "position") if rng.random() < 0.6)
            frame = rng.choice([f for f in grammar.SEEN_FRAMES if f.needs() <= include])
            text = grammar.describe(frame, scene.attributes(), include, grammar.Choices(f"wordings/{seed}/{i}/{j}"))
            out.append((frame.name, text, scene.attributes()))
    return out


def frame_examples(frames: Sequence[grammar.Frame], scenes: int, seed: int, split: str) -> dict[str, list[Example]]:
    """Each frame's caption of the same ``scenes`` scenes of ``split``, naming all five attributes."""
    every = frozenset({"size", "position"})
    chosen = shapes.make_scenes(scenes, seed, split)
    return {f.name: [(f.name, grammar.describe(f, s.attributes(), every, grammar.Choices(f"wordings/{f.name}/{i}")),
                      s.attributes()) for i, s in enumerate(chosen)] for f in frames}


def accuracies(build: Callable, train: list[Example], tests: dict[str, list[Example]]) -> dict[str, dict[str, float]]:
    """Per test set and attribute, the share a probe fitted on ``train`` reads right."""
    encode = build([t for _, t, _ in train])
    x = encode([t for _, t, _ in train])
    xs = {k: encode([t for _, t, _ in v]) for k, v in tests.items()}
    out: dict[str, dict[str, float]] = {k: {} for k in tests}
    for attribute in ATTRIBUTES:
        values = LABELS[attribute]
        predict = probe(x, torch.tensor([values.index(a[attribute]) for _, _, a in train]), len(values))
        for key, data in tests.items():
            truth = torch.tensor([values.index(a[attribute]) for _, _, a in data])
            out[key][attribute] = round((predict(xs[key]) == truth).float().mean().item(), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/wordings-shapes.json", help="JSON file to write")
    parser.add_argument("--train-scenes", type=int, default=1500, help="training scenes (four captions each)")
    parser.add_argument("--eval-scenes", type=int, default=400, help="test scenes per held-out frame")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    args = parser.parse_args()
    train = seen_frame_examples(args.train_scenes, args.seed)
    names = sorted(f.name for f in grammar.SEEN_FRAMES)
    random.Random(args.seed).shuffle(names)
    folds = [names[k::3] for k in range(3)]
    unseen = frame_examples(grammar.UNSEEN_FRAMES, args.eval_scenes, args.seed, "test")
    held = shapes.make_scenes(args.eval_scenes, args.seed, "holdout")
    holdout = {f"holdout colour pairs, {wording} wording": [
        ("", shapes.caption_for(s, args.seed, "holdout", wording), s.attributes()) for s in held]
        for wording in shapes.WORDINGS}
    rows = []
    for name, build in BAGS:
        started = time.monotonic()
        validation = [accuracies(build, [e for e in train if e[0] not in fold],
                                 {"fold": [e for e in train if e[0] in fold]})["fold"] for fold in folds]
        held_out = accuracies(build, train, {**unseen, **holdout})
        row = {"bag": name,
               "validation": {a: round(sum(v[a] for v in validation) / len(folds), 4) for a in ATTRIBUTES},
               "unseen_frames_mean": {a: round(sum(held_out[f.name][a] for f in grammar.UNSEEN_FRAMES)
                                               / len(grammar.UNSEEN_FRAMES), 4) for a in ATTRIBUTES},
               "per_set": held_out, "seconds": round(time.monotonic() - started, 1)}
        rows.append(row)
        print(f"{name}: validation background {row['validation']['background']:.3f} colour "
              f"{row['validation']['color']:.3f}; held-out frames background "
              f"{row['unseen_frames_mean']['background']:.3f} colour {row['unseen_frames_mean']['color']:.3f}",
              flush=True)
    out = write_report(args, rows, folds=folds)
    print("\n| bag | validation: background | validation: colour | held-out frames: background | held-out frames: colour |"
          "\n| --- | --: | --: | --: | --: |")
    for r in rows:
        print(f"| {r['bag']} | " + " | ".join(f"{100 * r[k][a]:.1f}%" for k in ("validation", "unseen_frames_mean")
                                              for a in ("background", "color")) + " |")
    first = rows[0]["per_set"]
    print("\n| set (quickstart's bag) | background | colour | shape |\n| --- | --: | --: | --: |")
    for key, r in first.items():
        print(f"| {key} | " + " | ".join(f"{100 * r[a]:.1f}%" for a in ("background", "color", "shape")) + " |")
    print(f"\nWrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
