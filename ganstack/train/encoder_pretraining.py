"""Pretraining a caption encoder on image-caption pairs, as Reed et al. (CVPR 2016) trained the
char-CNN-RNN whose embeddings StackGAN uses, so users can embed their own dataset and sentences.

The loss is the symmetric structured joint embedding: for a batch of pairs, the compatibility of
image ``i`` and caption ``j`` is the dot product of their features, and a softmax cross-entropy
over the batch asks each image to pick its caption and each caption its image (Reed used the
hinge form of the same objective). Reed's image side was fixed GoogLeNet features; with no
pretrained image network at hand, a small convolutional :class:`ImageEncoder` is trained jointly.

One file holds the result, loadable with ``torch.load(weights_only=True)``: a dict with
``format``, ``text_encoder`` (its state dict), ``image_encoder`` (state dict),
``image_encoder_width``, ``text_dim``, ``metrics``, ``options`` and, where the encoder has an
attrs ``options``, ``text_encoder_options``. :func:`load_pretrained` reads it back.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ganstack.errors import CheckpointError, DataError, UserError
from ganstack.interfaces import CaptionDataset, EpochAware

FORMAT = "ganstack-text-encoder-pretraining/1"
RETRIEVAL_CANDIDATES = 100  # captions each image is ranked against, as in R-precision
_EVAL_CHUNK = 256

LogFn = Callable[[int, dict[str, float]], None]


@attrs.define(frozen=True, kw_only=True)
class PretrainOptions:
    """How a text encoder is pretrained against images with the joint-embedding loss.

    ``steps``: optimiser steps, one batch each; ``batch_size``: image-caption pairs per step, each
    caption scored against every image of the batch (40, Reed's CUB setting); ``lr``: Adam learning
    rate (7e-4, Reed's CUB setting, with RMSprop there); ``image_encoder_width``: channels of the
    first of the image encoder's three convolutions (doubled at each); ``seed``: seeds the image
    encoder's initialisation and the batch order; ``eval_examples``: examples whose retrieval
    accuracy (each image ranking its caption among 100) is measured at the end; ``log_every``: steps
    between calls of ``log`` with the mean losses since the last call
    """

    steps: int = attrs.field(default=10000, validator=attrs.validators.ge(1))
    batch_size: int = attrs.field(default=40, validator=attrs.validators.ge(2))
    lr: float = attrs.field(default=7e-4, validator=attrs.validators.gt(0.0))
    image_encoder_width: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    seed: int = 0
    eval_examples: int = attrs.field(default=1000, validator=attrs.validators.ge(2))
    log_every: int = attrs.field(default=100, validator=attrs.validators.ge(1))


class ImageEncoder(nn.Module):
    """Three stride-2 convolutions, global average pooling and a linear map to the text size."""

    def __init__(self, out_dim: int, width: int) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.width = width
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, out_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def build_image_encoder(text_dim: int, width: int, seed: int) -> ImageEncoder:
    """An :class:`ImageEncoder` whose initialisation depends on ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ImageEncoder(text_dim, width)


def joint_embedding_losses(text: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(text-to-image, image-to-text) cross-entropies of a batch whose pair ``i`` is ``text[i], image[i]``."""
    scores = image @ text.T  # [images, captions]
    target = torch.arange(len(scores), device=scores.device)
    return F.cross_entropy(scores.T, target), F.cross_entropy(scores, target)


def _device_of(module: nn.Module) -> torch.device | None:
    for tensor in chain(module.parameters(), module.buffers()):
        return tensor.device
    return None


def _batch(dataset: CaptionDataset, indices: list[int], device: torch.device | None
           ) -> tuple[torch.Tensor, list[str]]:
    """The examples' largest images and their captions."""
    items = [dataset[i] for i in indices]
    return torch.stack([item["images"][-1] for item in items]).to(device), [item["caption"] for item in items]


@torch.no_grad()
def _retrieval(encoder: nn.Module, image_encoder: ImageEncoder, dataset: CaptionDataset, n: int
               ) -> tuple[float, float]:
    """(accuracy, its chance level) of ranking each image's own caption first; see below."""
    n = min(n, len(dataset))
    if n < 2:
        raise DataError(f"retrieval accuracy needs two examples or more; the dataset has {len(dataset)}")
    modes = encoder.training, image_encoder.training
    encoder.eval()
    image_encoder.eval()
    device = _device_of(image_encoder)
    images, texts, captions = [], [], []
    try:
        for start in range(0, n, _EVAL_CHUNK):
            pixels, chunk = _batch(dataset, list(range(start, min(n, start + _EVAL_CHUNK))), device)
            images.append(image_encoder(pixels))
            texts.append(encoder.encode_text(chunk).to(device))
            captions += chunk
    finally:
        encoder.train(modes[0])
        image_encoder.train(modes[1])
    scores = torch.cat(images) @ torch.cat(texts).T
    # Image i against its own caption and the next k-1 examples' captions (cyclically); rivals
    # with the very same text are not counted, so a constant encoder scores 0, not 1.
    k = min(n, RETRIEVAL_CANDIDATES)
    candidates = (torch.arange(n, device=device)[:, None] + torch.arange(k, device=device)) % n
    text_ids = {text: i for i, text in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([text_ids[c] for c in captions], device=device)
    rival = ids[candidates] != ids[:, None]
    rival_scores = scores.gather(1, candidates).masked_fill(~rival, float("-inf"))
    hits = scores.diagonal() > rival_scores.max(dim=1).values
    chance = (1.0 / (1 + rival.sum(dim=1).to(scores.dtype))).mean()
    return hits.to(scores.dtype).mean().item(), chance.item()


def retrieval_accuracy(encoder: nn.Module, image_encoder: ImageEncoder, dataset: CaptionDataset,
                       n: int) -> float:
    """Fraction of the first ``n`` examples' images whose own caption scores above every other
    caption among 100 candidates (all ``n`` when fewer): its own and the next examples'."""
    return _retrieval(encoder, image_encoder, dataset, n)[0]


def pretrain_char_cnn_rnn(encoder: nn.Module, dataset: CaptionDataset,
                          options: PretrainOptions = PretrainOptions(), *,
                          image_encoder: ImageEncoder | None = None,
                          device: str | torch.device | None = None,
                          log: LogFn | None = None) -> dict[str, float]:
    """Train a (prepared) caption encoder and an image encoder jointly; return the final metrics.

    Works for any trainable encoder with ``encode_text`` (char-CNN-RNN, bag of words). Both
    modules move to ``device`` (default: the encoder's). Metrics: the mean losses of the last
    ``log_every`` steps, ``retrieval_accuracy`` on ``eval_examples`` examples and its ``chance``.
    """
    if not any(p.requires_grad for p in encoder.parameters()):
        raise UserError("this text encoder has no trainable parameters, so there is nothing to pretrain",
                        fix="pretrain a trainable text encoder such as char-cnn-rnn or bow")
    if len(dataset) < 2:
        raise DataError(f"pretraining needs two examples or more; the dataset has {len(dataset)}")
    encoder.to(device or _device_of(encoder))
    device = _device_of(encoder)
    if image_encoder is None:
        image_encoder = build_image_encoder(encoder.dim, options.image_encoder_width, options.seed)
    image_encoder.to(device)
    params = [p for p in chain(encoder.parameters(), image_encoder.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=options.lr)
    generator = torch.Generator().manual_seed(options.seed)
    batch_size = min(options.batch_size, len(dataset))
    encoder.train()
    image_encoder.train()
    sums = torch.zeros(2, device=device)
    window = 0
    metrics: dict[str, float] = {}
    for step in range(1, options.steps + 1):
        indices = torch.randperm(len(dataset), generator=generator)[:batch_size].tolist()
        if isinstance(dataset, EpochAware):  # each step its own crops and captions, fixed by the step
            dataset.set_epoch(step)
        images, captions = _batch(dataset, indices, device)
        to_image, to_text = joint_embedding_losses(encoder.encode_text(captions).to(device),
                                                   image_encoder(images))
        optimizer.zero_grad(set_to_none=True)
        ((to_image + to_text) / 2).backward()
        optimizer.step()
        sums += torch.stack([to_image.detach(), to_text.detach()])
        window += 1
        if step % options.log_every == 0 or step == options.steps:
            t2i, i2t = (sums / window).tolist()
            metrics = {"loss": (t2i + i2t) / 2, "loss_text_to_image": t2i, "loss_image_to_text": i2t}
            if log is not None:
                log(step, metrics)
            sums.zero_()
            window = 0
    accuracy, chance = _retrieval(encoder, image_encoder, dataset, options.eval_examples)
    return {**metrics, "retrieval_accuracy": accuracy, "chance": chance, "steps": float(options.steps)}


def pretrain_and_save(encoder: nn.Module, dataset: CaptionDataset, out_path: str | os.PathLike[str],
                      options: PretrainOptions = PretrainOptions(), *,
                      device: str | torch.device | None = None,
                      log: LogFn | None = None) -> dict[str, float]:
    """Prepare ``encoder`` on ``dataset`` (its vocabulary, if any), pretrain it, write ``out_path``."""
    encoder.prepare(dataset)
    image_encoder = build_image_encoder(encoder.dim, options.image_encoder_width, options.seed)
    metrics = pretrain_char_cnn_rnn(encoder, dataset, options, image_encoder=image_encoder,
                                    device=device, log=log)
    content: dict[str, Any] = {
        "format": FORMAT, "text_encoder": encoder.state_dict(), "image_encoder": image_encoder.state_dict(),
        "image_encoder_width": image_encoder.width, "text_dim": image_encoder.out_dim,
        "metrics": metrics, "options": attrs.asdict(options),
    }
    encoder_options = getattr(encoder, "options", None)
    if attrs.has(type(encoder_options)):
        content["text_encoder_options"] = attrs.asdict(encoder_options)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(content, partial)
    partial.replace(out)  # never leave a half-written file under the real name
    return metrics


def load_pretrained(path: str | os.PathLike[str], encoder: nn.Module) -> tuple[ImageEncoder, dict[str, float]]:
    """Load a :func:`pretrain_and_save` file into ``encoder``; return its image encoder and metrics."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such pretrained text encoder file", file=str(path),
                              fix="give the file `ganstack pretrain-encoder` wrote")
    try:
        content = torch.load(path, map_location=_device_of(encoder), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read it as a pretrained text encoder ({exc})".split("\n")[0],
                              file=str(path), fix="pretrain again; the file is damaged or not ganstack's") from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CheckpointError("not a ganstack pretrained text encoder file", file=str(path),
                              fix="give the file `ganstack pretrain-encoder` wrote")
    try:
        encoder.load_state_dict(content["text_encoder"])
        image_encoder = ImageEncoder(content["text_dim"], content["image_encoder_width"])
        image_encoder.load_state_dict(content["image_encoder"])
    except RuntimeError as exc:
        stored = content.get("text_encoder_options")
        raise CheckpointError(
            "its weights do not fit this text encoder: " + str(exc).splitlines()[0], file=str(path),
            fix="build the text encoder with the options it was pretrained with"
            + (f": {stored}" if stored else ""),
        ) from exc
    return image_encoder.to(_device_of(encoder)), dict(content["metrics"])
