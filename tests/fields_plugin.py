"""A test-only plugin for the widened contract (issue #13): a dataset with a box per example, a
box-conditioned generator stage and discriminator, a text encoder that gives word features, a stage
that reads them, and a loss that draws through ``StepState.generate``. Each module records what it
was given (``SEEN``), so tests compare that with the data."""

from __future__ import annotations

from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstack.hookspecs import hookimpl
from ganstack.interfaces import Condition, DataContext, StageContext, StageOutput, TextFeatures

SEEN: dict[str, list[Any]] = {}
COLOURS = ["red", "green", "blue", "yellow"]


def record(key: str, value: Any) -> None:
    SEEN.setdefault(key, []).append(value)


def example_box(i: int) -> list[float]:
    """Example ``i``'s box: a different, hand-checkable box per example."""
    return [i / 64, i / 128, 0.5 + i / 64, 0.75]


@attrs.define
class BoxedOptions:
    size: int = 16
    fields: list[str] = attrs.Factory(lambda: ["box"])


class Boxed(torch.utils.data.Dataset):
    """``size`` examples: a caption of 2 to 5 words, a flat image of the caption's colour, a box each."""

    embedding_dim = None

    def __init__(self, options: BoxedOptions, ctx: DataContext) -> None:
        self.n, self.resolutions = options.size, ctx.resolutions
        self.fields = frozenset(options.fields)

    def __len__(self) -> int:
        return self.n

    def caption(self, i: int) -> str:
        return " ".join([COLOURS[i % 4], "shape"] + ["big"] * (i % 4))

    def __getitem__(self, i: int) -> dict[str, Any]:
        level = (i % 4) / 2 - 0.75
        item: dict[str, Any] = {"images": [torch.full((3, r, r), level) for r in self.resolutions],
                                "caption": self.caption(i), "class_id": i % 4, "index": i}
        if "box" in self.fields:
            item["box"] = torch.tensor(example_box(i))
        return item

    def captions(self) -> list[str]:
        return [self.caption(i) for i in range(self.n)]

    def sample_captions(self, k: int) -> list[str]:
        return self.captions()[:k]


@attrs.define
class StageOptions:
    out_size: int = 8
    requests: list[str] = attrs.Factory(lambda: ["box"])


class FieldStage(nn.Module):
    """A first stage: z, the condition and (flattened) requested fields to a small image."""

    feature_channels = 4

    def __init__(self, options: StageOptions, ctx: StageContext) -> None:
        super().__init__()
        self.out_size = options.out_size
        self.requests = frozenset(options.requests)
        extra = 4 if "box" in self.requests else 0
        extra += ctx.word_dim if "words" in self.requests else 0
        self.net = nn.Linear(ctx.noise_dim + int(ctx.cond_dim) + extra, 4 * options.out_size ** 2)
        self.to_rgb = nn.Conv2d(4, 3, 1)

    def example_fields(self, batch_size: int) -> dict[str, Tensor]:
        return {"box": torch.tensor([[0.25, 0.25, 0.75, 0.75]]).repeat(batch_size, 1)}

    def forward(self, z: Tensor | None, condition: Condition, prev: StageOutput | None, *,
                fields: dict[str, Tensor]) -> StageOutput:
        record("generator", {k: v.detach().cpu().clone() for k, v in fields.items()})
        parts = [z, condition.c]
        if "box" in fields:
            parts.append(fields["box"])
        if "words" in fields:  # mean over the real words
            mask = fields["word_mask"].unsqueeze(-1).float()
            parts.append((fields["words"] * mask).sum(1) / mask.sum(1).clamp(min=1))
        h = self.net(torch.cat(parts, 1)).view(-1, 4, self.out_size, self.out_size)
        return StageOutput(torch.tanh(self.to_rgb(F.relu(h))), h)


@attrs.define
class DOptions:
    pass


