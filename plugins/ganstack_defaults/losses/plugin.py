"""StackGAN's losses as plugins: matching-aware adversarial (BCE or hinge), KL, colour consistency; and
GAN-INT-CLS's INT term (``interpolation``)."""

from __future__ import annotations

from typing import NamedTuple

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v
from torch import Tensor, nn

from ganstack.errors import RecipeError
from ganstack.hookspecs import hookimpl
from ganstack.interfaces import WORD_FIELDS, Condition, LossContext, StepState
from ganstack_defaults.losses.interpolation import InterpolationLoss, InterpolationOptions
from ganstack_defaults.losses.stackgan_v2 import StackGANv2Loss, V2LossOptions


class _Logits(NamedTuple):
    real: Tensor
    wrong: Tensor
    fake: Tensor
    real_uncond: Tensor | None
    fake_uncond: Tensor | None


def _shifted(condition: Condition) -> Condition:
    """The batch's conditions rolled by one: image i meets the condition of example i-1 (B pairs, the
    first image meets the last text)."""
    return Condition(*(t.roll(1, dims=0) if t is not None else None for t in condition))


def _from_second(condition: Condition) -> Condition:
    """The conditions of examples 1..B-1, for images 0..B-2 (the PyTorch port's B-1 wrong pairs)."""
    return Condition(*(t[1:] if t is not None else None for t in condition))


def _own_fields_need_real(instance: AdversarialOptions, attribute: attrs.Attribute, value: str) -> None:
    if value == "image" and instance.wrong == "class":
        raise ValueError("'wrong_fields: image' keeps the real image's own fields, but with 'wrong: class' the "
                         "mismatched image is another example's, whose fields are not loaded; use wrong: shift "
                         "or port, or wrong_fields: text")


@attrs.define(frozen=True)
class AdversarialOptions:
    """Options of the matching-aware adversarial losses.

    ``wrong``: how the mismatched pair is made: ``port`` scores images 0..B-2 with the texts of
    examples 1..B-1, B-1 pairs (the official PyTorch port exactly; D's conditional head then sees
    B-1 rows, so its BatchNorm statistics are the port's too); ``shift`` pairs every image with the
    previous example's text, B pairs, the first image with the last text; ``class`` uses a real
    image of another class (TF, StackGAN-v2);
    ``uncond_weight``: weight of the unconditional terms where the discriminator has that head (0: off);
    ``wrong_fields``: the conditioning fields (box, keypoints) of a ``shift`` or ``port`` mismatched
    pair: ``text``, those of the example whose text it is (the whole condition is another
    example's), or ``image``, the image's own, so that only the text is wrong (GAWWN: a real
    image with its own box or keypoints and another caption);
    ``fields_pair``: weight of a fourth pair, for a discriminator that requests fields: the real image
    with its own text and the previous example's fields, scored as mismatched (``d_wrong_fields``), so
    that D learns to check where as well as what; rows whose fields moved by less than 1/16 of the
    side are left out, being no mismatch (0: off, as the papers)
    """

    wrong: str = attrs.field(default="shift", validator=v.in_(["shift", "port", "class"]))
    uncond_weight: float = attrs.field(default=1.0, validator=v.ge(0))
    wrong_fields: str = attrs.field(default="text", validator=[v.in_(["text", "image"]), _own_fields_need_real])
    fields_pair: float = attrs.field(default=0.0, validator=v.ge(0))


FIELD_MOVE = 1 / 16  # a field pair must move some value by a cell of GAWWN's 16x16 grid to count as wrong


def moved_rows(own: dict[str, Tensor], other: dict[str, Tensor]) -> Tensor:
    """``[B]`` bool: the rows where some field of ``other`` differs from ``own`` by at least
    :data:`FIELD_MOVE` (fractions of the side; any change of an integer field). Two shapes in the same
    place have boxes a jitter apart: scoring such a pair as mismatched would teach D a wrong label."""
    moved = None
    for name, mine in own.items():
        delta = (other[name] - mine).abs().flatten(1)
        far = (delta >= FIELD_MOVE if mine.is_floating_point() else delta > 0).any(dim=1)
        moved = far if moved is None else moved | far
    if moved is None:
        raise ValueError("moved_rows needs at least one field")
    return moved


