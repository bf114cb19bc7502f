"""Evaluation protocols: the literature's IS and FID settings as named presets of ``ganstack eval``.

A protocol fixes, per metric, the options that make a score comparable with published ones (the
judging network, the split, which captions, the number of splits) and the number of images.
``ganstack eval RUN --protocol cub`` applies them; the weights files stay the user's to give,
as nothing is downloaded. The metric names and options are those of the default ``metrics``
plugin (docs/metrics.md explains each choice); the core only passes them on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs


@attrs.frozen
class EvaluationProtocol:
    """One preset: the options each metric is run with, and how many images each scores (``n``)."""

    name: str
    summary: str
    n: Mapping[str, int]
    metrics: Mapping[str, Mapping[str, Any]]
    weights: Mapping[str, str]  # per metric: the file its `weights` option wants

    def settings(self) -> dict[str, Any]:
        """What eval.json records: the protocol and everything it fixed."""
        return {"name": self.name, "n": dict(self.n), "metrics": {m: dict(o) for m, o in self.metrics.items()}}


PYTORCH_FID_FILE = "pytorch-fid's pt_inception-2015-12-05-6726825d.pth"

PROTOCOLS: dict[str, EvaluationProtocol] = {
    "cub": EvaluationProtocol(
        "cub", "CUB: IS with StackGAN's fine-tuned Inception on 10 images per test image's caption (29,330), "
        "FID with pytorch-fid's on 30,000 from every test caption", n={"inception-score": 29_330, "fid": 30_000},
        metrics={
            "inception-score": {"network": "stackgan-inception", "splits": 10, "num_classes": 50,
                                "split": "test", "captions": "single", "stage": None},
            "fid": {"network": "pytorch-fid", "split": "test", "captions": "all", "stage": None},
        },
        weights={"inception-score": "the state dict `ganstack import stackgan-inception` writes from "
                                    "StackGAN's inception_finetuned_models/birds_valid299/model.ckpt",
                 "fid": PYTORCH_FID_FILE}),
    "coco": EvaluationProtocol(
        "coco", "COCO: IS and FID with pytorch-fid's ImageNet Inception, 30,000 images from the test "
        "captions", n={"inception-score": 30_000, "fid": 30_000},
        metrics={
            "inception-score": {"network": "pytorch-fid", "splits": 10, "num_classes": 1008, "split": "test",
                                "captions": "all", "stage": None},
            "fid": {"network": "pytorch-fid", "split": "test", "captions": "all", "stage": None},
        },
        weights={"inception-score": PYTORCH_FID_FILE, "fid": PYTORCH_FID_FILE}),
}
