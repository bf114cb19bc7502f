"""Encoder benchmark: does a text encoder's embedding still say what a caption means when it is worded
in a sentence shape the training captions never use?

A cheap proxy for the question the ``.../unseen_wording`` values of ``shapes-alignment`` answer on a
trained GAN (minutes per encoder instead of a 10-minute run each). For each encoder:

1. it is built by its registered factory and prepared on the ``train`` captions (its vocabulary);
2. it is left as built (``fixed``: ``bow`` with ``trainable: false`` is what the quickstart
   trains with; a random ``char-cnn-rnn`` is a baseline; ``sentence-transformer`` is frozen
   all-MiniLM-L6-v2), or ``pretrained`` against images for ``--pretrain-steps`` steps with the
   joint-embedding loss of ``ganstack pretrain-encoder`` (what its training with the generator
   can at best be expected to learn from pictures), or ``supervised``: trained for as many steps
   with five linear heads on the attributes of seen wordings (what it can learn when the signal is
   clean: an upper bound for its architecture);
3. frozen, it embeds ``--train-scenes`` training scenes' five captions (seen sentence shapes) and,
   for ``--eval-scenes`` scenes of ``test`` and of ``holdout``, each scene's seen-wording caption
   and its unseen-wording one (both name all five attributes);
4. a linear probe per attribute (multinomial logistic regression on the standardised embedding,
   L-BFGS) is fitted on the training captions that name that attribute, and scored on the
   evaluation captions: ``<split>/<attribute>`` for seen wordings, ``.../unseen_wording`` for
   held-out ones, and ``all`` when all five are right.

Usage::

    python benchmarks/encoders_shapes.py --out benchmarks/results/encoders-shapes.json
    python benchmarks/encoders_shapes.py --only bow,word-gru --pretrain-steps 100 --out e.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ganstack.components.loader import load_plugins
from ganstack.interfaces import DataContext, TextEncoderContext, as_text_features
from ganstack.train.encoder_pretraining import PretrainOptions, pretrain_char_cnn_rnn
from ganstack_defaults.shapes import scenes as shapes
from ganstack_defaults.shapes.dataset import ShapesDataset, ShapesOptions, build_shapes
from ganstack_defaults.text.vocab import Vocabulary

ROOT = Path(__file__).resolve().parent.parent
LABELS: dict[str, tuple[str, ...]] = {"background": shapes.COLORS, "color": shapes.COLORS, "shape": shapes.SHAPES,
                                      "size": shapes.SIZES, "position": shapes.POSITIONS}
QUICKSTART_BOW = {"dim": 512, "max_vocab": 1024, "ngrams": 3, "trainable": False}
CHAR = {"dim": 64, "max_length": 96, "conv_channels": [64, 64, 64], "rnn_hidden": 64}  # shapes_char_cnn_rnn.yaml
# (row name, registered encoder, its options, how it is trained)
ENCODERS: tuple[tuple[str, str, dict, str], ...] = (
    ("bow (quickstart: fixed, 1-3-grams, 512-d)", "bow", QUICKSTART_BOW, "fixed"),
    ("bow, single words, fixed, 512-d", "bow", {**QUICKSTART_BOW, "ngrams": 1}, "fixed"),
    ("bow 1-3-grams, fixed, 512-d, 4096 terms", "bow", {**QUICKSTART_BOW, "max_vocab": 4096}, "fixed"),
    ("bow 1-3-grams, fixed, 1024-d, 4096 terms", "bow", {**QUICKSTART_BOW, "dim": 1024, "max_vocab": 4096}, "fixed"),
    ("bow 1-3-grams, pretrained", "bow", {**QUICKSTART_BOW, "dim": 128, "trainable": True}, "pretrained"),
    ("bow 1-3-grams, supervised", "bow", {**QUICKSTART_BOW, "dim": 128, "trainable": True}, "supervised"),
    ("char-cnn-rnn, random, fixed", "char-cnn-rnn", CHAR, "fixed"),
    ("char-cnn-rnn, pretrained", "char-cnn-rnn", CHAR, "pretrained"),
    ("char-cnn-rnn, supervised", "char-cnn-rnn", CHAR, "supervised"),
    ("word-gru, pretrained", "word-gru", {}, "pretrained"),
    ("word-gru, supervised", "word-gru", {}, "supervised"),
    ("small transformer (benchmark-only candidate), supervised", "tiny-transformer", {}, "supervised"),
    ("sentence-transformer (all-MiniLM-L6-v2), frozen", "sentence-transformer", {}, "fixed"),
)


class TinyTransformer(torch.nn.Module):
    """A candidate not shipped as a plugin: word vectors plus learnt positions, 2 post-norm layers, mean."""

    def __init__(self, dim: int = 128, width: int = 64, layers: int = 2, max_words: int = 64) -> None:
        super().__init__()
        self.dim, self.max_words, self.vocabulary = dim, max_words, None
        self.embed = torch.nn.Embedding(2002, width, padding_idx=0)
        self.position = torch.nn.Embedding(max_words, width)
        layer = torch.nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.1, batch_first=True)
        self.layers = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = torch.nn.Linear(width, dim)

    def prepare(self, dataset: ShapesDataset) -> None:
        self.vocabulary = Vocabulary.from_captions(dataset.captions(), min_count=1, max_words=2000)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [[i + 1 for i in self.vocabulary.indices(t)[: self.max_words]] or [0] for t in texts]
        table = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for n, row in enumerate(rows):
            table[n, : len(row)] = torch.tensor(row)
        pad = table == 0
        x = self.embed(table) + self.position(torch.arange(table.shape[1]))[None]
        x = self.layers(x, src_key_padding_mask=pad)
        keep = (~pad).float()[..., None]
        return self.out((x * keep).sum(1) / keep.sum(1).clamp(min=1))


def named(caption: str) -> dict[str, str]:
    """The attributes a caption names (each attribute word occurs only when it is named)."""
    low = caption.lower().replace("-", " ")
    found = {}
    for attribute in ("size", "position"):
        hits = [v for v in LABELS[attribute] if re.search(rf"\b{v}\b", low)]
        if hits:
            found[attribute] = hits[0]
    return found


def caption_sets(train_scenes: int, eval_scenes: int, seed: int) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """(caption, the attributes it names) for the probe's training set and each evaluation set."""
    sets: dict[str, list[tuple[str, dict[str, str]]]] = {"train": []}
    for scene in shapes.make_scenes(train_scenes, seed, "train"):
        attributes = scene.attributes()
        for text in shapes.captions(scene, seed, "train"):
            sets["train"].append((text, {k: attributes[k] for k in ("background", "color", "shape")} | named(text)))
    for split in ("test", "holdout"):
        for wording in shapes.WORDINGS:
            sets[f"{split}/{wording}"] = [(shapes.caption_for(s, seed, split, wording), s.attributes())
                                          for s in shapes.make_scenes(eval_scenes, seed, split)]
    return sets


