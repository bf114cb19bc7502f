"""Training a stack: the trainer builds a run's parts and runs the loop.

The parts, each in its module: the train state (``state.py``: stack, optimisers, scaler, EMA,
position), the step (``step.py``: phases, the non-finite skip, loss terms), the data
(``data.py``), and the callbacks the loop calls between steps (``callbacks.py``: logging, sample
sheets, evaluation, checkpoints, the budget). ``stagewise`` (the paper) trains stage 1, then stage 2
with stage 1 frozen, and so on; ``joint`` (StackGAN-v2) trains every stage in each step. Both are
the same loop over *blocks* of active stages.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ganstack.build.dataset import build_dataset
from ganstack.build.devices import amp_dtype, flush_denormals, resolve_device, retain_freed_memory
from ganstack.build.stack import Stack, build_stack
from ganstack.errors import CheckpointError, DataError, RecipeError
from ganstack.interfaces import REQUESTS, fields_of, missing_field_reason, requests_of, word_dim_of
from ganstack.recipe.resolve import ResolvedRecipe, recipe_from_dict
from ganstack.run_folder.checkpoint import checkpoint_recipe, load_checkpoint
from ganstack.run_folder.record import environment_record, write_json
from ganstack.train import distributed
from ganstack.train.callbacks import (
    Budget,
    Checkpoints,
    Clock,
    Evaluation,
    InferenceCopy,
    Logger,
    SampleSheets,
)
from ganstack.train.data import EpochSampler, batch_to_device, epoch_loader
from ganstack.train.initialisation import initialise
from ganstack.train.interrupts import Interrupts
from ganstack.train.randomness import isolated_rng, rank_seed, restore_rank_state, seed_everything
from ganstack.train.state import Position, TrainState
from ganstack.train.step import NonFiniteGuard, NonFiniteLoss, TrainStep


def _components(stack: Stack) -> list[tuple[str, nn.Module]]:
    """Every built component with its recipe key path."""
    parts: list[tuple[str, nn.Module]] = [("text_encoder", stack.text_encoder)]
    for i, s in enumerate(stack.stages):
        parts += [(f"stages[{i}].conditioner", s.conditioner), (f"stages[{i}].generator", s.generator),
                  (f"stages[{i}].discriminator", s.discriminator)]
        parts += [(f"stages[{i}].losses[{j}]", loss) for j, loss in enumerate(s.losses)]
    return parts


def declared_requests(stack: Stack, file: str | None, *, data: object | None = None,
                      dataset: str | None = None) -> frozenset[str]:
    """What the built components ask for (``requests``). With ``data`` (the built dataset), each name is
    checked: a core name (``ganstack.interfaces.REQUESTS``; ``words`` only from a text encoder that has
    words) or a field the dataset offers (its ``fields``), else a RecipeError at the component's key path."""
    wanted: set[str] = set()
    for path, module in _components(stack):
        asked = requests_of(module)
        if data is not None:
            _check_requests(asked, path, stack, file, data, dataset)
        wanted |= asked
    return frozenset(wanted)


def _check_requests(asked: frozenset[str], path: str, stack: Stack, file: str | None, data: object,
                    dataset: str | None) -> None:
    offered = fields_of(data)
    if "words" in asked and not word_dim_of(stack.text_encoder):
        raise RecipeError(f"the component at {path} requests 'words' (the text encoder's word features), but the "
                          f"text encoder '{type(stack.text_encoder).__name__}' gives none (it declares no word_dim)",
                          file=file, path=path,
                          fix="use a text encoder that returns word features (one that declares word_dim and "
                          "returns ganstack.interfaces.TextFeatures; `ganstack plugins show` describes each), or a "
                          "component that needs only the sentence vector")
    unknown = sorted(asked - REQUESTS - offered)
    if unknown:
        offers = ", ".join(sorted(offered)) if offered else "no conditioning fields"
        why = missing_field_reason(data, unknown[0])
        raise RecipeError(f"the component at {path} requests '{unknown[0]}', which the dataset "
                          f"'{dataset or '?'}' does not offer{f' here ({why})' if why else ''} (it offers {offers}; "
                          f"ganstack itself gives {', '.join(sorted(REQUESTS))})", file=file, path=path,
                          fix=f"use a dataset that yields '{unknown[0]}' (it declares it in its `fields`), or a "
                          "component that does not need it")


