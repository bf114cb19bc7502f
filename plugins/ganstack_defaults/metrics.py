"""The default ``metric`` plugins: Inception Score, FID and the shapes attribute alignment."""

from __future__ import annotations

from ganstack.hookspecs import hookimpl
from ganstack.interfaces import MetricContext
from ganstack.registry import Register

from .metric_inception_scores import FidOptions, FrechetInceptionDistance, InceptionScore, InceptionScoreOptions


def build_inception_score(options: InceptionScoreOptions, ctx: MetricContext) -> InceptionScore:
    """Inception Score of generated images, judged by the Inception-v3 weights you point to."""
    return InceptionScore(options, ctx.device)


def build_fid(options: FidOptions, ctx: MetricContext) -> FrechetInceptionDistance:
    """FID between generated and real images of a split (reference statistics cached on disk)."""
    return FrechetInceptionDistance(options, ctx.device)


@hookimpl
def register_components(register: Register) -> None:
    register("metric", "inception-score", build_inception_score, options=InceptionScoreOptions)
    register("metric", "fid", build_fid, options=FidOptions)