class BoxDiscriminator(nn.Module):
    """Image features, paired with the condition and the box."""

    requests = frozenset({"box"})

    def __init__(self, options: DOptions, ctx: StageContext) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 + int(ctx.cond_dim) + 4, 1)
        self.uncond = nn.Linear(4, 1)

    def example_fields(self, batch_size: int) -> dict[str, Tensor]:
        return {"box": torch.tensor([[0.25, 0.25, 0.75, 0.75]]).repeat(batch_size, 1)}

    def features(self, image: Tensor) -> Tensor:
        return F.leaky_relu(self.conv(image), 0.2).mean((2, 3))

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor, *,
                    fields: dict[str, Tensor]) -> Tensor:
        record("cond_logits", fields["box"].detach().cpu().clone())
        return self.head(torch.cat([features, condition.mu, fields["box"]], 1)).reshape(-1)

    def uncond_logits(self, features: Tensor, *, fields: dict[str, Tensor]) -> Tensor | None:
        record("uncond_logits", fields["box"].detach().cpu().clone())
        return self.uncond(features).reshape(-1)


@attrs.define
class WordsOptions:
    dim: int = 8
    word_dim: int = 4


class WordsEncoder(nn.Module):
    """Words hashed into a small table: word features, their mask, and their mean as the sentence."""

    trainable = True
    can_encode_text = True

    def __init__(self, options: WordsOptions, ctx: Any) -> None:
        super().__init__()
        self.dim, self.word_dim = options.dim, options.word_dim
        self.table = nn.Embedding(32, options.word_dim)
        self.out = nn.Linear(options.word_dim, options.dim)

    def prepare(self, dataset: Any) -> None:
        pass

    def encode_text(self, texts: list[str]) -> TextFeatures:
        record("encoder_captions", list(texts))
        tokens = [[sum(map(ord, w)) % 32 for w in t.split()] for t in texts]
        length = max(len(t) for t in tokens)
        ids = torch.tensor([t + [0] * (length - len(t)) for t in tokens], device=self.table.weight.device)
        mask = torch.tensor([[True] * len(t) + [False] * (length - len(t)) for t in tokens], device=ids.device)
        words = self.table(ids)
        sentence = self.out((words * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))
        return TextFeatures(sentence, words, mask)

    def forward(self, batch: dict[str, Any]) -> TextFeatures:
        return self.encode_text(batch["caption"])


@attrs.define
class ProbeOptions:
    pass


class GenerateProbe(nn.Module):
    """A loss that draws images from the midpoint of each embedding and the next (an INT-like term)."""

    def __init__(self, options: ProbeOptions, ctx: Any) -> None:
        super().__init__()

    def d_terms(self, step: Any) -> dict[str, Tensor]:
        record("probe_d_generate", step.generate)
        return {}

    def g_terms(self, step: Any) -> dict[str, Tensor]:
        mixed = 0.5 * step.text + 0.5 * step.text.roll(1, dims=0)
        condition, out = step.generate(mixed)
        record("probe", {"requires_grad": out.image.requires_grad, "shape": tuple(out.image.shape),
                         "fields": {k: v.detach().cpu().clone() for k, v in step.fields.items()},
                         "mu": condition.mu.detach().cpu().clone()})
        return {"g_probe": out.image.pow(2).mean()}


class FieldsPlugin:
    @hookimpl
    def register_components(self, register) -> None:  # noqa: ANN001
        register("dataset", "test-boxed", Boxed, options=BoxedOptions, summary="test data with a box each")
        register("generator_stage", "test-field-stage", FieldStage, options=StageOptions, summary="reads fields")
        register("discriminator", "test-box-d", BoxDiscriminator, options=DOptions, summary="reads the box")
        register("text_encoder", "test-words", WordsEncoder, options=WordsOptions, summary="gives words")
        register("loss", "test-generate-probe", GenerateProbe, options=ProbeOptions, summary="StepState.generate")


RECIPE = """\
schema_version: 1
name: boxed
text_encoder: %(encoder)s
dataset: {type: test-boxed, size: 16}
noise_dim: 4
stages:
  - conditioner: {type: ca, condition_dim: 4}
    generator: {type: test-field-stage, out_size: 8, requests: %(requests)s}
    discriminator: {type: test-box-d}
    losses: [{type: matching-aware}, {type: kl}%(losses)s]
training: {epochs: 1, batch_size: 4, device: cpu, seed: 1}
output: {log_every: 1, sample_every: 1000, checkpoint_every: 2, sample_count: 2}
"""


def recipe(encoder: str = "{type: bow, dim: 8, max_vocab: 32}", requests: str = "[box]", probe: bool = False) -> str:
    return RECIPE % {"encoder": encoder, "requests": requests,
                     "losses": ", {type: test-generate-probe}" if probe else ""}