class MatchingAwareLoss(nn.Module):
    """Matching-aware loss: D tells (real, right text) from (real, wrong text) and (fake, right text).

    With an unconditional head (and ``uncond_weight > 0``) the PyTorch port's weighting is used:
    ``L_D = (real_c + w real_u)/2 + (fake_c + wrong_c + w fake_u)/3``; without it,
    ``L_D = real + (wrong + fake)/2``, which with ``wrong: class`` is also GAN-INT-CLS's CLS weighting
    (``cls_weight`` 0.5: real/right + 0.5 real/wrong + 0.5 fake/right). The generator's term is
    non-saturating.
    """

    def __init__(self, options: AdversarialOptions, ctx: LossContext) -> None:
        super().__init__()
        self.options = options
        # wrong: class pairs real images of another class, which the dataset loads only when asked
        self.requests = frozenset({"wrong_images"}) if options.wrong == "class" else frozenset()
        if options.fields_pair and not ctx.discriminator_fields - set(WORD_FIELDS):
            raise RecipeError("'fields_pair' pairs real images with other examples' fields (box, keypoints), but "
                              "this stage's discriminator reads none", path="fields_pair",
                              fix="set fields_pair: 0, or use a discriminator that reads them (gawwn-box, gawwn-keypoints)")

    def _wrong_fields_term(self, step: StepState) -> Tensor:
        """The real images with their own texts and the previous rows' fields, scored as mismatched
        (word features are the text's, so they stay the image's own)."""
        own = step.d_fields()["fields"]
        rolled = {n: t if n in WORD_FIELDS else t.roll(1, dims=0) for n, t in own.items()}
        placed = {n: t for n, t in own.items() if n not in WORD_FIELDS}
        moved = moved_rows(placed, {n: rolled[n] for n in placed})
        logits = step.discriminator.cond_logits(step.features("real"), step.condition, step.text, fields=rolled)
        if not bool(moved.any()):
            return logits.sum() * 0.0  # no pair in this batch is wrong: a zero that keeps the graph
        return self.options.fields_pair * self._fake_term(logits[moved])

    def _logits(self, step: StepState, *, with_wrong: bool) -> _Logits:
        """The logits of each pair, scored as the PyTorch port does: real, wrong, then fake (the order
        in which D's BatchNorm running statistics take in each batch)."""
        d = step.discriminator
        cond = step.condition
        real = wrong = real_u = None
        own = step.d_fields()  # {} for a discriminator that requests no fields (called as before)
        if with_wrong:
            real_f = step.features("real")
            real = d.cond_logits(real_f, cond, step.text, **own)
            if self.options.wrong == "class" and step.wrong_real is not None:
                wrong = d.cond_logits(step.features("wrong_real"), cond, step.text, **own)
            elif self.options.wrong == "port":
                rows = (lambda t: t[:-1]) if self.options.wrong_fields == "image" else (lambda t: t[1:])
                wrong = d.cond_logits(real_f[:-1], _from_second(cond), step.text[1:], **step.d_fields(rows))
            else:
                fields = own if self.options.wrong_fields == "image" else step.d_fields(lambda t: t.roll(1, dims=0))
                wrong = d.cond_logits(real_f, _shifted(cond), step.text.roll(1, dims=0), **fields)
        fake_f = step.features("fake")
        fake = d.cond_logits(fake_f, cond, step.text, **own)
        if with_wrong and self.options.uncond_weight:
            real_u = d.uncond_logits(step.features("real"), **own)
        fake_u = d.uncond_logits(fake_f, **own) if self.options.uncond_weight else None
        return _Logits(real, wrong, fake, real_u, fake_u)

    @staticmethod
    def _real_term(x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(x, torch.ones_like(x))

    @staticmethod
    def _fake_term(x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(x, torch.zeros_like(x))

    def d_terms(self, step: StepState) -> dict[str, Tensor]:
        lg = self._logits(step, with_wrong=True)
        if lg.real_uncond is None:
            terms = {"d_real": self._real_term(lg.real), "d_wrong": self._fake_term(lg.wrong) / 2,
                     "d_fake": self._fake_term(lg.fake) / 2}
        else:
            w = self.options.uncond_weight
            terms = {"d_real": self._real_term(lg.real) / 2,
                     "d_real_uncond": w * self._real_term(lg.real_uncond) / 2,
                     "d_wrong": self._fake_term(lg.wrong) / 3, "d_fake": self._fake_term(lg.fake) / 3,
                     "d_fake_uncond": w * self._fake_term(lg.fake_uncond) / 3}
        if self.options.fields_pair:
            terms["d_wrong_fields"] = self._wrong_fields_term(step)
        return terms

    def g_terms(self, step: StepState) -> dict[str, Tensor]:
        lg = self._logits(step, with_wrong=False)
        terms = {"g_fake": self._real_term(lg.fake)}
        if lg.fake_uncond is not None:
            terms["g_fake_uncond"] = self.options.uncond_weight * self._real_term(lg.fake_uncond)
        return terms


class HingeLoss(MatchingAwareLoss):
    """Matching-aware hinge loss: the three pairs of the matching-aware loss, hinge instead of BCE."""

    @staticmethod
    def _real_term(x: Tensor) -> Tensor:
        return F.relu(1 - x).mean()

    @staticmethod
    def _fake_term(x: Tensor) -> Tensor:
        return F.relu(1 + x).mean()

    def g_terms(self, step: StepState) -> dict[str, Tensor]:
        lg = self._logits(step, with_wrong=False)
        terms = {"g_fake": -lg.fake.mean()}
        if lg.fake_uncond is not None:
            terms["g_fake_uncond"] = -self.options.uncond_weight * lg.fake_uncond.mean()
        return terms


@attrs.define(frozen=True)
class KLOptions:
    """``coeff``: weight of the KL term (2.0 in every official config; the paper's text says 1)."""

    coeff: float = attrs.field(default=2.0, validator=v.ge(0))


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, var) || N(0, I)), averaged over batch and dimensions as the official code does."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


