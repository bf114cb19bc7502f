"""What the loop does between steps, each at its own interval: logging, sample sheets, evaluation,
checkpoints, and the budget that says when to stop.

Sample sheets and evaluation draw from their own copy of the stack (the EMA's weights where kept),
in inference mode: the training modules' modes and weights are never touched by them.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from ganstack.build.stack import Stack, text_and_fields
from ganstack.errors import UserError
from ganstack.interfaces import BOX, KEYPOINTS, LOCATION_FIELDS
from ganstack.recipe.resolve import ResolvedRecipe, to_data
from ganstack.run_folder.checkpoint import rng_state, save_atomic
from ganstack.run_folder.record import MetricsLog
from ganstack.sample.images import contact_sheet, save_png
from ganstack.train import distributed
from ganstack.train.distributed import DistInfo
from ganstack.train.interrupts import Interrupts
from ganstack.train.randomness import isolated_rng
from ganstack.train.state import TrainState


class Clock:
    """Training time across the processes of a run (a resumed run adds to the earlier ones)."""

    def __init__(self, before: float = 0.0) -> None:
        self.before = before
        self.started = time.monotonic()

    def restart(self, before: float) -> None:
        self.before, self.started = before, time.monotonic()

    def session_minutes(self) -> float:
        return (time.monotonic() - self.started) / 60

    def total_seconds(self) -> float:
        return self.before + time.monotonic() - self.started


class InferenceCopy:
    """A copy of the stack for drawing, refreshed from the train state's weights (EMA where kept)."""

    def __init__(self, state: TrainState) -> None:
        self.state = state
        self.stack: Stack = copy.deepcopy(state.stack).requires_grad_(False).eval()

    def refreshed(self) -> Stack:
        self.stack.load_state_dict(self.state.ema_or_model_state())
        return self.stack


