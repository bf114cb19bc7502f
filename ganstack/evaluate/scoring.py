"""Scoring a trained stack with ``metric`` plugins: during training, and by ``ganstack eval``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from ganstack.components.registry import Registry
from ganstack.errors import PluginError, UserError
from ganstack.interfaces import CaptionDataset, MetricContext, PreparedMetric
from ganstack.recipe.resolve import CONVERTER, ResolvedRecipe, place_of, structure
from ganstack.recipe.schema import Component
from ganstack.sample.draw import TextToImage


class _RecordingDataset:
    """A dataset view that remembers each caption's stored embedding, for encoders that cannot read text."""

    def __init__(self, dataset: CaptionDataset, seen: dict[str, Tensor]) -> None:
        self._dataset = dataset
        self._seen = seen

    def __len__(self) -> int:
        return len(self._dataset)

    def _record(self, item: dict[str, Any]) -> dict[str, Any]:
        if "embedding" in item:
            self._seen[item["caption"]] = torch.as_tensor(item["embedding"])
        return item

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._record(self._dataset[i])

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._dataset, name)
        if name == "caption_item":  # interfaces.EveryCaption: record those embeddings too
            return lambda i, caption: self._record(value(i, caption))
        return value


class StackSource:
    """:class:`ganstack.interfaces.ImageSource` over a trained stack and its recipe's dataset."""

    def __init__(self, model: TextToImage, resolved: ResolvedRecipe) -> None:
        self.model = model
        self.resolved = resolved
        self._datasets: dict[str, Any] = {}
        self._embeddings: dict[str, Tensor] = {}

    def dataset(self, split: str) -> Any:
        if split not in self._datasets:
            from ganstack.build.dataset import build_dataset

            dataset = build_dataset(self.resolved, split, self.model.resolutions)
            if not self._reads_text():
                dataset = _RecordingDataset(dataset, self._embeddings)
            self._datasets[split] = dataset
        return self._datasets[split]

    def _reads_text(self) -> bool:
        return bool(self.model.stack.text_encoder.can_encode_text)

    def generate(self, captions: Sequence[str], seed: int = 0,
                 fields: dict[str, Tensor] | None = None) -> list[Tensor]:
        if fields is None and self.model.needed_fields():
            name = sorted(self.model.needed_fields())[0]
            raise UserError(f"a metric asked for images without the conditioning field '{name}', which this run's "
                            "stack needs for every caption", path="evaluation.metrics",
                            fix=f"use a metric that draws its captions from dataset examples and passes their "
                            f"fields (ImageSource.generate(captions, seed, fields={{'{name}': ...}}))")
        if self._reads_text():
            return self.model.generate(list(captions), n=1, seed=seed, fields=fields).images
        missing = [c for c in captions if c not in self._embeddings]
        if missing:
            raise UserError(f"the text encoder cannot read new sentences, and '{missing[0]}' is not a caption "
                            "of the dataset", fix="evaluate on the dataset's own captions")
        emb = torch.stack([self._embeddings[c] for c in captions])
        return self.model.generate(list(captions), n=1, seed=seed, embeddings=emb.numpy(), fields=fields).images


def build_metric(component: Component, *, device: str, path: str, file: str | None = None,
                 overrides: dict[str, Any] | None = None, recipe_dir: Path | None = None,
                 registry: Registry | None = None) -> Any:
    """Build one metric from ``{type: NAME, ...options}``; ``overrides`` set the options it has.

    ``registry``: where the metric is looked up, and what its context offers it (default: the loaded
    plugins'; pass the resolved recipe's, ``resolved.registry``)."""
    if registry is None:
        from ganstack.components.loader import load_plugins

        registry = load_plugins().registry
    try:
        entry = registry.get("metric", component.written, where=": ".join(p for p in (file, f"{path}.type") if p))
    except PluginError as exc:
        raise PluginError(exc.message, file=file, path=f"{path}.type", fix=exc.fix) from None
    data = CONVERTER.unstructure(component.options) if attrs.has(type(component.options)) else dict(
        component.options)
    known = {f.name for f in attrs.fields(entry.options)}
    data.update({k: v for k, v in (overrides or {}).items() if k in known})
    options = structure(data, entry.options, file=file, path=path)
    try:
        return entry.factory(options, MetricContext(device=device, recipe_dir=recipe_dir, registry=registry,
                                                    converter=CONVERTER))
    except UserError as exc:
        raise type(exc)(exc.message, file=exc.file or file, path=place_of(path, exc.path), fix=exc.fix) from None


def prepare_metrics(metrics: Sequence[tuple[str, Any]]) -> None:
    """Let each metric load what it needs first (:class:`PreparedMetric`): a wrong weights file then
    stops the evaluation before hours of generating for the metrics before it."""
    for name, metric in metrics:
        if isinstance(metric, PreparedMetric):
            try:
                metric.prepare()
            except UserError as exc:
                raise type(exc)(exc.message, file=exc.file, path=f"{name}.{exc.path}" if exc.path else name,
                                fix=exc.fix) from None


def evaluate(model: TextToImage, resolved: ResolvedRecipe, metrics: Sequence[tuple[str, Any]],
             n: int) -> dict[str, float | str]:
    """Run each ``(name, metric)`` on ``n`` images; values are keyed ``name/value``."""
    prepare_metrics(metrics)
    source = StackSource(model, resolved)
    results: dict[str, float | str] = {}
    was_training = model.stack.training
    model.stack.eval()
    try:
        for name, metric in metrics:
            for key, value in metric.evaluate(source, n).items():
                results[f"{name}/{key}"] = value
    finally:
        model.stack.train(was_training)
    return results


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return True
    return value > best if mode == "max" else value < best
