"""Reed et al.'s pretrained char-CNN-RNN encoders (CUB, Oxford-102, COCO): the text side of StackGAN's
``char-CNN-RNN-embeddings.pickle``, run in PyTorch so new sentences get the embeddings the
released models were trained on.

The layers are exactly Reed's Torch7 ones, not ``torch.nn`` look-alikes: a caption is read as
UTF-8 bytes, one step per byte (201 kept), each a one-hot row over Reed's 70-symbol alphabet (a
byte outside it is a zero row); temporal convolutions with ``nn.Threshold`` (x if x > 1e-6 else
0) and max-pooling; then his FixedGRU (no gates at step 1, the reset gate applied to the hidden
state *before* its linear layer) or FixedRNN; the mean of the hidden states (or the last one);
a linear layer to the embedding. ``torch.nn.GRU`` differs at every one of those points.

The weights come from an encoder file written by ``ganstack import char-cnn-rnn`` (see
:mod:`ganstack_defaults.text.reed_import`). They are frozen and held as non-persistent buffers,
so they move with ``.to(device)`` but stay out of run checkpoints: the file is their home.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganstack.atomic import write_bytes_atomic
from ganstack.errors import CheckpointError
from ganstack.interfaces import TextEncoderContext
from ganstack.recipe.paths import looked_in, resolve_recipe_path
from ganstack_defaults.text.base import CaptionEncoder

# Reed's alphabet (70 symbols, the last a space). '-' is listed twice; his dictionary keeps the
# later position (60), so column 37 is never set.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
MAX_LENGTH = 201  # characters read per caption (Reed's doc_length)
FORMAT = "ganstack.reed-char-cnn-rnn"
FORMAT_VERSION = 1
IMPORT_HINT = "write it with `ganstack import char-cnn-rnn FILE.t7 --out ENCODER.pt` (docs/reed-encoders.md)"
ENCODE_CHUNK = 128  # captions per forward pass, to bound memory on long lists


def byte_columns(alphabet: str) -> np.ndarray:
    """Byte value -> 0-based one-hot column (-1: a zero row), the later position winning for a repeated
    symbol (Reed's dictionary is filled in order, so the second '-' overwrites the first)."""
    columns = np.full(256, -1, dtype=np.int64)
    for i, symbol in enumerate(alphabet):
        for byte in symbol.encode("utf-8"):
            columns[byte] = i
    return columns


@attrs.frozen(kw_only=True)
class ConvLayer:
    """``nn.TemporalConvolution(in, out, width, stride)``; the weight is stored ``[out, in, width]``."""

    in_channels: int
    out_channels: int
    width: int
    stride: int = 1
    kind: Literal["conv"] = "conv"


@attrs.frozen(kw_only=True)
class ThresholdLayer:
    """``nn.Threshold(threshold, value)``: x where x > threshold, else value (``nn.ReLU``: 0, 0)."""

    threshold: float
    value: float
    kind: Literal["threshold"] = "threshold"


@attrs.frozen(kw_only=True)
class MaxPoolLayer:
    """``nn.TemporalMaxPooling(width, stride)`` (the last incomplete window is dropped)."""

    width: int
    stride: int
    kind: Literal["maxpool"] = "maxpool"


Layer = ConvLayer | ThresholdLayer | MaxPoolLayer
_LAYER_CLASSES: dict[str, type] = {"conv": ConvLayer, "threshold": ThresholdLayer, "maxpool": MaxPoolLayer}


@attrs.frozen(kw_only=True)
class ReedArchitecture:
    """What an imported encoder is, recorded in its file: the CNN's layers in order, the recurrent
    layer (``gru``: FixedGRU, ``rnn``: FixedRNN with ReLU) over ``steps`` steps of ``hidden`` units,
    whether the mean of the hidden states (``average``) or the last is projected to ``dim``."""

    alphabet: str = ALPHABET
    max_length: int = MAX_LENGTH
    layers: tuple[Layer, ...]
    rnn: Literal["gru", "rnn"] = attrs.field(validator=attrs.validators.in_(("gru", "rnn")))
    hidden: int
    steps: int
    average: bool
    dim: int

    def cnn_steps(self, length: int | None = None) -> int:
        """How many steps the CNN leaves of ``length`` (default ``max_length``) characters."""
        n = self.max_length if length is None else length
        for layer in self.layers:
            if isinstance(layer, (ConvLayer, MaxPoolLayer)):
                n = (n - layer.width) // layer.stride + 1 if n >= layer.width else 0
        return n

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the encoder needs, by name."""
        shapes: dict[str, tuple[int, ...]] = {}
        convs = [layer for layer in self.layers if isinstance(layer, ConvLayer)]
        for i, conv in enumerate(convs):
            shapes[f"conv{i}.weight"] = (conv.out_channels, conv.in_channels, conv.width)
            shapes[f"conv{i}.bias"] = (conv.out_channels,)
        gates = ("i2h", "h2h", "i2h_update", "h2h_update", "i2h_reset", "h2h_reset") if self.rnn == "gru" \
            else ("i2h", "h2h")
        for gate in gates:
            shapes[f"{gate}.weight"] = (self.hidden, self.hidden)
            shapes[f"{gate}.bias"] = (self.hidden,)
        shapes["out.weight"] = (self.dim, self.hidden)
        shapes["out.bias"] = (self.dim,)
        return shapes

    def check(self) -> None:
        """Raise ``ValueError`` when the layers do not chain from the alphabet to the recurrent layer."""
        width = len(self.alphabet)
        for layer in self.layers:
            if isinstance(layer, ConvLayer):
                if layer.in_channels != width:
                    raise ValueError(f"a convolution reads {layer.in_channels} channels, but {width} arrive")
                width = layer.out_channels
        if width != self.hidden:
            raise ValueError(f"the CNN gives {width} channels, but the recurrent layer has {self.hidden} units")
        if self.cnn_steps() != self.steps:
            raise ValueError(f"the CNN leaves {self.cnn_steps()} steps of {self.max_length} characters, but "
                             f"the recurrent layer runs over {self.steps}")

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)  # nested layers as dicts, tuples as lists: what weights_only loads

    @classmethod
    def from_dict(cls, data: Any) -> ReedArchitecture:
        """Rebuild from :meth:`to_dict`'s plain data (``ValueError``/``TypeError``/``KeyError`` if foreign)."""
        fields = dict(data)
        fields["layers"] = tuple(_LAYER_CLASSES[layer["kind"]](**layer) for layer in fields["layers"])
        arch = cls(**fields)
        arch.check()
        return arch


def save_encoder_file(path: Path, architecture: ReedArchitecture, tensors: dict[str, torch.Tensor],
                      source: dict[str, str]) -> None:
    """Write an encoder file (atomically) that ``torch.load(weights_only=True)`` reads."""
    content = {"format": FORMAT, "version": FORMAT_VERSION, "architecture": architecture.to_dict(),
               "tensors": {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()},
               "source": dict(source)}
    write_bytes_atomic(path, lambda fh: torch.save(content, fh))


def load_encoder_file(path: Path) -> tuple[ReedArchitecture, dict[str, torch.Tensor], dict[str, str]]:
    """The architecture, tensors and source of an encoder file, or a :class:`CheckpointError`."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("encoder file not found", file=str(path), fix=IMPORT_HINT) from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it asks for '{found.group(1)}', which" if found else "it holds objects that"
        raise CheckpointError(f"refused to load: {what} an encoder file never holds (only tensors and plain "
                              "data are read, as a pickle can run code)", file=str(path),
                              fix=f"give the file `ganstack import char-cnn-rnn` wrote; {IMPORT_HINT}") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(f"not a readable encoder file ({first})", file=str(path),
                              fix=f"the file may be truncated or of another kind; {IMPORT_HINT}") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise CheckpointError(f"not a char-CNN-RNN encoder file (its format is {found!r}, expected {FORMAT!r})",
                              file=str(path), fix=f"give the file `ganstack import char-cnn-rnn` wrote; {IMPORT_HINT}")
    if content.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"encoder file version {content.get('version')!r}; this ganstack reads version "
                              f"{FORMAT_VERSION}", file=str(path), fix=f"import the .t7 file again; {IMPORT_HINT}")
    try:
        architecture = ReedArchitecture.from_dict(content["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the encoder file's architecture is unreadable ({exc})", file=str(path),
                              fix=f"import the .t7 file again; {IMPORT_HINT}") from None
    tensors = content.get("tensors")
    expected = architecture.tensor_shapes()
    if not isinstance(tensors, dict):
        raise CheckpointError("the encoder file holds no tensors", file=str(path), fix=IMPORT_HINT)
    for name, shape in expected.items():
        found = tensors.get(name)
        if not isinstance(found, torch.Tensor) or tuple(found.shape) != shape:
            what = "missing" if found is None else f"of shape {tuple(getattr(found, 'shape', ()))}"
            raise CheckpointError(f"tensor '{name}' is {what}; the architecture needs {shape}", file=str(path),
                                  fix=f"import the .t7 file again; {IMPORT_HINT}")
    source = content.get("source") if isinstance(content.get("source"), dict) else {}
    return architecture, {k: tensors[k].float() for k in expected}, source


class ReedCharCnnRnn(nn.Module):
    """The forward pass of Reed's encoder on characters; weights as non-persistent buffers."""

    def __init__(self, architecture: ReedArchitecture, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.architecture = architecture
        for name, shape in architecture.tensor_shapes().items():
            tensor = tensors[name].detach().float().reshape(shape).clone()
            self.register_buffer(name.replace(".", "_"), tensor, persistent=False)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"))

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """``chars``: one-hot ``[N, max_length, alphabet]`` -> ``[N, dim]``."""
        arch = self.architecture
        x = chars.transpose(1, 2)  # [N, channels, steps]
        conv = 0
        for layer in arch.layers:
            if isinstance(layer, ConvLayer):
                x = F.conv1d(x, getattr(self, f"conv{conv}_weight"), getattr(self, f"conv{conv}_bias"),
                             stride=layer.stride)
                conv += 1
            elif isinstance(layer, ThresholdLayer):
                x = torch.where(x > layer.threshold, x, torch.full_like(x, layer.value))
            else:
                x = F.max_pool1d(x, layer.width, layer.stride)
        steps = x.transpose(1, 2)  # [N, steps, hidden]
        first_activation = torch.tanh if arch.rnn == "gru" else torch.relu
        h = first_activation(self._linear(steps[:, 0], "i2h"))
        total = h
        for t in range(1, steps.shape[1]):
            xt = steps[:, t]
            if arch.rnn == "gru":
                update = torch.sigmoid(self._linear(xt, "i2h_update") + self._linear(h, "h2h_update"))
                reset = torch.sigmoid(self._linear(xt, "i2h_reset") + self._linear(h, "h2h_reset"))
                candidate = torch.tanh(self._linear(xt, "i2h") + self._linear(reset * h, "h2h"))
                h = update * candidate + (1 - update) * h
            else:
                h = torch.relu(self._linear(xt, "i2h") + self._linear(h, "h2h"))
            total = total + h
        hidden = total / steps.shape[1] if arch.average else h
        return self._linear(hidden, "out")  # Dropout before it is inactive at evaluation


@attrs.define(frozen=True, kw_only=True)
class ReedOptions:
    """Options of the ``reed-char-cnn-rnn`` text encoder (its size is the imported encoder's: 1024).

    ``weights``: the encoder file written by ``ganstack import char-cnn-rnn FILE.t7 --out FILE``
    (a relative path: next to the recipe, then the working folder); ``lowercase``: lower-case
    captions first (Reed's demo does not, so a capital letter is a zero row as in his code; his
    alphabet has no capitals)
    """

    weights: str
    lowercase: bool = False


class ReedEncoder(CaptionEncoder):
    """Frozen pretrained char-CNN-RNN: captions to Reed's embeddings."""

    def __init__(self, options: ReedOptions, architecture: ReedArchitecture, tensors: dict[str, torch.Tensor],
                 source: dict[str, str] | None = None) -> None:
        super().__init__(architecture.dim, trainable=False)
        self.options = options
        self.architecture = architecture
        self.source = dict(source or {})
        self.net = ReedCharCnnRnn(architecture, tensors)
        self._columns = byte_columns(architecture.alphabet)

    def one_hot(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, max_length, alphabet]``: one row per UTF-8 byte, as Lua's byte-wise ``string.sub`` reads."""
        arch = self.architecture
        out = np.zeros((len(texts), arch.max_length, len(arch.alphabet)), dtype=np.float32)
        for row, text in enumerate(texts):
            text = text.lower() if self.options.lowercase else text
            columns = self._columns[np.frombuffer(text.encode("utf-8")[:arch.max_length], dtype=np.uint8)]
            steps = np.flatnonzero(columns >= 0)
            out[row, steps, columns[steps]] = 1.0
        return torch.from_numpy(out)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), dim]`` float32, computed in float32 even inside a mixed-precision step."""
        device = self.net.out_weight.device
        if not texts:
            return torch.zeros(0, self.dim, device=device)
        full_precision = (torch.autocast(device.type, enabled=False) if device.type in ("cuda", "cpu")
                          else contextlib.nullcontext())
        with full_precision:
            chunks = [self.net(self.one_hot(texts[i:i + ENCODE_CHUNK]).to(device))
                      for i in range(0, len(texts), ENCODE_CHUNK)]
        return torch.cat(chunks)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_reed_encoder(path: str | Path, *, lowercase: bool = False, device: str = "cpu") -> ReedEncoder:
    """The encoder in an encoder file, for Python use: ``load_reed_encoder(f).encode_text([...])`` gives
    the embeddings ``ganstack sample RUN --embeddings FILE.npy`` takes for a run on precomputed ones."""
    architecture, tensors, source = load_encoder_file(Path(path))
    return ReedEncoder(ReedOptions(weights=str(path), lowercase=lowercase), architecture, tensors, source).to(device)


def build_reed(options: ReedOptions, ctx: TextEncoderContext) -> ReedEncoder:
    """Reed's pretrained char-CNN-RNN (CUB, Oxford-102 or COCO), imported from Torch7; frozen."""
    path, candidates = resolve_recipe_path(options.weights, ctx.recipe_dir, Path.is_file)
    if not path.is_file():
        raise CheckpointError(f"encoder file not found (looked for {looked_in(candidates)})", file=str(path),
                              path="text_encoder.weights", fix=IMPORT_HINT)
    try:
        architecture, tensors, source = load_encoder_file(path)
    except CheckpointError as exc:
        raise CheckpointError(exc.message, file=exc.file, path="text_encoder.weights", fix=exc.fix) from None
    return ReedEncoder(options, architecture, tensors, source).to(ctx.device)
