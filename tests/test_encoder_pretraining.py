"""Pretraining a caption encoder against images: loss, retrieval accuracy, saving and loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ganstack.errors import CheckpointError, UserError
from ganstack.train.encoder_pretraining import (
    FORMAT,
    ImageEncoder,
    PretrainOptions,
    joint_embedding_losses,
    load_pretrained,
    pretrain_and_save,
    pretrain_char_cnn_rnn,
    retrieval_accuracy,
)
from ganstack_defaults.text.bow import BagOfWordsEncoder, BowOptions
from ganstack_defaults.text.charcnnrnn import CharCnnRnnEncoder, CharCnnRnnOptions
from ganstack_defaults.text.precomputed import PrecomputedEncoder, PrecomputedOptions

COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1),
           "cyan": (-1, 1, 1), "magenta": (1, -1, 1), "white": (1, 1, 1), "black": (-1, -1, -1)}
SIZE = 16


class Squares:
    """A CaptionDataset of coloured squares at random places on grey, captioned with their colour."""

    embedding_dim = None

    def __init__(self, per_colour: int = 6, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.examples: list[tuple[torch.Tensor, str]] = []
        for k in range(per_colour):
            for name, rgb in COLOURS.items():
                image = torch.zeros(3, SIZE, SIZE)
                side = 6 + k % 4
                y, x = torch.randint(0, SIZE - side + 1, (2,), generator=generator).tolist()
                image[:, y:y + side, x:x + side] = torch.tensor(rgb, dtype=torch.float).view(3, 1, 1)
                self.examples.append((image, f"a {name} square"))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, caption = self.examples[i]
        return {"images": [image], "caption": caption, "class_id": -1, "index": i}

    def captions(self) -> list[str]:
        return [caption for _, caption in self.examples]

    def sample_captions(self, k: int) -> list[str]:
        return self.captions()[:k]


def tiny_char_encoder(seed: int = 0) -> CharCnnRnnEncoder:
    torch.manual_seed(seed)
    return CharCnnRnnEncoder(CharCnnRnnOptions(
        dim=16, max_length=16, conv_channels=(24, 24), kernel_size=3, pool_kernels=(2, 2),
        pool_strides=(2, 2), rnn="gru", rnn_hidden=24))


TINY = PretrainOptions(steps=150, batch_size=16, lr=3e-3, image_encoder_width=8, eval_examples=48,
                       log_every=50)


class ColourTexts(nn.Module):
    """A perfect caption encoder for Squares: one-hot of the colour word."""

    dim = len(COLOURS)

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        names = list(COLOURS)
        return torch.stack([nn.functional.one_hot(torch.tensor(names.index(t.split()[1])), len(names))
                            for t in texts]).float()


class ColourImages(ImageEncoder):
    """A perfect image encoder for Squares: one-hot of the brightest colour's corner of the cube."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rgb = images.flatten(2).sum(-1).sign()  # the square decides the sign of each channel's sum
        codes = torch.tensor(list(COLOURS.values()), dtype=torch.float)
        return (rgb @ codes.T == 3).float()


def test_the_joint_embedding_loss_is_small_for_matching_pairs_only() -> None:
    aligned = torch.eye(4) * 10
    to_image, to_text = joint_embedding_losses(aligned, aligned)
    assert to_image.item() < 1e-3 and to_text.item() < 1e-3
    shuffled = joint_embedding_losses(aligned, aligned[[1, 2, 3, 0]])
    assert all(loss.item() > 5 for loss in shuffled)
    text, image = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.allclose(joint_embedding_losses(text, image)[0], joint_embedding_losses(image, text)[1])


def test_retrieval_accuracy_of_perfect_and_constant_encoders() -> None:
    data = Squares(per_colour=2)
    perfect_images = ColourImages(len(COLOURS), 1)
    assert retrieval_accuracy(ColourTexts(), perfect_images, data, n=16) == 1.0
    assert retrieval_accuracy(ColourTexts(), perfect_images, data, n=500) == 1.0  # n capped to the data

    class Constant(ColourTexts):
        def encode_text(self, texts: list[str]) -> torch.Tensor:
            return torch.ones(len(texts), len(COLOURS))

    assert retrieval_accuracy(Constant(), perfect_images, data, n=16) == 0.0


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and lose much when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_pretraining_makes_captions_find_their_images() -> None:
    data = Squares()
    encoder = tiny_char_encoder()
    image_encoder = ImageEncoder(encoder.dim, TINY.image_encoder_width)
    before = retrieval_accuracy(encoder, image_encoder, data, n=48)
    logged: dict[int, float] = {}
    metrics = pretrain_char_cnn_rnn(encoder, data, TINY, image_encoder=image_encoder,
                                    log=lambda step, m: logged.update({step: m["loss"]}))
    assert list(logged) == [50, 100, 150]
    assert logged[150] == metrics["loss"] < 0.6 * logged[50]
    assert metrics["chance"] == pytest.approx(1 / 43)  # 42 other-coloured rivals among 48
    assert before < 0.2
    assert metrics["retrieval_accuracy"] > 0.6 > 10 * metrics["chance"]
    assert metrics["retrieval_accuracy"] == retrieval_accuracy(encoder, image_encoder, data, n=48)
    assert encoder.training


def test_pretraining_refuses_an_encoder_with_nothing_to_train() -> None:
    with pytest.raises(UserError, match="char-cnn-rnn"):
        pretrain_char_cnn_rnn(PrecomputedEncoder(PrecomputedOptions(dim=4)), Squares(per_colour=1), TINY)


def test_saved_file_loads_safely_into_a_fresh_encoder(tmp_path: Path) -> None:
    data = Squares(per_colour=2)
    encoder = BagOfWordsEncoder(BowOptions(dim=8, max_vocab=20))  # prepared by pretrain_and_save
    out = tmp_path / "runs" / "encoder.pt"
    options = PretrainOptions(steps=5, batch_size=8, lr=1e-3, image_encoder_width=4, eval_examples=16)
    metrics = pretrain_and_save(encoder, data, out, options)
    content = torch.load(out, weights_only=True)
    assert content["format"] == FORMAT and content["metrics"] == metrics
    assert content["text_encoder_options"]["max_vocab"] == 20

    fresh = BagOfWordsEncoder(BowOptions(dim=8, max_vocab=20))
    image_encoder, loaded_metrics = load_pretrained(out, fresh)
    sentence = ["a magenta square, never seen as such"]
    assert torch.equal(fresh.encode_text(sentence).sentence, encoder.encode_text(sentence).sentence)
    assert loaded_metrics == metrics
    assert retrieval_accuracy(fresh, image_encoder, data, n=16) == metrics["retrieval_accuracy"]


def test_loading_a_wrong_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such"):
        load_pretrained(tmp_path / "missing.pt", tiny_char_encoder())
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a ganstack"):
        load_pretrained(foreign, tiny_char_encoder())
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pretrained(garbage, tiny_char_encoder())
    saved = tmp_path / "char.pt"
    pretrain_and_save(tiny_char_encoder(), Squares(per_colour=1), saved,
                      PretrainOptions(steps=1, batch_size=4, image_encoder_width=4, eval_examples=8))
    other = CharCnnRnnEncoder(CharCnnRnnOptions(dim=16, max_length=16, conv_channels=(8, 8),
                                                kernel_size=3, pool_kernels=(2, 2), pool_strides=(2, 2)))
    with pytest.raises(CheckpointError, match="conv_channels"):
        load_pretrained(saved, other)
