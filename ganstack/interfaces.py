"""What each kind of component receives when built, and what it must offer once built.

A factory is called as ``factory(options, ctx)``: ``options`` is an instance of the attrs class
the plugin registered (recipe keys, defaults filled in), ``ctx`` is one of the context classes
below, filled in by the parent (the stack), so a plugin never hard-codes another plugin's sizes.

Rule for every module: its parameter shapes depend only on ``options`` and ``ctx``, never on
data, so a checkpoint loads into a freshly built stack. State learnt from data (a vocabulary)
travels in the state dict (``get_extra_state``/``set_extra_state``) as tensors, strings, numbers,
lists and dicts only, which ``torch.load(weights_only=True)`` accepts.

Images are float tensors ``[B, C, H, W]`` in ``[-1, 1]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import cattrs
    import torch
    from torch import Tensor, nn

    from ganstack.components.registry import Registry


# ------------------------------------------------------------------------------ declared requests
REQUESTS = frozenset({"wrong_images", "words", "class_id"})
"""What a component may ask the core for beyond the default batch, by declaring
``requests: frozenset[str]`` (an attribute; absent means none). Besides these names, any
conditioning field the recipe's dataset declares (:data:`FIELDS`, ``CaptionDataset.fields``):

- ``wrong_images``: a real image of another class per example (``batch["wrong_images"]``, the
  dataset's ``ctx.want_wrong``), for a mismatched pair of real images;
- ``words``: the text encoder's word features (:class:`TextFeatures`): the component finds
  ``fields["words"]`` ``[B, L, word_dim]`` and ``fields["word_mask"]`` ``[B, L]`` bool; its factory
  reads the size from ``StageContext.word_dim`` (0 when the encoder has none, which the core refuses);
- ``class_id``: ``[B]`` long, every dataset's (``-1`` where unknown);
- a dataset field (``box``, ``keypoints``, a plugin dataset's own).

A component that requests anything but ``wrong_images`` is called with a keyword argument
``fields: dict[str, Tensor]`` holding exactly what it requested (conditioner ``forward``, generator
stage ``forward``, discriminator ``cond_logits``/``uncond_logits``); one that requests nothing is
called as before.
"""

WORD_FIELDS = ("words", "word_mask")
"""What the ``words`` request delivers into ``fields``."""

BOX = "box"
KEYPOINTS = "keypoints"
LOCATION_FIELDS = (BOX, KEYPOINTS)
"""The fields that say where in the picture (drawn on sample sheets and previews, given by flags)."""

FIELDS = {
    BOX: "float [B, 4]: (x0, y0, x1, y1), fractions of the image side, origin top left, after the "
         "dataset's crop, resize and flip (one box serves every stage's resolution)",
    KEYPOINTS: "float [B, K, 3]: (x, y, visible) per part, x/y fractions as for box; an invisible part "
               "(or one cropped out) has visible = 0 and x = y = 0 (CUB: K = 15, its parts.txt order)",
    "class_id": "long [B]: the example's class (-1 unknown)",
}
"""The conditioning fields ganstack knows by name (a plugin's dataset may add its own, any name,
one tensor per example, batched along a first dimension)."""


SAVED_BEFORE = "saved_before"
"""Key of a plugin option field's attrs metadata: the value a run saved before the option existed
meant, where that differs from the default (``metadata={"saved_before": "cut"}``). A checkpoint's
recipe lists every option its plugins had then; one it lacks is read as this value, so a run saved
earlier resumes and samples as it was trained, while new recipes get the default."""


def requests_of(component: object) -> frozenset[str]:
    """The requests a built component declares (none where it declares no ``requests``)."""
    return frozenset(getattr(component, "requests", frozenset()))


def field_requests(component: object) -> frozenset[str]:
    """What a component's ``fields`` argument holds (``words`` gives ``words`` and ``word_mask``);
    empty for a component called without ``fields``."""
    asked = requests_of(component) - {"wrong_images"}
    return frozenset(n for n in asked if n != "words") | (frozenset(WORD_FIELDS) if "words" in asked else frozenset())


def fields_of(dataset: object) -> frozenset[str]:
    """The conditioning fields a dataset declares (``fields``; absent means none)."""
    return frozenset(getattr(dataset, "fields", frozenset()))


def missing_field_reason(dataset: object, field: str) -> str | None:
    """Why the dataset does not give ``field`` here (its ``missing_fields``), where it says."""
    return dict(getattr(dataset, "missing_fields", {}) or {}).get(field)


# --------------------------------------------------------------------------- values passed around
class Condition(NamedTuple):
    """A conditioner's output: the sample fed to the generator, its mean and log-variance."""

    c: Tensor
    mu: Tensor
    logvar: Tensor | None


class TextFeatures(NamedTuple):
    """What a text encoder may return instead of a ``[B, dim]`` tensor: the sentence vector
    ``[B, dim]``, word features ``[B, L, word_dim]`` and their mask ``[B, L]`` (bool, True = a real
    word). An encoder that returns words declares ``word_dim: int``."""

    sentence: Tensor
    words: Tensor | None = None
    mask: Tensor | None = None


def as_text_features(out: Tensor | TextFeatures) -> TextFeatures:
    """A text encoder's output in one form: a plain tensor becomes a sentence without words."""
    if isinstance(out, TextFeatures):
        return out
    if isinstance(out, tuple) and len(out) == 3:  # a plugin's own namedtuple of the same fields
        return TextFeatures(*out)
    return TextFeatures(out)


def word_dim_of(encoder: object) -> int:
    """The word-feature size a text encoder declares (0: it gives no words)."""
    return int(getattr(encoder, "word_dim", 0) or 0)


class StageOutput(NamedTuple):
    """A generator stage's output: the image and the features the next stage may refine."""

    image: Tensor
    features: Tensor | None


# --------------------------------------------------------------------------------- build contexts
@attrs.frozen
class TextEncoderContext:
    """Given to a ``text_encoder`` factory. ``recipe_dir``: where relative paths in its options (a
    weights file) point first, then the working folder (``ganstack.recipe.paths.resolve_recipe_path``)."""

    device: str = "cpu"
    recipe_dir: Path | None = None


@attrs.frozen
class StageContext:
    """Given to ``conditioner``, ``generator_stage`` and ``discriminator`` factories.

    Fields are filled in build order: conditioner first (knows ``text_dim``), then the generator
    (``cond_dim`` known), then the discriminator (``image_size`` known).
    """

    index: int  # 0-based position of the stage in the stack
    num_stages: int
    text_dim: int  # the text encoder's output size
    noise_dim: int  # size of z, used by the first stage only
    image_channels: int = 3
    cond_dim: int | None = None  # the conditioner's output size
    in_size: int | None = None  # previous stage's image size (None for the first stage)
    in_feature_channels: int | None = None  # channels of the previous stage's features
    image_size: int | None = None  # this stage's output size (for the discriminator)
    word_dim: int = 0  # the text encoder's word-feature size (0: it gives no words; see REQUESTS)


@attrs.frozen
class LossContext:
    """Given to a ``loss`` factory. ``key_path`` is the loss's place in the recipe
    (``stages[1].losses[2]``): a loss that raises a ``UserError`` while training, where the core
    cannot tell which loss spoke, names its place with it (``path=f"{ctx.key_path}.margin"``).
    ``discriminator_fields``: what the stage's discriminator gets as ``fields``
    (:func:`field_requests`), so a loss that needs some can refuse a stage without them when built."""

    index: int
    num_stages: int
    key_path: str | None = None
    discriminator_fields: frozenset[str] = frozenset()


@attrs.frozen
class DataContext:
    """Given to a ``dataset`` factory.

    ``resolutions`` holds each stage's image size; ``want_wrong`` asks for a mismatched real
    image of another class per sample (``wrong_images``); ``cache_dir`` is where decoded data may
    be cached between runs.
    """

    split: str
    resolutions: tuple[int, ...]
    cache_dir: Path
    seed: int = 0
    want_wrong: bool = False
    recipe_dir: Path | None = None  # relative data paths in a recipe resolve against this


@attrs.frozen
class MetricContext:
    """Given to a ``metric`` factory.

    ``recipe_dir``: where relative paths in its options point first (then the working folder; resolve
    them with ``ganstack.recipe.paths.resolve_recipe_path``). ``registry``: every loaded component, for
    a metric that builds one (``registry.get("text_encoder", name)`` gives its factory and options
    class); ``converter``: the cattrs converter recipes are read with (strict: no ``"3"`` for an
    integer), to turn stored options into that class. ganstack fills both whenever it builds a metric;
    in a test, ``ganstack.testing.metric_context()`` does.
    """

    device: str = "cpu"
    recipe_dir: Path | None = None
    registry: Registry | None = None
    converter: cattrs.Converter | None = None


@attrs.frozen
class ImportContext:
    """Given to an ``importer`` factory, which runs the import when called.

    An importer turns files made by other code (official checkpoints, Torch7 text encoders) into
    ganstack artefacts. Its options class is its command line: ``ganstack import NAME`` makes a flag
    ``--field-name`` of each attrs field (``metadata={"positional": True}`` for a positional one,
    ``metadata={"flag": "--netD"}`` to spell the flag otherwise, ``metadata={"doc": ...}`` for its help,
    ``metadata={"metavar": "FILE.pt"}`` for the value's name in it).
    ``report`` prints a line to the user; a problem the user can fix is raised as a ``UserError``.
    """

    report: Callable[[str], None]
    device: str = "cpu"


# ------------------------------------------------------------------------------ module contracts
@runtime_checkable
class TextEncoder(Protocol):
    """``nn.Module`` turning a batch's captions (or stored embeddings) into ``[B, dim]``, or into
    :class:`TextFeatures` (sentence plus words; then it declares ``word_dim``; the core normalises
    either with :func:`as_text_features`).

    ``trainable`` encoders are optimised with the generator; ``can_encode_text`` says whether
    ``encode_text`` works on new sentences. ``prepare`` is called once, before training starts
    from scratch, with the training dataset (build a vocabulary there); never on resume.
    """

    dim: int
    trainable: bool
    can_encode_text: bool

    def prepare(self, dataset: CaptionDataset) -> None: ...

    def forward(self, batch: dict[str, Any]) -> Tensor | TextFeatures: ...

    def encode_text(self, texts: Sequence[str]) -> Tensor | TextFeatures: ...


@runtime_checkable
class Conditioner(Protocol):
    """``nn.Module``: text embedding ``[B, text_dim]`` to a :class:`Condition` of ``out_dim``.

    ``eps`` (``[B, out_dim]``) fixes the sampling noise; ``None`` draws it. One that declares
    ``requests`` beyond ``wrong_images`` is called ``forward(text, eps, *, fields)`` (see :data:`REQUESTS`).
    """

    out_dim: int

    def forward(self, text: Tensor, eps: Tensor | None = None) -> Condition: ...


@runtime_checkable
class GeneratorStage(Protocol):
    """``nn.Module``: one stage of the generator.

    ``z`` is ``[B, noise_dim]`` for the first stage and ``None`` after; ``prev`` is the previous
    stage's output (``None`` for the first stage). ``out_size`` is the image size it produces,
    ``feature_channels`` the channels of ``StageOutput.features``. One that declares ``requests``
    beyond ``wrong_images`` is called ``forward(z, condition, prev, *, fields)`` (see :data:`REQUESTS`).
    """

    out_size: int
    feature_channels: int

    def forward(self, z: Tensor | None, condition: Condition,
                prev: StageOutput | None) -> StageOutput: ...


@runtime_checkable
class Discriminator(Protocol):
    """``nn.Module`` split so that one image pass serves several text pairings.

    ``features(image)`` runs the image path once; ``cond_logits`` pairs those features with a
    condition (the discriminator chooses ``condition.mu`` or its own use of ``text``) and returns
    logits ``[B]``; ``uncond_logits`` returns ``[B]`` or ``None`` when there is no such head.
    One that declares ``requests`` beyond ``wrong_images`` is called ``cond_logits(features, condition,
    text, *, fields)`` and ``uncond_logits(features, *, fields)``; ``features`` never gets fields (one
    image pass serves several pairings, and the fields describe the condition it is paired with).
    """

    def features(self, image: Tensor) -> Tensor: ...

    def cond_logits(self, features: Tensor, condition: Condition, text: Tensor) -> Tensor: ...

    def uncond_logits(self, features: Tensor) -> Tensor | None: ...


@runtime_checkable
class Loss(Protocol):
    """``nn.Module`` owning its terms: returns named, weighted scalar terms for each phase.

    The trainer sums the terms of every loss of a stage and logs each by name (``stageK/NAME``);
    two losses of one stage naming a term alike stop training with an error, and ``d_total`` is the
    trainer's own. A loss that has nothing to say in a phase returns ``{}``. A loss may declare
    ``requests`` (see :data:`REQUESTS`), e.g. ``frozenset({"wrong_images"})``.
    """

    def d_terms(self, step: StepState) -> dict[str, Tensor]: ...

    def g_terms(self, step: StepState) -> dict[str, Tensor]: ...


@runtime_checkable
class CaptionDataset(Protocol):
    """A ``torch.utils.data.Dataset`` of dicts, one per example, with keys:

    - ``images``: list of ``[3, r, r]`` tensors, one per entry of ``ctx.resolutions``
    - ``caption``: str (one caption of the example, chosen per access for training splits)
    - ``embedding``: ``[embedding_dim]`` float tensor, only when the dataset has embeddings
    - ``class_id``: int (``-1`` where unknown)
    - ``index``: int
    - ``wrong_images``: like ``images``, of another class, only when ``ctx.want_wrong``
    - each conditioning field the dataset declares in ``fields`` (see :data:`FIELDS`), for every example

    A dataset may offer ``set_epoch(epoch)`` (:class:`EpochAware`): the trainer calls it before each
    pass over the training split, and the training split's per-example randomness then comes from
    ``(seed, epoch, index)`` alone, so a resumed run draws the same with data-loading workers or without.
    """

    embedding_dim: int | None
    # optional: ``fields: frozenset[str]``, the conditioning fields it yields (absent = none; fields_of)
    # optional: ``missing_fields: dict[str, str]``, why a field it could give is not given here (for messages)

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    def captions(self) -> list[str]:
        """Every caption of the split (to build vocabularies)."""
        ...

    def sample_captions(self, k: int) -> list[str]:
        """``k`` fixed, varied captions for sample sheets."""
        ...


@runtime_checkable
class ExampleFields(Protocol):
    """Required of a component that requests dataset fields: example values where no data is at hand
    (``ganstack check --params``, the size estimate), e.g. a centred box ``[[0.25, 0.25, 0.75, 0.75]] * B``;
    a dict of what it requests (not ``words``: the core makes word features of the encoder's size)."""

    def example_fields(self, batch_size: int) -> dict[str, Tensor]: ...


@runtime_checkable
class EveryCaption(Protocol):
    """Optional for a :class:`CaptionDataset`: any caption of an example, for evaluation protocols
    that score every caption (the metrics' ``captions: all``)."""

    def caption_item(self, i: int, caption: int) -> dict[str, Any]:
        """Example ``i`` as ``__getitem__`` gives it, with its caption number ``caption`` (modulo its
        caption count) and, where the dataset has embeddings, that caption's embedding alone."""
        ...


@runtime_checkable
class EpochAware(Protocol):
    """A dataset that draws example ``i`` of pass ``epoch`` from ``(seed, epoch, i)`` (see CaptionDataset)."""

    def set_epoch(self, epoch: int) -> None: ...


class StepState:
    """What a loss sees in one phase of one stage; the trainer fills it in.

    Discriminator features are computed once per image tensor and cached, so the real images'
    features serve both the real and the mismatched ("wrong") pair.

    ``fields``: every field any component of the stage requested (``{}`` when none); a loss that
    scores with the discriminator passes the D's own to ``cond_logits``/``uncond_logits`` with
    :meth:`d_fields`. ``generate`` (G phase only; ``None`` in the D phase): ``generate(text,
    fields=None) -> (Condition, StageOutput)`` runs the stack's chain up to this stage on another text
    embedding ``[B, text_dim]`` with fresh noise and gradients (``fields=None``: the batch's own).
    """

    def __init__(self, *, stage: int, phase: str, discriminator: nn.Module, real: Tensor,
                 fake: Tensor, condition: Condition, text: Tensor,
                 wrong_real: Tensor | None = None, prev_fake: Tensor | None = None,
                 class_id: Tensor | None = None, fields: dict[str, Tensor] | None = None,
                 generate: Callable[..., tuple[Condition, StageOutput]] | None = None) -> None:
        self.stage = stage
        self.phase = phase  # "d" or "g"
        self.discriminator = discriminator
        self.real = real
        self.fake = fake
        self.condition = condition
        self.text = text
        self.wrong_real = wrong_real
        self.prev_fake = prev_fake
        self.class_id = class_id
        self.fields: dict[str, Tensor] = dict(fields or {})
        self.generate = generate
        self._features: dict[str, torch.Tensor] = {}

    def d_fields(self, rows: Callable[[Tensor], Tensor] | None = None) -> dict[str, Any]:
        """``{"fields": ...}`` with what the discriminator requested, or ``{}`` for one that requests
        nothing: ``d.cond_logits(f, c, t, **step.d_fields())`` calls either kind correctly. The fields
        follow the condition: a loss pairing images with other rows' conditions passes the same row
        change as ``rows`` (``lambda t: t.roll(1, dims=0)``)."""
        wanted = field_requests(self.discriminator)
        if not wanted:
            return {}
        return {"fields": {n: self.fields[n] if rows is None else rows(self.fields[n]) for n in sorted(wanted)}}

    def features(self, which: str) -> Tensor:
        """D features of ``'real'``, ``'fake'`` or ``'wrong_real'`` images, computed once."""
        if which not in self._features:
            image = getattr(self, which)
            if image is None:
                raise ValueError(f"this batch has no '{which}' images")
            self._features[which] = self.discriminator.features(image)
        return self._features[which]


@runtime_checkable
class ImageSource(Protocol):
    """What a metric evaluates: a trained stack that draws images, and the data it learnt from."""

    def generate(self, captions: Sequence[str], seed: int = 0,
                 fields: dict[str, Tensor] | None = None) -> list[Tensor]:
        """One image per caption from every stage: a list (per stage) of ``[N, 3, r, r]``. ``fields``:
        per-caption conditioning fields (``{"box": [N, 4]}``), required where the stack requests them
        (metrics that draw captions from dataset examples pass those examples' fields)."""
        ...

    def dataset(self, split: str) -> CaptionDataset:
        """The recipe's dataset for ``split``, at the stack's stage resolutions."""
        ...


@runtime_checkable
class Metric(Protocol):
    """A ``metric`` plugin: scores a source; returns named values (``{'is_mean': 3.1, ...}``), numbers
    or strings (a weights file's hash, recorded with the score)."""

    def evaluate(self, source: ImageSource, n: int) -> dict[str, float | str]: ...


@runtime_checkable
class PreparedMetric(Protocol):
    """Optional for a :class:`Metric`: ``prepare()`` loads what it needs (a weights file, a judge)
    so that a wrong file stops an evaluation before any image is generated for any metric."""

    def prepare(self) -> None: ...
