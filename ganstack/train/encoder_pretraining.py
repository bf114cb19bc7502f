"""Pretraining a caption encoder on image-caption pairs, as Reed et al. (CVPR 2016) trained the
char-CNN-RNN whose embeddings StackGAN uses, so users can embed their own dataset and sentences.

The loss is the symmetric structured joint embedding: for a batch of pairs, the compatibility of
image ``i`` and caption ``j`` is the dot product of their features, and a softmax cross-entropy
over the batch asks each image to pick its caption and each caption its image (Reed used the
hinge form of the same objective). Reed's image side was fixed GoogLeNet features; with no
pretrained image network at hand, a small convolutional :class:`ImageEncoder` is trained jointly.

One file holds the result; its format, the image encoder and retrieval accuracy are in
:mod:`ganstack.evaluate.joint_embedding`, which the ``r-precision`` metric reads without the trainer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ganstack.atomic import write_bytes_atomic
from ganstack.errors import DataError, UserError
from ganstack.evaluate.joint_embedding import (
    FORMAT,
    ImageEncoder,
    build_image_encoder,
    device_of,
    largest_images,
    load_pretrained,
    retrieval,
    retrieval_accuracy,
)
from ganstack.interfaces import CaptionDataset, EpochAware, as_text_features

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


def joint_embedding_losses(text: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(text-to-image, image-to-text) cross-entropies of a batch whose pair ``i`` is ``text[i], image[i]``."""
    scores = image @ text.T  # [images, captions]
    target = torch.arange(len(scores), device=scores.device)
    return F.cross_entropy(scores.T, target), F.cross_entropy(scores, target)


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
    encoder.to(device or device_of(encoder))
    device = device_of(encoder)
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
        images, captions = largest_images(dataset, indices, device)
        to_image, to_text = joint_embedding_losses(as_text_features(encoder.encode_text(captions)).sentence.to(device),
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
    accuracy, chance = retrieval(encoder, image_encoder, dataset, options.eval_examples)
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
    write_bytes_atomic(Path(out_path), lambda fh: torch.save(content, fh), fix="choose another --out")
    return metrics


__all__ = ["FORMAT", "ImageEncoder", "PretrainOptions", "joint_embedding_losses", "load_pretrained",
           "pretrain_and_save", "pretrain_char_cnn_rnn", "retrieval_accuracy"]
