"""The default ``metric`` plugins: Inception Score, FID, shapes attribute alignment, shapes box placement,
R-precision;
and the ``stackgan-inception`` importer of StackGAN's CUB Inception model for the Inception Score.

Each metric evaluates the last stage's images unless its ``stage`` option (1-based) names another.
"""

from __future__ import annotations

from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack.interfaces import MetricContext
from ganstack_defaults.metrics.inception_scores import (
    FidOptions,
    FrechetInceptionDistance,
    InceptionScore,
    InceptionScoreOptions,
)
from ganstack_defaults.metrics.retrieval import RPrecision, RPrecisionOptions
from ganstack_defaults.metrics.stackgan_inception_import import (
    StackGANInceptionOptions,
    import_stackgan_inception,
)
from ganstack_defaults.shapes.alignment import ShapesAlignment, ShapesAlignmentOptions
from ganstack_defaults.shapes.box_alignment import ShapesBoxAlignment, ShapesBoxOptions


def build_inception_score(options: InceptionScoreOptions, ctx: MetricContext) -> InceptionScore:
    """Inception Score of generated images, judged by the Inception-v3 weights you point to."""
    return InceptionScore(options, ctx.device, recipe_dir=ctx.recipe_dir)


def build_fid(options: FidOptions, ctx: MetricContext) -> FrechetInceptionDistance:
    """FID between generated and real images of a split (reference statistics cached on disk)."""
    return FrechetInceptionDistance(options, ctx.device, recipe_dir=ctx.recipe_dir)


def build_shapes_alignment(options: ShapesAlignmentOptions, ctx: MetricContext) -> ShapesAlignment:
    """Shapes dataset: per-attribute accuracy of generated images against their captions."""
    return ShapesAlignment(options, ctx.device)


def build_shapes_box(options: ShapesBoxOptions, ctx: MetricContext) -> ShapesBoxAlignment:
    """Shapes dataset, box-conditioned stacks: is the shape drawn inside the given box?"""
    return ShapesBoxAlignment(options, ctx.device)


def build_r_precision(options: RPrecisionOptions, ctx: MetricContext) -> RPrecision:
    """R-precision: does each generated image rank its own caption first among 100?"""
    return RPrecision(options, ctx)


@hookimpl
def register_components(register: Register) -> None:
    register("metric", "inception-score", build_inception_score, options=InceptionScoreOptions)
    register("metric", "fid", build_fid, options=FidOptions)
    register("metric", "shapes-alignment", build_shapes_alignment, options=ShapesAlignmentOptions)
    register("metric", "shapes-box", build_shapes_box, options=ShapesBoxOptions)
    register("metric", "r-precision", build_r_precision, options=RPrecisionOptions)
    register("importer", "stackgan-inception", import_stackgan_inception, options=StackGANInceptionOptions)