def open_tensorboard(out_dir: Path) -> Any:
    """A TensorBoard writer under ``out_dir/tensorboard`` (the optional extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("output.tensorboard is on but TensorBoard is not installed", path="output.tensorboard",
                        fix='pip install "ganstack[tensorboard]", or set output.tensorboard: false') from None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


def _png_tensor(path: Path) -> Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)


class Logger:
    """``metrics.jsonl`` (rank 0), TensorBoard and the progress display: loss terms averaged over the
    steps since the last line and over ranks, learning rates, throughput and counters."""

    def __init__(self, state: TrainState, *, every: int, dist: DistInfo, batch_size: int, clock: Clock,
                 skipped: Any, progress: Any) -> None:
        self.state, self.every, self.dist, self.batch_size = state, every, dist, batch_size
        self.clock, self.skipped, self.progress = clock, skipped, progress
        self.log: MetricsLog | None = None
        self.tensorboard: Any = None
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.images = 0
        self.start = time.monotonic()

    def open(self, out_dir: Path, *, resumed: bool, tensorboard: bool) -> None:
        if self.dist.is_main:
            self.log = MetricsLog(out_dir / "metrics.jsonl", resume_step=self.state.position.step if resumed else None)
            self.tensorboard = open_tensorboard(out_dir) if tensorboard else None
        self._reset()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.log = self.tensorboard = None

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def after_step(self, step: int, terms: dict[str, Tensor], active: list[int]) -> None:
        pos = self.state.position
        self.count += 1
        self.images += self.batch_size * self.dist.world_size
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0) + value.float()
        if not self.due(step):
            if self.progress and self.dist.is_main:
                self.progress.update(step, None)
            return
        means = distributed.mean_across_ranks({n: v / self.count for n, v in self.sums.items()}, self.dist)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        record = {"step": step, "epoch": pos.epoch, "stage": active[-1] + 1,
                  **{n: round(float(v), 6) for n, v in means.items()}, **self.learning_rates(),
                  "images_per_s": round(self.images / elapsed, 2), "skipped_steps": self.skipped(),
                  "time_s": round(self.clock.total_seconds(), 2)}
        self.write(record)
        if self.progress and self.dist.is_main:
            self.progress.update(step, record)
        self._reset()

    def learning_rates(self) -> dict[str, float]:
        rates = {}
        for k, bundle in enumerate(self.state.stages):
            rates[f"lr/stage{k + 1}/g"] = bundle.generator.lr
            rates[f"lr/stage{k + 1}/d"] = bundle.discriminator.lr
        return rates

    def write(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)
        if self.tensorboard is not None:
            for name, value in record.items():
                if name not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(name, value, record["step"])


class SampleSheets:
    """A sheet of fixed captions and noise every ``sample_every`` steps (rank 0), and one at the end."""

    def __init__(self, resolved: ResolvedRecipe, dataset: Any, drawing: InferenceCopy, *, out_dir: Path,
                 device: torch.device, dist: DistInfo, logger: Logger) -> None:
        self.recipe = resolved.recipe
        self.every = self.recipe.output.sample_every
        self.seed = self.recipe.training.seed
        self.drawing, self.out_dir, self.device, self.dist, self.logger = drawing, out_dir, device, dist, logger
        self.batch = self._batch(dataset)

    def _batch(self, dataset: Any) -> dict[str, Any]:
        """A fixed set of examples (and noise) for sample sheets, independent of training RNG."""
        k = min(self.recipe.output.sample_count, len(dataset))
        with isolated_rng(self.seed + 7):
            idx = np.linspace(0, len(dataset) - 1, k).round().astype(int).tolist()
            batch = default_collate([dataset[i] for i in idx])
            captions = self.recipe.output.sample_captions
            if captions:
                batch["caption"] = list(captions)[:k] + batch["caption"][len(captions):]
            gen = torch.Generator().manual_seed(self.seed + 11)
            batch["z"] = torch.randn(k, self.recipe.noise_dim, generator=gen)
        return batch

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def after_step(self, step: int, _terms: dict[str, Tensor], _active: list[int]) -> None:
        if self.due(step):
            sheet = self.write(step)
            if self.logger.tensorboard is not None:
                self.logger.tensorboard.add_image("samples", _png_tensor(sheet), step)

    @torch.no_grad()
    def write(self, step: int) -> Path:
        """Write this step's sheet (rank 0); returns its path."""
        from ganstack.train.data import batch_to_device

        path = self.out_dir / "samples" / f"step_{step:07d}.png"
        if not self.dist.is_main:
            return path
        model = self.drawing.refreshed()
        batch = batch_to_device(self.batch, self.device, False)
        with isolated_rng(self.seed + 13):
            text, fields = text_and_fields(model.text_encoder(batch), batch, model.requested_fields())
            outs = model.generate(text, batch["z"], fields=fields)
        columns = [out.image.float().cpu() for _cond, out in outs]
        headers = [f"stage {k + 1} ({r}px)" for k, r in enumerate(model.resolutions)]
        places = {name: fields[name].float().cpu().tolist() for name in LOCATION_FIELDS if name in fields}
        save_png(contact_sheet(batch["caption"], columns, headers=headers, boxes=places.get(BOX),
                               keypoints=places.get(KEYPOINTS)), path)
        return path


class Checkpoints:
    """``checkpoints/last.pt`` every ``checkpoint_every`` steps (never while steps are being skipped),
    kept snapshots every ``keep_every``, and the final one. Under torchrun every rank takes part (each
    rank's random streams go into the checkpoint) and rank 0 writes."""

    def __init__(self, resolved: ResolvedRecipe, state: TrainState, *, out_dir: Path, dist: DistInfo,
                 clock: Clock, guard: Any, interrupts: Interrupts | None = None) -> None:
        self.resolved, self.state, self.out_dir, self.dist, self.clock = resolved, state, out_dir, dist, clock
        self.guard = guard
        self.interrupts = interrupts
        self.every = resolved.recipe.output.checkpoint_every
        self.keep_every = resolved.recipe.output.keep_every
        self.last_saved: int | None = None  # the step of the newest last.pt (this run's, or the resumed one)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def after_step(self, step: int, _terms: dict[str, Tensor], _active: list[int]) -> None:
        if self.guard.in_a_row:
            return
        if self.due(step):
            self.save()
        if self.keep_every and step % self.keep_every == 0:  # on its own count, not only with last.pt
            self.save(f"step_{step:07d}")

    def contents(self, *, resumable: bool) -> dict[str, Any]:
        """Everything a checkpoint holds. Without ``resumable`` (kept snapshots): the weights, EMA and
        position only, half the size, enough for ``eval``, ``sample`` and ``init_from``."""
        self.state.counters.skipped_steps = self.guard.skipped
        self.state.counters.train_seconds = self.clock.total_seconds()
        out = {
            "recipe": to_data(self.resolved.recipe),
            **self.state.state_dict(resumable=resumable),
            "world_size": self.dist.world_size,
            "resolutions": list(self.state.stack.resolutions),
            "recipe_dir": str(self.resolved.base_dir) if self.resolved.base_dir else None,
            "resumable": resumable,
        }
        if resumable:
            out["rng"] = rng_state()
            ranks = distributed.gather_objects(out["rng"], self.dist)
            out["rng_ranks"] = ranks if self.dist.enabled else None
        return out

    def save(self, name: str = "last") -> Path:
        """Write a checkpoint (``last``: the one a resume reads; others are weights-only snapshots).
        ``last`` is collective under torchrun; snapshots are written by rank 0 alone."""
        path = self.out_dir / "checkpoints" / f"{name}.pt"
        contents = self.contents(resumable=name == "last")
        if self.dist.is_main:
            if self.interrupts is not None:
                with self.interrupts.writing():
                    save_atomic(contents, path)
            else:
                save_atomic(contents, path)
        if name == "last":
            self.last_saved = self.state.position.step
        return path