def train_dataset(train_scenes: int, seed: int, cache: Path) -> ShapesDataset:
    return build_shapes(ShapesOptions(train_size=train_scenes, test_size=1, holdout_size=1, seed=seed),
                        DataContext(split="train", resolutions=(32,), cache_dir=cache))


def supervise(encoder: torch.nn.Module, data: list[tuple[str, dict[str, str]]], steps: int, seed: int) -> None:
    """Train ``encoder`` with one linear head per attribute on the captions' attributes."""
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(encoder.dim, len(v)) for a, v in LABELS.items()})
    optimizer = torch.optim.Adam([*encoder.parameters(), *heads.parameters()], lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    encoder.train()
    for _ in range(steps):
        batch = [data[i] for i in torch.randint(len(data), (64,), generator=generator).tolist()]
        features = as_text_features(encoder.encode_text([t for t, _ in batch])).sentence
        loss = features.new_zeros(())
        for attribute, values in LABELS.items():
            rows = [i for i, (_, a) in enumerate(batch) if attribute in a]
            target = torch.tensor([values.index(batch[i][1][attribute]) for i in rows])
            loss = loss + F.cross_entropy(heads[attribute](features[rows]), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    encoder.eval()


@torch.no_grad()
def embed(encoder: torch.nn.Module, texts: Sequence[str]) -> torch.Tensor:
    encoder.eval()
    return torch.cat([as_text_features(encoder.encode_text(list(texts[i:i + 256]))).sentence.float()
                      for i in range(0, len(texts), 256)])


def probe(train_x: torch.Tensor, train_y: torch.Tensor, classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A multinomial logistic regression on standardised features; returns its predictor."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    x = (train_x - mean) / std
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, train_y) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda z: (((z - mean) / std) @ weight + bias).argmax(1)


def measure(name: str, kind: str, options: dict, mode: str, sets: dict, args: argparse.Namespace,
            cache: Path) -> dict:
    torch.manual_seed(args.seed)
    if kind == "tiny-transformer":
        encoder = TinyTransformer(**options)
    else:
        entry = load_plugins().registry.get("text_encoder", kind)
        encoder = entry.factory(entry.options(**options), TextEncoderContext())
    dataset = train_dataset(args.train_scenes, args.seed, cache)
    encoder.prepare(dataset)
    started = time.monotonic()
    if mode == "pretrained":
        pretrain_char_cnn_rnn(encoder, dataset, PretrainOptions(steps=args.pretrain_steps, batch_size=64,
                                                                eval_examples=200, seed=args.seed))
    elif mode == "supervised":
        supervise(encoder, sets["train"], args.pretrain_steps, args.seed)
    train_seconds = time.monotonic() - started
    started = time.monotonic()
    features = {k: embed(encoder, [t for t, _ in v]) for k, v in sets.items()}
    embed_seconds = time.monotonic() - started
    row: dict = {"encoder": name, "type": kind, "options": options, "mode": mode, "dim": features["train"].shape[1],
                 "train_seconds": round(train_seconds, 1), "embed_seconds": round(embed_seconds, 1)}
    correct: dict[str, torch.Tensor] = {}
    for attribute, values in LABELS.items():
        rows = [i for i, (_, a) in enumerate(sets["train"]) if attribute in a]
        target = torch.tensor([values.index(sets["train"][i][1][attribute]) for i in rows])
        predict = probe(features["train"][rows], target, len(values))
        for key, data in sets.items():
            if key == "train":
                continue
            truth = torch.tensor([values.index(a[attribute]) for _, a in data])
            hit = predict(features[key]) == truth
            correct[key] = correct.get(key, torch.ones_like(hit)) & hit
            row[_name(key, attribute)] = round(hit.float().mean().item(), 4)
    for key, hit in correct.items():
        row[_name(key, "all")] = round(hit.float().mean().item(), 4)
    return row


def write_report(args: argparse.Namespace, rows: list[dict], **extra: object) -> Path:
    """Write ``args.out``: the arguments (but the path), the machine's core count, the captions'
    spec version, ``extra`` and the rows; the shapes benchmarks' one JSON layout."""
    report = {"arguments": {k: v for k, v in vars(args).items() if k != "out"}, "cpu_count": os.cpu_count(),
              "spec_version": shapes.SPEC_VERSION, **extra, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def _name(key: str, attribute: str) -> str:
    split, wording = key.split("/")
    return f"{split}/{attribute}" + ("" if wording == "seen" else "/unseen_wording")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/encoders-shapes.json", help="JSON file to write")
    parser.add_argument("--train-scenes", type=int, default=2000, help="training scenes (five captions each)")
    parser.add_argument("--eval-scenes", type=int, default=1000, help="scenes of test and of holdout")
    parser.add_argument("--pretrain-steps", type=int, default=600, help="steps of pretraining or supervision")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (and training seed)")
    parser.add_argument("--only", help="comma-separated registered encoder types to measure (default: all)")
    parser.add_argument("--modes", default="fixed,pretrained,supervised",
                        help="comma-separated ways of training to measure: fixed, pretrained, supervised")
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    modes = set(args.modes.split(","))
    sets = caption_sets(args.train_scenes, args.eval_scenes, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for name, kind, options, mode in ENCODERS:
            if (wanted is not None and kind not in wanted) or mode not in modes:
                continue
            rows.append(measure(name, kind, options, mode, sets, args, Path(cache)))
            r = rows[-1]
            print(f"{name}: colour {r['test/color']:.3f} / unseen {r['test/color/unseen_wording']:.3f}, "
                  f"background {r['test/background']:.3f} / unseen {r['test/background/unseen_wording']:.3f}, "
                  f"all {r['test/all']:.3f} / unseen {r['test/all/unseen_wording']:.3f} "
                  f"({r['train_seconds']} s training, {r['embed_seconds']} s embedding)", flush=True)
    out = write_report(args, rows, load_average=os.getloadavg(), threads=torch.get_num_threads())
    print("\n| encoder | colour | colour, unseen | background | background, unseen | all | all, unseen |"
          "\n| --- | --: | --: | --: | --: | --: | --: |")
    for r in rows:
        print(f"| {r['encoder']} | " + " | ".join(f"{100 * r[k]:.1f}%" for k in (
            "test/color", "test/color/unseen_wording", "test/background", "test/background/unseen_wording",
            "test/all", "test/all/unseen_wording")) + " |")
    print(f"\nWrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
