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
REQUESTS = frozenset({"wrong_images"})
"""What a component may ask the core for beyond the default batch, by declaring
``requests: frozenset[str]`` (an attribute; absent means none):

- ``wrong_images``: a real image of another class per example (``batch["wrong_images"]``, the
  dataset's ``ctx.want_wrong``), for a mismatched pair of real images.
"""


def requests_of(component: object) -> frozenset[str]:
    """The requests a built component declares (none where it declares no ``requests``)."""
    return frozenset(getattr(component, "requests", frozenset()))


# --------------------------------------------------------------------------- values passed around
class Condition(NamedTuple):
    """A conditioner's output: the sample fed to the generator, its mean and log-variance."""

    c: Tensor
    mu: Tensor
    logvar: Tensor | None


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


@attrs.frozen
class LossContext:
    """Given to a ``loss`` factory. ``key_path`` is the loss's place in the recipe
    (``stages[1].losses[2]``): a loss that raises a ``UserError`` while training, where the core
    cannot tell which loss spoke, names its place with it (``path=f"{ctx.key_path}.margin"``)."""

    index: int
    num_stages: int
    key_path: str | None = None


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
    """``nn.Module`` turning a batch's captions (or stored embeddings) into ``[B, dim]``.

    ``trainable`` encoders are optimised with the generator; ``can_encode_text`` says whether
    ``encode_text`` works on new sentences. ``prepare`` is called once, before training starts
    from scratch, with the training dataset (build a vocabulary there); never on resume.
    """

    dim: int
    trainable: bool
    can_encode_text: bool

    def prepare(self, dataset: CaptionDataset) -> None: ...

    def forward(self, batch: dict[str, Any]) -> Tensor: ...

    def encode_text(self, texts: Sequence[str]) -> Tensor: ...


@runtime_checkable
class Conditioner(Protocol):
    """``nn.Module``: text embedding ``[B, text_dim]`` to a :class:`Condition` of ``out_dim``.

    ``eps`` (``[B, out_dim]``) fixes the sampling noise; ``None`` draws it.
    """

    out_dim: int

    def forward(self, text: Tensor, eps: Tensor | None = None) -> Condition: ...


@runtime_checkable
class GeneratorStage(Protocol):
    """``nn.Module``: one stage of the generator.

    ``z`` is ``[B, noise_dim]`` for the first stage and ``None`` after; ``prev`` is the previous
    stage's output (``None`` for the first stage). ``out_size`` is the image size it produces,
    ``feature_channels`` the channels of ``StageOutput.features``.
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

    A dataset may offer ``set_epoch(epoch)`` (:class:`EpochAware`): the trainer calls it before each
    pass over the training split, and the training split's per-example randomness then comes from
    ``(seed, epoch, index)`` alone, so a resumed run draws the same with data-loading workers or without.
    """

    embedding_dim: int | None

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    def captions(self) -> list[str]:
        """Every caption of the split (to build vocabularies)."""
        ...

    def sample_captions(self, k: int) -> list[str]:
        """``k`` fixed, varied captions for sample sheets."""
        ...


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
    """

    def __init__(self, *, stage: int, phase: str, discriminator: nn.Module, real: Tensor,
                 fake: Tensor, condition: Condition, text: Tensor,
                 wrong_real: Tensor | None = None, prev_fake: Tensor | None = None,
                 class_id: Tensor | None = None) -> None:
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
        self._features: dict[str, torch.Tensor] = {}

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

    def generate(self, captions: Sequence[str], seed: int = 0) -> list[Tensor]:
        """One image per caption from every stage: a list (per stage) of ``[N, 3, r, r]``."""
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
