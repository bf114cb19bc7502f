"""GAN-INT-CLS's INT term: generator samples drawn from interpolations of two captions' embeddings.

Reed et al. (2016) add to each generator step ``batch/2`` images drawn from ``beta * t1 + (1 - beta)
* t2`` (``beta`` 0.5), where ``t1`` and ``t2`` are the embeddings of two examples of the batch, and
score them with D given that interpolated embedding: the generator learns to fill the gaps between
captions. There are no real images for those texts, so D never trains on them (no D term).

Weighting as Reed's ``main_cls_int.lua``: its G loss is the mean BCE over ``B`` fake/right samples and
``B/2`` interpolated ones, each interpolated sample weighted ``weight``. Relative to the mean over
the ``B`` fake/right samples (ganstack's ``g_fake``) that is ``weight * (n / B) * mean`` over the
``n`` interpolated ones: ``g_int`` here. (Reed's total is that sum times ``B / (B + n)``, a constant
2/3 that Adam's updates do not see, apart from its epsilon.)

The images come from ``StepState.generate`` (the stack's chain on another text, fresh noise,
gradients); conditioning fields a component requested (a box) are those of each pair's first
example, for the generator and for D alike.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from torch import Tensor, nn

from ganstack.interfaces import LossContext, StepState


@attrs.define(frozen=True)
class InterpolationOptions:
    """Options of the ``interpolation`` loss (GAN-INT-CLS's INT term).

    ``beta``: the interpolated embedding is ``beta * t_i + (1 - beta) * t_j`` (0.5 in the paper);
    ``weight``: what one interpolated sample weighs against one fake/right sample of the generator's
    adversarial term (Reed's ``interp_weight``, 1.0); ``fraction``: interpolated samples per step, as
    a fraction of the batch (0.5 in Reed's code; at least 2, for the BatchNorm of D's text path);
    example ``i`` is paired with example ``(i + B // 2) mod B``, Reed's first half with the second
    """

    beta: float = attrs.field(default=0.5, validator=[v.ge(0), v.le(1)])
    weight: float = attrs.field(default=1.0, validator=v.ge(0))
    fraction: float = attrs.field(default=0.5, validator=[v.gt(0), v.le(1)])


def interpolation_count(batch: int, fraction: float) -> int:
    """How many interpolated samples a batch of ``batch`` gives: ``round(fraction * batch)``, at least 2
    (BatchNorm needs two rows to take batch statistics), at most ``batch``."""
    return min(batch, max(2, round(fraction * batch)))


def interpolate_pairs(text: Tensor, count: int, beta: float) -> Tensor:
    """``beta * text[i] + (1 - beta) * text[(i + B // 2) % B]`` for ``i < count``."""
    b = text.shape[0]
    partner = (torch.arange(count, device=text.device) + b // 2) % b
    return beta * text[:count] + (1 - beta) * text[partner]


class InterpolationLoss(nn.Module):
    """The INT term ``g_int``: images drawn from interpolated embeddings, judged real by D given that text."""

    def __init__(self, options: InterpolationOptions, ctx: LossContext) -> None:
        super().__init__()
        self.options = options

    def d_terms(self, step: StepState) -> dict[str, Tensor]:
        return {}  # D never sees an interpolated text: there is no real image for it

    def g_terms(self, step: StepState) -> dict[str, Tensor]:
        o = self.options
        if o.weight == 0:
            return {}
        b = step.text.shape[0]
        n = interpolation_count(b, o.fraction)
        text = interpolate_pairs(step.text, n, o.beta)
        first = lambda t: t[:n]  # noqa: E731 - conditioning fields (a box): each pair's first example's
        condition, out = step.generate(text, {name: first(value) for name, value in step.fields.items()})
        d = step.discriminator
        logits = d.cond_logits(d.features(out.image), condition, text, **step.d_fields(first))
        bce = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="sum")
        return {"g_int": o.weight * bce / b}