class Evaluation:
    """The recipe's metrics every ``evaluation.every`` steps (rank 0), on the drawing copy; the best
    value keeps ``checkpoints/best.pt``."""

    def __init__(self, resolved: ResolvedRecipe, state: TrainState, drawing: InferenceCopy, *,
                 device: torch.device, dist: DistInfo, logger: Logger, checkpoints: Checkpoints) -> None:
        self.resolved, self.state, self.drawing, self.device, self.dist = resolved, state, drawing, device, dist
        self.logger, self.checkpoints = logger, checkpoints
        self.spec = resolved.recipe.evaluation
        self.seed = resolved.recipe.training.seed
        self.metrics: list[tuple[str, Any]] | None = None

    def due(self, step: int) -> bool:
        return bool(self.spec.every) and step % self.spec.every == 0

    def after_step(self, step: int, _terms: dict[str, Tensor], _active: list[int]) -> None:
        if self.due(step) and self.dist.is_main:
            self.logger.write({"step": step, "epoch": self.state.position.epoch, **self.evaluate()})

    def evaluate(self) -> dict[str, float | str]:
        """Score the current generator (its EMA where kept) with the recipe's metrics; keep the best."""
        from ganstack.evaluate.scoring import build_metric, evaluate, is_better
        from ganstack.sample.draw import TextToImage

        ev = self.spec
        if self.metrics is None:
            self.metrics = [(c.type, build_metric(c, device=str(self.device), path=f"evaluation.metrics[{j}]",
                                                  file=self.resolved.file, recipe_dir=self.resolved.base_dir))
                            for j, c in enumerate(ev.metrics)]
        model = TextToImage(self.drawing.refreshed(), self.resolved, self.device, self.state.position.step)
        with isolated_rng(self.seed + 17):
            results = evaluate(model, self.resolved, self.metrics, ev.n)
        if ev.best:
            if ev.best not in results:
                raise UserError(f"evaluation.best names '{ev.best}', which no metric reports",
                                file=self.resolved.file, path="evaluation.best",
                                fix=f"use one of: {', '.join(sorted(results))}")
            value = float(results[ev.best])
            if is_better(value, self.state.counters.best, ev.best_mode):
                self.state.counters.best = value
                self.checkpoints.save("best")
        return {f"eval/{k}": v for k, v in results.items()}


class Budget:
    """Why to stop now ("finished": go on): a signal, ``max_steps`` or ``max_minutes``. Under torchrun
    every rank stops at the same step."""

    def __init__(self, *, max_steps: int | None, max_minutes: float | None, clock: Clock,
                 interrupts: Interrupts, dist: DistInfo) -> None:
        self.max_steps, self.max_minutes, self.clock, self.interrupts, self.dist = (
            max_steps, max_minutes, clock, interrupts, dist)

    def reason(self, step: int) -> str:
        reason = "finished"
        if self.interrupts.reason:
            reason = f"interrupted ({self.interrupts.reason})"
        elif self.max_steps and step >= self.max_steps:
            reason = "max_steps reached"
        elif self.max_minutes and self.clock.session_minutes() >= self.max_minutes:
            reason = "max_minutes reached"
        if distributed.agree(reason != "finished", self.dist) and reason == "finished":
            reason = "stopped with another process"
        return reason