class KLLoss(nn.Module):
    """KL regulariser of Conditioning Augmentation: keeps the condition manifold smooth."""

    def __init__(self, options: KLOptions, ctx: LossContext) -> None:
        super().__init__()
        self.coeff = options.coeff

    def d_terms(self, step: StepState) -> dict[str, Tensor]:
        return {}

    def g_terms(self, step: StepState) -> dict[str, Tensor]:
        if step.condition.logvar is None:
            return {}
        return {"kl": self.coeff * kl_divergence(step.condition.mu, step.condition.logvar)}


@attrs.define(frozen=True)
class ColourOptions:
    """``mean_weight``: weight of the colour-mean term (1 in the paper); ``cov_weight``: weight of the
    colour-covariance term (5 in the paper; StackGAN-v2's bird configs use 0); ``detach_previous``:
    compare with the previous stage's statistics as constants (the official code), so the term
    moves only this stage's image"""

    mean_weight: float = attrs.field(default=1.0, validator=v.ge(0))
    cov_weight: float = attrs.field(default=5.0, validator=v.ge(0))
    detach_previous: bool = attrs.field(default=True, validator=v.instance_of(bool))


def colour_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image pixel colour mean ``[B, C]`` and covariance ``[B, C, C]``."""
    pixels = images.float().flatten(2)  # B, C, N
    mean = pixels.mean(dim=2)
    centred = pixels - mean.unsqueeze(2)
    cov = centred @ centred.transpose(1, 2) / pixels.shape[2]
    return mean, cov


class ColourConsistencyLoss(nn.Module):
    """StackGAN-v2's colour consistency between a stage's image and the previous stage's."""

    def __init__(self, options: ColourOptions, ctx: LossContext) -> None:
        super().__init__()
        self.options = options

    def d_terms(self, step: StepState) -> dict[str, Tensor]:
        return {}

    def g_terms(self, step: StepState) -> dict[str, Tensor]:
        if step.prev_fake is None:
            return {}
        mean, cov = colour_stats(step.fake)
        prev = step.prev_fake.detach() if self.options.detach_previous else step.prev_fake
        prev_mean, prev_cov = colour_stats(prev)
        return {"colour_mean": self.options.mean_weight * F.mse_loss(mean, prev_mean),
                "colour_cov": self.options.cov_weight * F.mse_loss(cov, prev_cov)}


@hookimpl
def register_components(register) -> None:  # noqa: ANN001 - the Register callback
    register("loss", "matching-aware", MatchingAwareLoss, options=AdversarialOptions,
             summary="StackGAN's matching-aware BCE loss: real/right, real/wrong, fake/right (+unconditional)")
    register("loss", "hinge", HingeLoss, options=AdversarialOptions,
             summary="Matching-aware hinge loss, an alternative to BCE")
    register("loss", "stackgan-v2", StackGANv2Loss, options=V2LossOptions,
             summary="StackGAN-v2's loss: the unweighted six-term D sum with class-mismatched real images, "
                     "conditional and unconditional G terms")
    register("loss", "kl", KLLoss, options=KLOptions,
             summary="KL regulariser of Conditioning Augmentation (coefficient 2.0 as the official code)")
    register("loss", "colour-consistency", ColourConsistencyLoss, options=ColourOptions,
             summary="StackGAN-v2 colour consistency (mean and covariance) with the previous stage")
    register("loss", "interpolation", InterpolationLoss, options=InterpolationOptions,
             summary="GAN-INT-CLS's INT term g_int: G images from interpolated caption embeddings, scored by D "
                     "with that text")
