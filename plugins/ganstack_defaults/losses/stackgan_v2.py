"""StackGAN-v2's adversarial loss, as its official trainer computes it, registered as ``stackgan-v2``.

Per branch, D minimises the *unweighted* sum of six binary cross-entropies: conditional real/right
(label 1), wrong/right (0) and fake/right (0), and with weight ``uncond_weight`` the unconditional
real (1), wrong (1: a wrong image is still a real image) and fake (0). The wrong image is a real
image of another class, which this loss asks the trainer for (``requests``). G's terms are the
conditional and weighted unconditional non-saturating ones, scored with the condition as G made
it, so the CA mean keeps its gradient through D's conditional head. The KL term (``kl``, once, on
the stage that owns the shared conditioner) and colour consistency (``colour-consistency``) are
losses of their own.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from torch import Tensor, nn

from ganstack.errors import UserError
from ganstack.interfaces import Condition, LossContext, StepState


@attrs.define(frozen=True)
class V2LossOptions:
    """Options of the ``stackgan-v2`` loss.

    ``uncond_weight``: weight of the unconditional terms (TRAIN.COEFF.UNCOND_LOSS, 1.0; 0 leaves them out)
    """

    uncond_weight: float = attrs.field(default=1.0, validator=v.ge(0))


def _bce(logits: Tensor, label: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def _detached(condition: Condition) -> Condition:
    return Condition(*(t.detach() if t is not None else None for t in condition))


class StackGANv2Loss(nn.Module):
    """StackGAN-v2's per-branch D and G terms (BCE on logits: the official sigmoid + BCELoss)."""

    requests = frozenset({"wrong_images"})

    def __init__(self, options: V2LossOptions, ctx: LossContext) -> None:
        super().__init__()
        self.uncond_weight = options.uncond_weight
        self.stage = ctx.index

    def d_terms(self, step: StepState) -> dict[str, Tensor]:
        if step.wrong_real is None:
            raise UserError(f"the stackgan-v2 loss of stage {self.stage + 1} scores a real image of another "
                            f"class, but the batch has none", path=f"stages[{self.stage}].losses",
                            fix="set training.wrong_images: true, or use a dataset with class labels")
        d = step.discriminator
        cond = _detached(step.condition)  # D's phase never trains the conditioner
        real_f, wrong_f, fake_f = step.features("real"), step.features("wrong_real"), step.features("fake")
        own = step.d_fields()  # {} for a discriminator that requests no fields
        terms = {"d_real": _bce(d.cond_logits(real_f, cond, step.text, **own), 1.0),
                 "d_wrong": _bce(d.cond_logits(wrong_f, cond, step.text, **own), 0.0),
                 "d_fake": _bce(d.cond_logits(fake_f, cond, step.text, **own), 0.0)}
        w = self.uncond_weight
        if w > 0:
            terms |= {"d_real_uncond": w * _bce(d.uncond_logits(real_f, **own), 1.0),
                      "d_wrong_uncond": w * _bce(d.uncond_logits(wrong_f, **own), 1.0),
                      "d_fake_uncond": w * _bce(d.uncond_logits(fake_f, **own), 0.0)}
        return terms

    def g_terms(self, step: StepState) -> dict[str, Tensor]:
        d = step.discriminator
        fake_f = step.features("fake")
        own = step.d_fields()
        terms = {"g_fake": _bce(d.cond_logits(fake_f, step.condition, step.text, **own), 1.0)}
        if self.uncond_weight > 0:
            terms["g_fake_uncond"] = self.uncond_weight * _bce(d.uncond_logits(fake_f, **own), 1.0)
        return terms
