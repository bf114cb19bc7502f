"""The ``r-precision`` metric: can a caption be found again from the image generated for it?

Uses a text encoder and its image encoder pretrained together by ``ganstack pretrain-encoder``
(the file format is :mod:`ganstack.evaluate.joint_embedding`). Each generated image ranks its
own caption against those of the next 99 examples (R-precision with R = 1, as AttnGAN reports
it); ``real_r_precision`` is the same on the real images of the split, the encoders' ceiling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import cattrs
import torch
from attrs import validators as v
from torch import Tensor, nn

from ganstack.errors import PluginError, UserError
from ganstack.evaluate.joint_embedding import ImageEncoder, load_pretrained, retrieval_accuracy
from ganstack.interfaces import ImageSource, MetricContext, TextEncoderContext
from ganstack.recipe.paths import looked_in, resolve_recipe_path
from ganstack_defaults.metrics.sources import generate, item_batches, item_fields


@attrs.define(frozen=True, kw_only=True)
class RPrecisionOptions:
    """R-precision settings; ``encoder_checkpoint`` is required.

    ``encoder_checkpoint``: the file ``ganstack pretrain-encoder`` wrote, holding the text encoder
    and the image encoder trained with it (a relative path: next to the recipe, then the working
    folder); ``text_encoder``: the registered name of the text encoder
    pretrained in that file (``char-cnn-rnn`` or ``bow``), rebuilt with the options stored there;
    ``split``: the split whose first ``n`` examples give the captions to generate from and rank, and
    whose real images give ``real_r_precision``; ``batch_size``: images generated at a time;
    ``stage``: which stage's images are ranked, 1-based (null: the last); ``seed``: noise seed,
    batch ``b`` uses ``seed + b``
    """

    encoder_checkpoint: str
    text_encoder: str = "char-cnn-rnn"
    split: str = "test"
    batch_size: int = attrs.field(default=50, validator=v.ge(1))
    stage: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    seed: int = 0


class _Pictures:
    """Generated images with their captions, shaped like the dataset items retrieval reads.

    Held as uint8 (what a saved PNG would hold), a quarter of the memory of float images.
    """

    def __init__(self) -> None:
        self.pixels: list[Tensor] = []
        self.captions: list[str] = []

    def add(self, images: Tensor, captions: list[str]) -> None:
        self.pixels += list(((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
        self.captions += captions

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"images": [self.pixels[i].float() / 127.5 - 1], "caption": self.captions[i]}


def _stored_encoder_options(path: Path) -> dict[str, Any]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # load_pretrained reports what is wrong with the file
        return {}
    return dict(content.get("text_encoder_options") or {}) if isinstance(content, dict) else {}


def load_encoders(path: Path, name: str, ctx: MetricContext) -> tuple[nn.Module, ImageEncoder]:
    """Rebuild the pretrained text encoder ``name`` with its stored options; load both encoders."""
    if ctx.registry is None or ctx.converter is None:
        raise PluginError("r-precision builds a text encoder, and its MetricContext has no registry or converter",
                          fix="build metrics through ganstack (or ganstack.testing.metric_context() in a test)")
    entry = ctx.registry.get("text_encoder", name)
    try:
        options = ctx.converter.structure(_stored_encoder_options(path), entry.options)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise UserError(f"the options stored in {path} do not fit the text encoder '{name}' ({exc})",
                        path="text_encoder",
                        fix="set `text_encoder` to the encoder the file was pretrained with") from exc
    encoder = entry.factory(options, TextEncoderContext(device=ctx.device))
    if not encoder.can_encode_text:
        raise UserError(f"the text encoder '{name}' cannot encode captions, so it cannot rank them",
                        path="text_encoder", fix="use a pretrained char-cnn-rnn or bow encoder")
    image_encoder, _ = load_pretrained(path, encoder)
    return encoder, image_encoder


class RPrecision:
    """R-precision of generated images under a pretrained text/image encoder pair."""

    def __init__(self, options: RPrecisionOptions, ctx: MetricContext) -> None:
        self.options = options
        self.path, looked = resolve_recipe_path(options.encoder_checkpoint, ctx.recipe_dir, Path.is_file)
        if not self.path.is_file():
            raise UserError(f"the pretrained encoder file was not found (looked for {looked_in(looked)})",
                            path="encoder_checkpoint", fix="run `ganstack pretrain-encoder` and set "
                            "`encoder_checkpoint` to the file it writes")
        self.encoder, self.image_encoder = load_encoders(self.path, options.text_encoder, ctx)

    def evaluate(self, source: ImageSource, n: int) -> dict[str, float]:
        o = self.options
        if n < 2:
            raise UserError(f"r-precision needs at least 2 images to rank captions, got n={n}", path="n",
                            fix="set evaluation.n to 100 or more")
        dataset = source.dataset(o.split)
        pictures = _Pictures()
        for b, (_, items) in enumerate(item_batches(dataset, n, o.batch_size, o.split)):
            captions = [it["caption"] for it in items]
            pictures.add(generate(source, captions, o.seed + b, o.stage, item_fields(dataset, items)), captions)
        return {"r_precision": retrieval_accuracy(self.encoder, self.image_encoder, pictures, n),
                "real_r_precision": retrieval_accuracy(self.encoder, self.image_encoder, dataset, n)}
