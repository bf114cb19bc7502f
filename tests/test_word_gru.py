"""The ``word-gru`` text encoder: it reads words in order, learns, travels in checkpoints, explains errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from ganstack.components.loader import load_plugins
from ganstack.errors import CheckpointError, DataError
from ganstack.interfaces import TextEncoder, TextEncoderContext
from ganstack.train.encoder_pretraining import load_pretrained
from ganstack_defaults.text.wordgru import WordGruEncoder, WordGruOptions

ROOT = Path(__file__).resolve().parent.parent
CAPTIONS = ["a red circle on a blue background", "a blue circle on a red background",
            "the circle is red and the background is blue", "the circle is blue and the background is red"]


class Captions:
    embedding_dim = None

    def __init__(self, captions: list[str]) -> None:
        self._captions = captions

    def __len__(self) -> int:
        return len(self._captions)

    def captions(self) -> list[str]:
        return list(self._captions)


def tiny(**changes: object) -> WordGruEncoder:
    torch.manual_seed(0)
    encoder = WordGruEncoder(WordGruOptions(**{"dim": 6, "word_dim": 5, "hidden": 7, "max_vocab": 40,
                                               "word_dropout": 0.0, **changes}))
    encoder.prepare(Captions(CAPTIONS))
    return encoder


def test_registered_with_its_options_and_builds_an_encoder() -> None:
    entry = load_plugins().registry.get("text_encoder", "word-gru")
    assert entry.options is WordGruOptions and entry.summary
    encoder = entry.factory(WordGruOptions(), TextEncoderContext())
    assert isinstance(encoder, TextEncoder) and encoder.can_encode_text and encoder.trainable


def test_reads_word_order_case_blind_with_unknown_words_alike() -> None:
    encoder = tiny().eval()
    out = encoder.encode_text([CAPTIONS[0], CAPTIONS[1], "A RED Circle on a BLUE background!",
                               "a red zebra on a blue background", "a red giraffe on a blue background", ""]).sentence
    assert out.shape == (6, 6) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # same words, other order: a bag would tie
    torch.testing.assert_close(out[0], out[2])
    torch.testing.assert_close(out[3], out[4])  # both unknown words read as the one unknown word
    assert not torch.allclose(out[0], out[3], atol=1e-4)
    # Padding does not leak: a caption encodes alike alone and beside a longer one.
    torch.testing.assert_close(encoder.encode_text([CAPTIONS[0]]).sentence[0], encoder.encode_text(CAPTIONS[:3]).sentence[0])


def test_learns_which_colour_is_the_shapes_from_word_order() -> None:
    encoder = tiny()
    head = torch.nn.Linear(6, 2)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=0.02)
    target = torch.tensor([0, 1, 0, 1])  # 0: the circle is red
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(head(encoder.encode_text(CAPTIONS).sentence), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()
    assert head(encoder.encode_text(CAPTIONS).sentence).argmax(1).tolist() == [0, 1, 0, 1]


def test_word_dropout_only_while_training_and_trainable_false_freezes() -> None:
    encoder = tiny(word_dropout=0.5)
    torch.manual_seed(1)
    assert not torch.allclose(encoder.encode_text(CAPTIONS).sentence, encoder.encode_text(CAPTIONS).sentence)
    encoder.eval()
    torch.testing.assert_close(encoder.encode_text(CAPTIONS).sentence, encoder.encode_text(CAPTIONS).sentence)
    frozen = tiny(trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.trainable


def test_vocabulary_travels_in_the_state_dict() -> None:
    encoder = tiny().eval()
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    buffer.seek(0)
    fresh = WordGruEncoder(encoder.options)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    assert fresh.vocabulary is not None and fresh.vocabulary.words == encoder.vocabulary.words
    torch.testing.assert_close(fresh.encode_text(CAPTIONS).sentence, encoder.encode_text(CAPTIONS).sentence)
    small = WordGruEncoder(WordGruOptions(dim=6, word_dim=5, hidden=7, max_vocab=5))
    with pytest.raises(CheckpointError, match="max_vocab"):
        small.set_extra_state(encoder.get_extra_state())
    with pytest.raises(CheckpointError, match="word-gru"):
        small.set_extra_state({"vocabulary": "not a list"})


def test_needs_a_vocabulary_and_says_why_there_is_none() -> None:
    with pytest.raises(RuntimeError, match="prepare"):
        WordGruEncoder(WordGruOptions()).encode_text(["a red circle"])
    with pytest.raises(DataError, match="min_count"):
        WordGruEncoder(WordGruOptions(min_count=50)).prepare(Captions(CAPTIONS))
    with pytest.raises(ValueError, match="word_dropout"):
        WordGruOptions(word_dropout=1.0)


def test_pretrain_encoder_cli_pretrains_it_on_shapes(cli, tmp_path: Path) -> None:
    out = tmp_path / "gru.pt"
    code, stdout, err = cli("pretrain-encoder", ROOT / "recipes" / "shapes_word_gru.yaml", "--out", out,
                            "--steps", 3, "--set", "dataset.train_size=40", "--set", "text_encoder.hidden=8",
                            "--set", "text_encoder.word_dim=8", "--set", "text_encoder.dim=16",
                            "--set", "training.device=cpu", "--set", "training.batch_size=8")
    assert code == 0, err
    encoder = WordGruEncoder(WordGruOptions(dim=16, hidden=8, word_dim=8))
    _, metrics = load_pretrained(out, encoder)
    assert encoder.vocabulary is not None and "circle" in encoder.vocabulary.words
    assert metrics["steps"] == 3.0
