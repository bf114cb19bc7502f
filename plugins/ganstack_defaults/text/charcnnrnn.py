"""A hybrid character-level CNN-RNN text encoder of the family of Reed et al.'s (CVPR 2016), to train
on one's own captions and to embed new sentences.

It is not Reed's exact network (``torch.nn`` ReLU and recurrent layers; see :mod:`.reed` for his
pretrained encoders, the ones behind StackGAN's precomputed embeddings) and cannot hold his weights.

Characters are one-hot (or embedded), a stack of 1-D convolutions with max-pooling shortens the
sequence, a recurrent layer runs over the remaining steps, and the mean of its hidden states is
mapped linearly to ``dim``. With the defaults (201 characters, kernels 4, pools 3/3, 3/3, 3/2) the
recurrent layer sees 8 steps, as in Reed's code.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ganstack_defaults.text.base import CaptionEncoder

# Reed's alphabet: lower-case letters, digits, punctuation and space (his string of 70 lists '-' twice).
DEFAULT_ALPHABET = string.ascii_lowercase + string.digits + "-,;.!?:'\"/\\|_@#$%^&*~`+=<>()[]{} "


def _unique_characters(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not value or len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must be a non-empty string of distinct characters, "
                         f"got {value!r}")


def _positive_ints(instance: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value or any(v < 1 for v in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of integers >= 1, got {value!r}")


@attrs.define(frozen=True, kw_only=True)
class CharCnnRnnOptions:
    """Options of the ``char-cnn-rnn`` text encoder.

    ``dim``: output size (1024, the size of StackGAN's precomputed embeddings); ``alphabet``: the
    characters told apart (others, and padding, are all-zero columns); ``max_length``: characters
    read per caption (longer ones are cut); ``char_dim``: learnt character embedding size, or
    ``None`` for Reed's one-hot input; ``conv_channels``: output channels of each 1-D convolution,
    one entry per layer; ``kernel_size``: width of every convolution, in characters;
    ``pool_kernels``: max-pooling window after each convolution (one entry per layer);
    ``pool_strides``: max-pooling stride after each convolution (one entry per layer); ``rnn``:
    ``relu-rnn`` (Reed's plain recurrent layer), ``gru`` or ``lstm``, over the steps the pooling
    leaves; ``rnn_hidden``: hidden units of that recurrent layer, whose mean over the steps is
    mapped to ``dim``; ``lowercase``: lower-case captions before reading them (Reed's alphabet has
    no capitals)
    """

    dim: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    alphabet: str = attrs.field(default=DEFAULT_ALPHABET, validator=_unique_characters)
    max_length: int = attrs.field(default=201, validator=attrs.validators.ge(1))
    char_dim: int | None = attrs.field(default=None,
                                       validator=attrs.validators.optional(attrs.validators.ge(1)))
    conv_channels: tuple[int, ...] = attrs.field(default=(384, 512, 256), converter=tuple,
                                                 validator=_positive_ints)
    kernel_size: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    pool_kernels: tuple[int, ...] = attrs.field(default=(3, 3, 3), converter=tuple,
                                                validator=_positive_ints)
    pool_strides: tuple[int, ...] = attrs.field(default=(3, 3, 2), converter=tuple,
                                                validator=_positive_ints)
    rnn: Literal["relu-rnn", "gru", "lstm"] = attrs.field(
        default="relu-rnn", validator=attrs.validators.in_(["relu-rnn", "gru", "lstm"]))
    rnn_hidden: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    lowercase: bool = True

    def __attrs_post_init__(self) -> None:
        layers = len(self.conv_channels)
        if not len(self.pool_kernels) == len(self.pool_strides) == layers:
            raise ValueError(f"'pool_kernels' and 'pool_strides' need one entry per convolution layer "
                             f"('conv_channels' has {layers})")
        if self.time_steps() < 1:
            raise ValueError(f"'max_length' {self.max_length} is too short for the convolution and "
                             f"pooling layers: nothing is left for the recurrent layer")

    def time_steps(self) -> int:
        """How many steps the recurrent layer runs over: what the convolutions leave of a caption."""
        length = self.max_length
        for kernel, stride in zip(self.pool_kernels, self.pool_strides, strict=True):
            length = (length - self.kernel_size + 1 - kernel) // stride + 1
            if length < 1:
                return 0
        return length


class CharCnnRnnEncoder(CaptionEncoder):
    """Hybrid character CNN-RNN: convolutions and pooling, a recurrent layer, mean, linear."""

    def __init__(self, options: CharCnnRnnOptions) -> None:
        super().__init__(options.dim, trainable=True)
        self.options = options
        self._char_index = {c: i + 1 for i, c in enumerate(options.alphabet)}  # 0: padding/other
        width = len(options.alphabet)
        if options.char_dim is not None:
            self.embed = nn.Embedding(width + 1, options.char_dim, padding_idx=0)
            width = options.char_dim
        else:
            self.embed = None
        layers: list[nn.Module] = []
        for channels, kernel, stride in zip(options.conv_channels, options.pool_kernels,
                                            options.pool_strides, strict=True):
            layers += [nn.Conv1d(width, channels, options.kernel_size), nn.ReLU(),
                       nn.MaxPool1d(kernel, stride)]
            width = channels
        self.convs = nn.Sequential(*layers)
        rnn_class = {"relu-rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[options.rnn]
        extra = {"nonlinearity": "relu"} if options.rnn == "relu-rnn" else {}
        self.rnn = rnn_class(width, options.rnn_hidden, batch_first=True, **extra)
        self.out = nn.Linear(options.rnn_hidden, options.dim)

    def char_indices(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, max_length]`` alphabet positions (1-based; 0 for padding and other characters)."""
        length = self.options.max_length
        rows = torch.zeros(len(texts), length, dtype=torch.long)
        for r, text in enumerate(texts):
            text = text.lower() if self.options.lowercase else text
            row = [self._char_index.get(c, 0) for c in text[:length]]
            rows[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        return rows.to(self.out.weight.device)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        indices = self.char_indices(texts)
        if self.embed is not None:
            chars = self.embed(indices)
        else:
            chars = F.one_hot(indices, len(self.options.alphabet) + 1)[..., 1:].to(self.out.weight.dtype)
        steps = self.convs(chars.transpose(1, 2)).transpose(1, 2)  # [N, T, channels]
        hidden, _ = self.rnn(steps)
        return self.out(hidden.mean(dim=1))
