"""The recipe schema: one documented default for every key, as attrs classes.

A recipe file holds only what differs from these defaults. Components are written
``{type: NAME, ...options}``; their options are checked against the plugin's own options class
when the recipe is resolved (:mod:`ganstack.recipe.resolve`).
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

SCHEMA_VERSION = 1

positive = v.ge(1)
# A seed every generator it reaches accepts (NumPy's are unsigned 32-bit; torch's 64-bit ones leave room for
# the offsets added per stage, epoch and rank): recipe and plugin options validate seeds with it.
seed_range = [v.ge(0), v.le(2**32 - 1)]
optional_positive = v.optional(v.ge(1))


@attrs.define
class Component:
    """A component written ``{type: NAME, ...options}``, or ``{type: PLUGIN:NAME}`` to choose one plugin's
    ``NAME`` where several register it; ``options`` is the plugin's attrs instance once resolved.

    ``type`` is always the bare name; ``plugin`` the plugin the recipe names (``None``: any), and
    ``provider`` the plugin it resolved to, which the recipe a run saves records (``PROVIDER:NAME``) so
    that the run resolves to the same plugin later, whatever else gets installed.
    """

    type: str
    options: Any = attrs.field(factory=dict)
    plugin: str | None = None
    provider: str | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        plugin, sep, name = self.type.rpartition(":")
        if sep:
            self.plugin, self.type = plugin or self.plugin, name

    @property
    def written(self) -> str:
        """The name as the recipe gives it: ``NAME`` or ``PLUGIN:NAME``."""
        return f"{self.plugin}:{self.type}" if self.plugin else self.type


def _component(name: str, **options: Any) -> Any:
    return attrs.Factory(lambda: Component(name, dict(options)))


@attrs.define
class StageSpec:
    """One stage of the stack: conditioner -> generator stage, judged by its discriminator.

    ``generator``: the generator stage (``stackgan-stage1`` first, ``stackgan-refiner`` after);
    ``discriminator``: the stage's discriminator; ``conditioner``: text embedding to the stage's
    condition (each stage has its own, unless ``{type: shared, stage: N}`` names an earlier stage whose
    module, sample and KL term it shares, as StackGAN-v2's branches do); ``losses``: the stage's loss terms, summed and logged by name;
    ``name``: a label for tables, logs and sample sheets (default ``stageN``); ``epochs``: epochs of
    this stage under the stagewise schedule (default ``training.epochs``); ``batch_size``: examples
    per step while this stage trains under the stagewise schedule (default ``training.batch_size``;
    the official COCO Stage-II trains at 40; the joint schedule has one batch size for all stages
    and refuses a different one); ``lr_decay_every``: this stage's decay interval in epochs (default ``training.lr_decay_every``); ``init_from``: a
    checkpoint (or run folder; relative paths: next to the recipe, then the working folder) whose
    stage at this position (and text encoder) initialise this stage; with ``epochs: 0`` the stage is then not trained again, as the paper's Stage-II run
    starts from a trained, frozen Stage-I
    """

    generator: Component
    discriminator: Component
    conditioner: Component = _component("ca")
    losses: list[Component] = attrs.Factory(lambda: [Component("matching-aware"), Component("kl")])
    name: str | None = None
    epochs: int | None = attrs.field(default=None, validator=v.optional(v.ge(0)))
    batch_size: int | None = attrs.field(default=None, validator=optional_positive)
    lr_decay_every: int | None = attrs.field(default=None, validator=optional_positive)
    init_from: str | None = None


@attrs.define
class OptimizerSpec:
    """Adam settings for one component (the reference: lr 2e-4, betas 0.5/0.999).

    ``lr``: learning rate; ``betas``: Adam's two decay rates; ``weight_decay``: L2 penalty
    """

    lr: float = attrs.field(default=2e-4, validator=v.gt(0))
    betas: tuple[float, float] = attrs.field(default=(0.5, 0.999))
    weight_decay: float = attrs.field(default=0.0, validator=v.ge(0))

    @betas.validator
    def _check_betas(self, _attr: Any, value: tuple[float, float]) -> None:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"'betas' must each be in [0, 1): {list(value)}")


@attrs.define
class OptimizersSpec:
    """``generator``: Adam for each stage's conditioner and generator (and a trainable text encoder);
    ``discriminator``: Adam for each stage's discriminator."""

    generator: OptimizerSpec = attrs.Factory(OptimizerSpec)
    discriminator: OptimizerSpec = attrs.Factory(OptimizerSpec)


@attrs.define
class TrainingSpec:
    """How the stack is trained. Stage entries may override ``epochs``, ``batch_size`` and ``lr_decay_every``.

    ``schedule``: ``stagewise`` (the paper: each stage in turn, earlier ones frozen) or ``joint``
    (StackGAN-v2: every stage in every step); ``finished_stages``: the mode of the earlier, frozen
    stages while a later stage trains (stagewise): ``eval`` runs them in inference mode (BatchNorm on
    its running statistics, which stay as the stage left them), ``train`` leaves them in training
    mode as the official PyTorch port does (frozen by gradients only: BatchNorm normalises with each
    batch's statistics and its running statistics keep moving, into the later checkpoints too);
    their weights never change either way; ``epochs``: epochs per stage (stagewise) or in all
    (joint); ``batch_size``: examples per step; ``optimizer``: Adam settings by component;
    ``lr_decay_every``: multiply learning rates by ``lr_decay_factor`` every this many epochs
    (never when null); ``lr_decay_factor``: the factor (0.5 halves); ``max_steps``: stop cleanly,
    with a checkpoint, after this many steps (also ``--max-steps``); ``max_minutes``: stop cleanly
    after this long (also ``--max-minutes``); ``seed``: seeds weights, noise, data order and
    augmentation; ``deterministic``: use deterministic kernels where torch has them;
    ``device``: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``; ``amp``: mixed
    precision, ``bf16`` (CUDA, and CPUs with AVX512-BF16 or AMX, where it about halves a paper
    step), ``fp16`` (CUDA, with a gradient scaler), ``auto`` (bf16 where the device computes it
    natively, else fp32) or ``off`` (write it ``'off'``: YAML reads a bare off as false);
    ``channels_last``: NHWC memory format, faster convolutions on CPU and tensor cores;
    ``retain_memory``: on CPU (Linux, glibc), keep memory freed between steps in the process instead
    of handing it back to the system to be faulted in again (the paper's steps run 16-26% faster on
    2 cores); the process then holds its peak memory until it exits;
    ``compile``: ``torch.compile`` the stages (slow to start, worth it for long GPU runs);
    ``ema``: keep an exponential moving average of the generator with this decay (0.999 in
    StackGAN-v2) and sample from it; ``sync_batchnorm``: synchronise BatchNorm statistics across
    processes under torchrun; ``num_workers``: data-loading processes (at most 64; beyond the cores they
    only cost memory); ``nan_patience``: stop after
    this many steps in a row with a non-finite loss (each is skipped on the device; the host reads
    the count at log, sample and checkpoint steps, and at least every ``nan_patience`` steps);
    ``wrong_images``: load a real image of another class per example for the mismatched pair
    (losses with ``wrong: class`` ask for it themselves)
    """

    schedule: str = attrs.field(default="stagewise", validator=v.in_(["stagewise", "joint"]))
    finished_stages: str = attrs.field(default="eval", validator=v.in_(["eval", "train"]))
    epochs: int = attrs.field(default=600, validator=positive)
    batch_size: int = attrs.field(default=64, validator=positive)
    optimizer: OptimizersSpec = attrs.Factory(OptimizersSpec)
    lr_decay_every: int | None = attrs.field(default=100, validator=optional_positive)
    lr_decay_factor: float = attrs.field(default=0.5, validator=[v.gt(0), v.le(1)])
    max_steps: int | None = attrs.field(default=None, validator=optional_positive)
    max_minutes: float | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    seed: int = attrs.field(default=0, validator=seed_range)
    deterministic: bool = False
    device: str = attrs.field(default="auto", validator=v.in_(["auto", "cpu", "cuda", "mps"]))
    amp: str = attrs.field(default="off", validator=v.in_(["off", "auto", "bf16", "fp16"]))
    channels_last: bool = True
    retain_memory: bool = True
    compile: bool = False
    ema: float | None = attrs.field(default=None, validator=v.optional([v.gt(0), v.lt(1)]))
    sync_batchnorm: bool = False
    num_workers: int = attrs.field(default=0, validator=[v.ge(0), v.le(64)])  # each is a process: not thousands
    nan_patience: int = attrs.field(default=20, validator=positive)
    wrong_images: bool = False


@attrs.define
class OutputSpec:
    """What a run writes and how often (in steps).

    ``dir``: output folder (default ``runs/<name>-<timestamp>``; ``--out`` overrides);
    ``log_every``: steps between lines of ``metrics.jsonl`` and progress; ``sample_every``: steps
    between sample sheets in ``samples/``; ``sample_captions``: captions for the sample sheets
    (default: captions of fixed training examples); ``sample_count``: rows of each sample sheet;
    ``checkpoint_every``: steps between writes of ``checkpoints/last.pt``; ``keep_every``: also
    keep ``checkpoints/step_N.pt`` every this many steps (weights and EMA without optimiser state,
    half the size of ``last.pt``: for ``eval``, ``sample`` and ``init_from``, not for resuming);
    ``tensorboard``: also log to TensorBoard (needs ``pip install "ganstack[tensorboard]"``)
    """

    dir: str | None = None
    log_every: int = attrs.field(default=50, validator=positive)
    sample_every: int = attrs.field(default=500, validator=positive)
    sample_captions: list[str] = attrs.Factory(list)
    sample_count: int = attrs.field(default=8, validator=positive)
    checkpoint_every: int = attrs.field(default=1000, validator=positive)
    keep_every: int | None = attrs.field(default=None, validator=optional_positive)
    tensorboard: bool = False


@attrs.define
class EvaluationSpec:
    """Metrics run during training and by ``ganstack eval``.

    ``metrics``: metric components (``ganstack plugins`` lists them); ``every``: steps between
    evaluations during training (none when null); ``n``: images generated per evaluation;
    ``best``: a metric value name (e.g. ``test/all``) whose best value keeps
    ``checkpoints/best.pt``; ``best_mode``: whether higher (``max``) or lower (``min``) is better
    """

    metrics: list[Component] = attrs.Factory(list)
    every: int | None = attrs.field(default=None, validator=optional_positive)
    n: int = attrs.field(default=1000, validator=positive)
    best: str | None = None
    best_mode: str = attrs.field(default="max", validator=v.in_(["max", "min"]))


@attrs.define
class Recipe:
    """A whole stack: text encoder, dataset, stages, and how to train, write and evaluate it.

    ``text_encoder``: turns captions (or stored embeddings) into vectors; ``dataset``: the data and
    its options; ``stages``: the stages, first to last, each refining the one before;
    ``schema_version``: the recipe format (1); ``name``: the run's name (default: the file name);
    ``description``: one line for people; ``noise_dim``: size of the noise z given to the first
    stage; ``text_encoder_init``: a file written by ``ganstack pretrain-encoder`` whose text encoder
    (weights and vocabulary) a new run starts from (a relative path: next to the recipe, then the
    working folder); ``training``: how to train; ``output``: what to write; ``evaluation``: what to measure
    """

    text_encoder: Component
    dataset: Component
    stages: list[StageSpec] = attrs.field()
    schema_version: int = attrs.field(default=SCHEMA_VERSION)
    name: str = "recipe"
    description: str = ""
    noise_dim: int = attrs.field(default=100, validator=positive)
    text_encoder_init: str | None = None
    training: TrainingSpec = attrs.Factory(TrainingSpec)
    output: OutputSpec = attrs.Factory(OutputSpec)
    evaluation: EvaluationSpec = attrs.Factory(EvaluationSpec)

    @stages.validator
    def _check_stages(self, _attr: Any, value: list[StageSpec]) -> None:
        if not value:
            raise ValueError("'stages' must list at least one stage")

    @schema_version.validator
    def _check_version(self, _attr: Any, value: int) -> None:
        if value != SCHEMA_VERSION:
            raise ValueError(f"'schema_version' {value} is not supported; this ganstack reads "
                             f"schema_version {SCHEMA_VERSION}")


# Where components sit in a recipe, and the registry kind each one is.
COMPONENT_KINDS = {
    "text_encoder": "text_encoder",
    "dataset": "dataset",
    "conditioner": "conditioner",
    "generator": "generator_stage",
    "discriminator": "discriminator",
    "losses": "loss",
    "metrics": "metric",
}
