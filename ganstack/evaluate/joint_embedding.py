"""The text/image encoder pair of a pretrained caption encoder: its file, and retrieval accuracy.

``ganstack pretrain-encoder`` (:mod:`ganstack.train.encoder_pretraining`) writes the file; the
``r-precision`` metric and ``text_encoder_init`` read it. It sits below training so that scoring a run
never imports the trainer.

One file holds the pair, loadable with ``torch.load(weights_only=True)``: a dict with ``format``,
``text_encoder`` (its state dict), ``image_encoder`` (state dict), ``image_encoder_width``,
``text_dim``, ``metrics``, ``options`` and, where the encoder has an attrs ``options``,
``text_encoder_options``. :func:`load_pretrained` reads it back.
"""

from __future__ import annotations

import os
import pickle
from itertools import chain
from pathlib import Path

import torch
from torch import nn

from ganstack.errors import CheckpointError, DataError
from ganstack.interfaces import CaptionDataset, as_text_features
from ganstack.run_folder.checkpoint import load_failure

FORMAT = "ganstack-text-encoder-pretraining/1"
RETRIEVAL_CANDIDATES = 100  # captions each image is ranked against, as in R-precision
EVAL_CHUNK = 256


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


def device_of(module: nn.Module) -> torch.device | None:
    for tensor in chain(module.parameters(), module.buffers()):
        return tensor.device
    return None


def largest_images(dataset: CaptionDataset, indices: list[int], device: torch.device | None
           ) -> tuple[torch.Tensor, list[str]]:
    """The examples' largest images and their captions."""
    items = [dataset[i] for i in indices]
    return torch.stack([item["images"][-1] for item in items]).to(device), [item["caption"] for item in items]


@torch.no_grad()
def retrieval(encoder: nn.Module, image_encoder: ImageEncoder, dataset: CaptionDataset, n: int
               ) -> tuple[float, float]:
    """(accuracy, its chance level) of ranking each image's own caption first; see below."""
    n = min(n, len(dataset))
    if n < 2:
        raise DataError(f"retrieval accuracy needs two examples or more; the dataset has {len(dataset)}")
    modes = encoder.training, image_encoder.training
    encoder.eval()
    image_encoder.eval()
    device = device_of(image_encoder)
    images, texts, captions = [], [], []
    try:
        for start in range(0, n, EVAL_CHUNK):
            pixels, chunk = largest_images(dataset, list(range(start, min(n, start + EVAL_CHUNK))), device)
            images.append(image_encoder(pixels))
            texts.append(as_text_features(encoder.encode_text(chunk)).sentence.to(device))
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
    return retrieval(encoder, image_encoder, dataset, n)[0]


def load_pretrained(path: str | os.PathLike[str], encoder: nn.Module) -> tuple[ImageEncoder, dict[str, float]]:
    """Load a :func:`pretrain_and_save` file into ``encoder``; return its image encoder and metrics."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such pretrained text encoder file", file=str(path),
                              fix="give the file `ganstack pretrain-encoder` wrote")
    try:
        content = torch.load(path, map_location=device_of(encoder), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, MemoryError) as exc:
        raise CheckpointError(f"cannot read it as a pretrained text encoder ({load_failure(exc)})",
                              file=str(path), fix="pretrain again, or use the file `ganstack pretrain-encoder` "
                              "wrote") from None
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
    return image_encoder.to(device_of(encoder)), dict(content["metrics"])