class _CompileFallbacks(logging.Handler):
    """Tells the user when torch.compile gives up on a function (its recompile limit) and runs it eagerly."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.report = report
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("torch._dynamo hit config."):
            return
        lines = message.splitlines()
        function = next((line.split(":", 1)[1].strip() for line in lines if line.strip().startswith("function:")),
                        "a function")
        if function in self.seen:
            return
        self.seen.add(function)
        self.report(f"training.compile: torch.compile reached its recompile limit for {function} and runs it "
                    f"uncompiled from here on ({lines[0].removeprefix('torch._dynamo hit ')}); the run goes on, "
                    "slower than compiled. TORCH_LOGS=recompiles shows why it recompiled.")


def compile_modules(modules: list[nn.Module]) -> None:
    """``torch.compile`` each module in place, with room in dynamo's cache for all of them.

    ``Module.compile`` compiles one function that every module shares (``Module._call_impl``), so each
    compiled module, and each of its variants (parameters trainable in the D phase, frozen in the G
    phase), is an entry in that one function's cache. Its default limit (8) is less than a two-stage
    stack needs, after which dynamo runs everything uncompiled without a word; each module gets the
    default budget of its own instead."""
    import torch._dynamo.config as dynamo_config

    per_module = 8
    needed = per_module * max(len(modules), 1)
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, needed)
    dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, needed)
    for module in modules:
        module.compile()


class Trainer:
    """Runs (or resumes) a recipe into an output folder."""

    def __init__(self, resolved: ResolvedRecipe, out_dir: Path, *, checkpoint: dict[str, Any] | None = None,
                 max_steps: int | None = None, max_minutes: float | None = None,
                 report: Callable[[str], None] = print, progress: Any = None) -> None:
        self.resolved = resolved
        self.recipe = resolved.recipe
        self.train_spec = spec = self.recipe.training
        self.out_dir = out_dir
        self.report = report
        self.progress = progress
        self.max_steps = max_steps if max_steps is not None else spec.max_steps
        self.max_minutes = max_minutes if max_minutes is not None else spec.max_minutes
        device = resolve_device(spec.device)
        self.dist = distributed.setup(device)
        self.device = distributed.local_device(device, self.dist)
        self.amp = amp_dtype(spec.amp, self.device)
        if spec.amp not in ("off", "auto") and self.amp is None:
            report(f"Note: training.amp is '{spec.amp}', which does not run on {self.device.type}; this run trains "
                   "in fp32. Use training.amp: auto (bf16 where the hardware computes it), bf16 for mixed precision on "
                   "CPU (fp16 needs CUDA), or 'off'.")
        self.channels_last = spec.channels_last and self.device.type != "mps"
        self.retains_memory = spec.retain_memory and self.device.type == "cpu" and retain_freed_memory()
        self.flushes_denormals = flush_denormals(self.device)

        seed_everything(spec.seed)
        if spec.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        stack: Stack = build_stack(resolved, device=str(self.device))
        if self.dist.enabled and spec.sync_batchnorm:
            if self.device.type == "cuda":
                stack = nn.SyncBatchNorm.convert_sync_batchnorm(stack)
            else:
                report("training.sync_batchnorm needs CUDA (NCCL); BatchNorm stays per process on CPU.")
        stack.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        want_wrong = spec.wrong_images or "wrong_images" in declared_requests(stack, resolved.file)
        self.dataset = build_dataset(resolved, "train", stack.resolutions, want_wrong=want_wrong)
        declared_requests(stack, resolved.file, data=self.dataset, dataset=self.recipe.dataset.type)
        n = len(stack.stages)
        self.blocks = [list(range(n))] if spec.schedule == "joint" else [[k] for k in range(n)]
        for b in range(len(self.blocks)):
            if len(self.dataset) < self.block_batch_size(b):
                key = self._batch_size_key(b)
                raise DataError(f"the training split has {len(self.dataset)} examples, fewer than one batch "
                                f"({self.block_batch_size(b)})", file=resolved.file,
                                path=key, fix=f"lower {key} or add data")

        self.state = TrainState(stack, self.recipe, amp=self.amp, device=self.device)
        if checkpoint is None:
            initialise(stack, resolved, self.dataset)  # before the EMA copy: it holds the vocabulary
        self.state.start_ema(spec.ema)
        self.clock = Clock()
        self.interrupts = Interrupts(report)
        self.guard = NonFiniteGuard(spec.nan_patience, out_dir / "checkpoints", lambda: self.checkpoints.last_saved)
        self.checkpoints = Checkpoints(resolved, self.state, out_dir=out_dir, dist=self.dist, clock=self.clock,
                                       guard=self.guard, interrupts=self.interrupts)
        self._resume_rng: dict[str, Any] | None = None
        if checkpoint is not None:
            self._restore(checkpoint)
        self.drawing = InferenceCopy(self.state)  # before compile: drawing never recompiles the training modules
        self.logger = Logger(self.state, every=self.recipe.output.log_every, dist=self.dist,
                             batch_size=self.block_batch_size(min(self.position.block, len(self.blocks) - 1)),
                             clock=self.clock, skipped=lambda: self.guard.skipped,
                             progress=progress)
        self.samples = SampleSheets(resolved, self.dataset, self.drawing, out_dir=out_dir, device=self.device,
                                    dist=self.dist, logger=self.logger)
        self.evaluation = Evaluation(resolved, self.state, self.drawing, device=self.device, dist=self.dist,
                                     logger=self.logger, checkpoints=self.checkpoints)
        self.budget = Budget(max_steps=self.max_steps, max_minutes=self.max_minutes, clock=self.clock,
                             interrupts=self.interrupts, dist=self.dist)
        self._compile_report: _CompileFallbacks | None = None
        if spec.compile:  # in place: state-dict keys (and so checkpoints) stay the same
            self._compile_report = _CompileFallbacks(report)
            compile_modules([m for stage in stack.stages
                             for m in (stage.generator, *stage.discriminator.children())])
        self.step = TrainStep(self.state, dist=self.dist, device=self.device, amp=self.amp,
                              joint=spec.schedule == "joint", guard=self.guard, noise_dim=self.recipe.noise_dim,
                              file=resolved.file)
        if self.dist.enabled:  # identical weights everywhere (DDP broadcasts them), different noise per rank
            torch.manual_seed(rank_seed(spec.seed, self.dist.rank))

    # ----------------------------------------------------------------------------- what it holds
    @property
    def stack(self) -> Stack:
        return self.state.stack

    @property
    def position(self) -> Position:
        return self.state.position

    def _block_epochs(self, block: int) -> int:
        if self.train_spec.schedule == "joint":
            return self.train_spec.epochs
        epochs = self.recipe.stages[block].epochs
        return self.train_spec.epochs if epochs is None else epochs

    def block_batch_size(self, block: int) -> int:
        """Examples per step in a block: the stage's own ``batch_size`` (stagewise), else training's."""
        if self.train_spec.schedule == "joint":
            return self.train_spec.batch_size
        size = self.recipe.stages[block].batch_size
        return self.train_spec.batch_size if size is None else size

    def _batch_size_key(self, block: int) -> str:
        if self.train_spec.schedule != "joint" and self.recipe.stages[block].batch_size is not None:
            return f"stages[{block}].batch_size"
        return "training.batch_size"

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if not ckpt.get("resumable", True):
            raise CheckpointError("this checkpoint is a kept snapshot (weights and EMA, without the optimiser "
                                  "state a resume needs)", file=ckpt.get("path"),
                                  fix="resume the run folder (`ganstack run --resume RUN_DIR` reads "
                                  "checkpoints/last.pt); to start a new run from these weights, name the file "
                                  "in a stage's init_from")
        try:
            self.state.load_state_dict(ckpt)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint does not match this recipe's stack ({str(exc)[:300]})",
                                  file=ckpt.get("path"), fix="resume with the recipe the run was started "
                                  "with (the checkpoint holds it: `ganstack run --resume RUN_DIR`)") from None
        position = self.state.position
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != self.dist.world_size:  # same examples done in the epoch, other shard sizes
            position.batch = position.batch * saved_world // self.dist.world_size
        self.guard.skipped = self.state.counters.skipped_steps
        self.checkpoints.last_saved = position.step
        self._resume_rng = ckpt

    # ------------------------------------------------------------------------------------- data
    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A loader's batch on the training device, images in the training memory format."""
        return batch_to_device(batch, self.device, self.channels_last)

    def loader(self, block: int, epoch: int, start_batch: int) -> DataLoader:
        """The loader of one epoch of a block, from ``start_batch`` on (see :func:`epoch_loader`)."""
        run_epoch = sum(self._block_epochs(b) for b in range(block)) + epoch
        return epoch_loader(self.dataset, seed=self.train_spec.seed, block=block, epoch=epoch, run_epoch=run_epoch,
                            start_batch=start_batch, batch_size=self.block_batch_size(block), rank=self.dist.rank,
                            world=self.dist.world_size, num_workers=self.train_spec.num_workers,
                            pin_memory=self.device.type == "cuda")

    def steps_per_epoch(self, block: int | None = None) -> int:
        """Steps in one epoch of ``block`` (default: the current one, or the last once all are done)."""
        if block is None:
            block = min(self.position.block, len(self.blocks) - 1)
        return len(self.dataset) // self.dist.world_size // self.block_batch_size(block)

    def total_steps(self) -> int:
        total = sum(self._block_epochs(b) * self.steps_per_epoch(b) for b in range(len(self.blocks)))
        return min(total, self.max_steps) if self.max_steps else total

    # -------------------------------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Train until the recipe's epochs, a budget, or a signal; always ends with a checkpoint."""
        pos = self.state.position
        resumed = pos.step > 0
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "environment.json", environment_record(
                device=str(self.device), settings={
                    "seed": self.train_spec.seed, "amp": self.train_spec.amp, "amp_active": self.amp is not None,
                    "amp_dtype": None if self.amp is None else str(self.amp).removeprefix("torch."),
                    "channels_last": self.channels_last, "retain_memory": self.retains_memory,
                    "flush_denormals": self.flushes_denormals, "compile": self.train_spec.compile,
                    "ema": self.train_spec.ema, "deterministic": self.train_spec.deterministic,
                    "world_size": self.dist.world_size,
                    "resumed_from_step": pos.step if resumed else None}))
        self.logger.open(self.out_dir, resumed=resumed, tensorboard=self.recipe.output.tensorboard)
        self.interrupts.install()
        dynamo = logging.getLogger("torch._dynamo")
        if self._compile_report is not None:
            dynamo.addHandler(self._compile_report)
        if self._resume_rng is not None:
            restore_rank_state(self._resume_rng, self.dist.rank, self.dist.world_size, self.train_spec.seed,
                               pos.step)
        self.clock.restart(self.state.counters.train_seconds)
        ended = "finished"
        if self.progress and self.dist.is_main:
            self.progress.start(self.total_steps(), pos.step, self.max_minutes)
        try:
            while pos.block < len(self.blocks) and ended == "finished":
                ended = self._run_block(self.blocks[pos.block])
                if ended == "finished":
                    pos.block += 1
                    pos.epoch = 0
            self.guard.resolve()
            in_sync = distributed.replicas_in_sync(self.stack, self.dist, self.device)
            self.logger.close()
            self.samples.write(pos.step)
            checkpoint = self.checkpoints.save()
        finally:
            self.interrupts.restore()
            self.logger.close()
            if self._compile_report is not None:
                dynamo.removeHandler(self._compile_report)
            if self.progress and self.dist.is_main:
                self.progress.stop()
        self.step.unwrap()
        distributed.teardown(self.dist)
        return {"ended": ended, "step": pos.step, "checkpoint": str(checkpoint),
                "out_dir": str(self.out_dir), "skipped_steps": self.guard.skipped,
                "steps_per_epoch": self.steps_per_epoch(), "world_size": self.dist.world_size,
                "replicas_in_sync": in_sync}

    def _run_block(self, active: list[int]) -> str:
        """The epochs of one block from the current position; why it ended ("finished": all done)."""
        pos = self.state.position
        finished_train = self.train_spec.finished_stages == "train"
        for k, stage in enumerate(self.stack.stages):
            # earlier stages are finished: inference mode, or left training (frozen by gradients only) as
            # the PyTorch port leaves them; either way the generator phase runs them without gradients
            stage.train(k >= min(active) or finished_train)
        self.logger.batch_size = self.block_batch_size(pos.block)
        while pos.epoch < self._block_epochs(pos.block):
            for batch in self.loader(pos.block, pos.epoch, pos.batch):
                terms = self.step(self.to_device(batch), active)
                pos.batch += 1
                pos.step += 1
                self._after_step(terms, active)
                ended = self.budget.reason(pos.step)
                if ended != "finished":
                    return ended
            pos.epoch += 1
            pos.batch = 0
            with warnings.catch_warnings():  # a resumed run may end an epoch before any step
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
                for k in active:
                    self.state.stages[k].generator.scheduler.step()
                    self.state.stages[k].discriminator.scheduler.step()
        return "finished"

    def _after_step(self, terms: dict[str, Any], active: list[int]) -> None:
        """The callbacks at their intervals; the non-finite flags are read back first whenever one is due
        (before anything reads the counters or writes a checkpoint), and at least every ``nan_patience``."""
        step = self.state.position.step
        callbacks = (self.logger, self.samples, self.evaluation, self.checkpoints)
        if any(cb.due(step) for cb in callbacks) or len(self.guard.pending) >= self.train_spec.nan_patience:
            self.guard.resolve()
        for cb in callbacks:
            cb.after_step(step, terms, active)


def trainer_from_checkpoint(path: Path, **kwargs: Any) -> Trainer:
    """Rebuild a run's trainer from its last checkpoint (the recipe travels inside it). ``path`` is a run
    folder or a checkpoint file; a file's run folder is the one above its ``checkpoints/``."""
    ckpt = load_checkpoint(path)
    run_dir = run_folder_of(Path(path))
    resolved = recipe_from_dict(checkpoint_recipe(ckpt), file=ckpt["path"], base_dir=ckpt.get("recipe_dir"))
    return Trainer(resolved, run_dir, checkpoint=ckpt, **kwargs)


def run_folder_of(path: Path) -> Path:
    """The run folder a ``--resume`` argument names: itself, or for a checkpoint file the folder above its
    ``checkpoints/``."""
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


__all__ = ["EpochSampler", "NonFiniteLoss", "Position", "Trainer", "isolated_rng", "run_folder_of",
           "trainer_from_checkpoint"]
