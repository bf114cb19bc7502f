"""Training a stack as a list of phases: each stage's discriminator step, then the generator step.

``stagewise`` (the paper) trains stage 1, then stage 2 with stage 1 frozen, and so on; ``joint``
(StackGAN-v2) trains every stage in each step. Both are the same loop over *blocks* of active
stages; in each phase every module is frozen except what that phase trains.
"""

from __future__ import annotations

import contextlib
import copy
import random
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, default_collate

from ganstack.build.dataset import build_dataset
from ganstack.build.devices import amp_dtype, autocast, resolve_device, retain_freed_memory
from ganstack.build.stack import Stack, build_stack
from ganstack.errors import CheckpointError, DataError, UserError
from ganstack.interfaces import Condition, StepState
from ganstack.recipe.paths import looked_in, resolve_recipe_path
from ganstack.recipe.resolve import ResolvedRecipe, recipe_from_dict, to_data
from ganstack.run_folder.checkpoint import (
    checkpoint_recipe,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from ganstack.run_folder.record import MetricsLog, environment_record, write_json
from ganstack.sample.images import contact_sheet, save_png
from ganstack.train import distributed
from ganstack.train.phases import DiscriminatorPhase, GeneratorPhase


@attrs.define
class Position:
    """Where a run is: the block (stage, in stagewise), epoch, batches done in it, global step."""

    block: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Draw from seeded streams without disturbing the run's own (so resume stays exact)."""
    state = rng_state()
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        set_rng_state(state)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, block, epoch), started at any batch: resumable mid-epoch.

    Under torchrun each rank takes every ``world``-th index of the same permutation (equal shares).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n = n // world
        self.seed = seed
        self.rank, self.world = rank, world
        self.block = self.epoch = self.start = 0

    def set_position(self, block: int, epoch: int, start: int) -> None:
        self.block, self.epoch, self.start = block, epoch, start

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.block * 10_007 + self.epoch)
        perm = torch.randperm(self.n * self.world, generator=gen)[self.rank :: self.world]
        return iter(perm[self.start :].tolist())

    def __len__(self) -> int:
        return self.n - self.start


def set_trainable(modules: list[nn.Module], flag: bool) -> None:
    for module in modules:
        module.requires_grad_(flag)


def _detach(cond: Condition) -> Condition:
    return Condition(*(t.detach() if t is not None else None for t in cond))


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def move(x: Any) -> Any:
        if isinstance(x, Tensor):
            if x.dim() == 4:
                return x.to(device, non_blocking=True, memory_format=fmt)
            return x.to(device, non_blocking=True)
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return {k: move(v) for k, v in batch.items()}


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


class NonFiniteLoss(UserError):
    """Too many non-finite steps in a row."""


class Trainer:
    """Runs (or resumes) a recipe into an output folder."""

    def __init__(self, resolved: ResolvedRecipe, out_dir: Path, *, checkpoint: dict[str, Any] | None = None,
                 max_steps: int | None = None, max_minutes: float | None = None,
                 report: Callable[[str], None] = print, progress: Any = None) -> None:
        self.resolved = resolved
        self.recipe = resolved.recipe
        self.train_spec = self.recipe.training
        self.out_dir = out_dir
        self.report = report
        self.progress = progress
        self.max_steps = max_steps if max_steps is not None else self.train_spec.max_steps
        self.max_minutes = max_minutes if max_minutes is not None else self.train_spec.max_minutes
        device = resolve_device(self.train_spec.device)
        self.dist = distributed.setup(device)
        self.device = distributed.local_device(device, self.dist)
        self.amp = amp_dtype(self.train_spec.amp, self.device)
        self.channels_last = self.train_spec.channels_last and self.device.type != "mps"
        self.retains_memory = (self.train_spec.retain_memory and self.device.type == "cpu"
                               and retain_freed_memory())
        self._stop_reason: str | None = None

        seed_everything(self.train_spec.seed)
        if self.train_spec.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.stack: Stack = build_stack(resolved, device=str(self.device))
        if self.dist.enabled and self.train_spec.sync_batchnorm:
            if self.device.type == "cuda":
                self.stack = nn.SyncBatchNorm.convert_sync_batchnorm(self.stack)
            else:
                report("training.sync_batchnorm needs CUDA (NCCL); BatchNorm stays per process on CPU.")
        self.stack.to(self.device, memory_format=torch.channels_last if self.channels_last
                      else torch.preserve_format)
        wants_wrong = self.train_spec.wrong_images or any(
            getattr(c.options, "wrong", None) == "class" for s in self.recipe.stages for c in s.losses)
        self.dataset = build_dataset(resolved, "train", self.stack.resolutions, want_wrong=wants_wrong)
        if len(self.dataset) < self.train_spec.batch_size:
            raise DataError(f"the training split has {len(self.dataset)} examples, fewer than one batch "
                            f"({self.train_spec.batch_size})", file=resolved.file,
                            path="training.batch_size", fix="lower training.batch_size or add data")
        self.blocks = self._blocks()
        self._build_optimizers()
        if checkpoint is None:
            loaded = self._init_from_checkpoints()
            if self.recipe.text_encoder_init:
                self._load_pretrained_text_encoder(self.recipe.text_encoder_init)
            elif not loaded:
                self.stack.text_encoder.prepare(self.dataset)  # before the EMA copy: it holds the vocabulary
        self.ema: Stack | None = None
        if self.train_spec.ema:
            self.ema = copy.deepcopy(self.stack).requires_grad_(False).eval()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.position = Position()
        self.nonfinite = 0
        self.skipped_steps = 0
        # Each step's phases as (stage, non-finite flag on device, its named loss terms), read on the
        # host only at log, sample, evaluation and checkpoint steps (and every nan_patience steps).
        self._pending: list[tuple[int, list[tuple[int, Tensor, dict[str, Tensor]]]]] = []
        self._seconds_before = 0.0  # training time of earlier processes of this run (resumed runs)
        self._started = time.monotonic()
        self.best: float | None = None
        if checkpoint is not None:
            self._restore(checkpoint)
        self.sample_batch = self._sample_batch()
        if self.train_spec.compile:  # in place: state-dict keys (and so checkpoints) stay the same
            for stage in self.stack.stages:
                stage.generator.compile()
                for part in stage.discriminator.children():
                    part.compile()
        self.g_phase = distributed.wrap(GeneratorPhase(self.stack), self.dist, self.device)
        self.d_phases = [distributed.wrap(DiscriminatorPhase(s.discriminator, s.losses, k), self.dist, self.device)
                         for k, s in enumerate(self.stack.stages)]
        if self.dist.enabled:  # identical weights everywhere (DDP broadcasts them), different noise per rank
            torch.manual_seed(self.train_spec.seed + 7919 * self.dist.rank)
        self.step_fn = self._step

    # ------------------------------------------------------------------------------------ building
    def _init_from_checkpoints(self) -> bool:
        """Load stage ``i`` (and the text encoder, where the checkpoint has it) from ``stages[i].init_from``,
        as the paper's Stage-II run starts from a trained Stage-I. True if any was loaded."""
        loaded = False
        for i, spec in enumerate(self.recipe.stages):
            if not spec.init_from:
                continue
            key = f"stages[{i}].init_from"
            path, looked = resolve_recipe_path(spec.init_from, self.resolved.base_dir)
            try:
                state = load_checkpoint(path)["model"]
            except CheckpointError as exc:
                raise CheckpointError(exc.message, file=self.resolved.file, path=key,
                                      fix=f"{exc.fix} (looked for {looked_in(looked)})") from None
            own = self.stack.state_dict()
            wanted = [k for k in own if k.startswith(f"stages.{i}.")]
            wanted += [k for k in own if k.startswith("text_encoder.") and k in state]
            missing = [k for k in wanted if k not in state]
            try:
                if missing:
                    raise RuntimeError(f"it has no '{missing[0]}'")
                self.stack.load_state_dict({k: state[k] for k in wanted}, strict=False)
            except RuntimeError as exc:
                raise CheckpointError(f"cannot initialise stage {i + 1} from {path}: {str(exc)[:300]}",
                                      file=self.resolved.file, path=key,
                                      fix=f"give a checkpoint of a run whose stage {i + 1} (and text encoder) "
                                      "match this recipe's") from None
            loaded = True
        return loaded

    def _load_pretrained_text_encoder(self, value: str) -> None:
        from ganstack.train.encoder_pretraining import load_pretrained

        path, looked = resolve_recipe_path(value, self.resolved.base_dir)
        try:
            load_pretrained(path, self.stack.text_encoder)
        except UserError as exc:
            fix = exc.fix or "give a file written by `ganstack pretrain-encoder` for this recipe's text encoder"
            raise type(exc)(exc.message, file=self.resolved.file, path="text_encoder_init",
                            fix=f"{fix} (looked for {looked_in(looked)})") from None

    def _blocks(self) -> list[list[int]]:
        n = len(self.stack.stages)
        return [list(range(n))] if self.train_spec.schedule == "joint" else [[k] for k in range(n)]

    def _block_epochs(self, block: int) -> int:
        if self.train_spec.schedule == "joint":
            return self.train_spec.epochs
        epochs = self.recipe.stages[block].epochs
        return self.train_spec.epochs if epochs is None else epochs

    def _decay_every(self, stage: int) -> int | None:
        return self.recipe.stages[stage].lr_decay_every or self.train_spec.lr_decay_every

    def _adam(self, params: list[nn.Parameter], spec: Any) -> torch.optim.Optimizer:
        """Fused Adam: one kernel per step, and it skips a step on the device (``found_inf``)."""
        return torch.optim.Adam(params, lr=spec.lr, betas=tuple(spec.betas), weight_decay=spec.weight_decay,
                                fused=True)

    def _build_optimizers(self) -> None:
        opt = self.train_spec.optimizer
        self.g_opts: list[torch.optim.Optimizer] = []
        self.d_opts: list[torch.optim.Optimizer] = []
        self.schedulers: list[torch.optim.lr_scheduler.LRScheduler] = []
        for k, stage in enumerate(self.stack.stages):
            g_params = [p for m in stage.generator_parts() for p in m.parameters()]
            d_params = list(stage.discriminator.parameters()) + list(stage.losses.parameters())
            self.g_opts.append(self._adam(g_params, opt.generator))
            self.d_opts.append(self._adam(d_params, opt.discriminator))
            every = self._decay_every(k)
            for o in (self.g_opts[-1], self.d_opts[-1]):
                self.schedulers.append(torch.optim.lr_scheduler.StepLR(
                    o, step_size=every or 10**9, gamma=self.train_spec.lr_decay_factor))
        enc = self.stack.text_encoder
        self.text_opt = None
        if getattr(enc, "trainable", False) and any(p.requires_grad for p in enc.parameters()):
            self.text_opt = self._adam(list(enc.parameters()), opt.generator)

    def _sample_batch(self) -> dict[str, Any]:
        """A fixed set of examples (and noise) for sample sheets, independent of training RNG."""
        k = min(self.recipe.output.sample_count, len(self.dataset))
        with isolated_rng(self.train_spec.seed + 7):
            idx = np.linspace(0, len(self.dataset) - 1, k).round().astype(int).tolist()
            batch = default_collate([self.dataset[i] for i in idx])
            captions = self.recipe.output.sample_captions
            if captions:
                batch["caption"] = list(captions)[:k] + batch["caption"][len(captions):]
            gen = torch.Generator().manual_seed(self.train_spec.seed + 11)
            batch["z"] = torch.randn(k, self.recipe.noise_dim, generator=gen)
            batch["eps"] = [None] * len(self.stack.stages)
        return batch

    # -------------------------------------------------------------------------------- the step
    def _step(self, batch: dict[str, Any], active: list[int]) -> dict[str, Tensor]:
        """One step: each active stage's discriminator phase, then one generator phase for them all.

        The generator runs once; its images serve the D phases (detached) and the G phase. A phase
        whose loss is not finite on any rank is skipped on every rank, decided on the device: the
        step never waits for the host (fp16's gradient scaler aside, which checks on the host).
        """
        stages = self.stack.stages
        images: list[Tensor] = batch["images"]
        wrong: list[Tensor] | None = batch.get("wrong_images")
        train_text = self.text_opt is not None and (self.train_spec.schedule == "joint" or active == [0])
        terms: dict[str, Tensor] = {}
        phases: list[tuple[int, Tensor, dict[str, Tensor]]] = []

        set_trainable([self.stack.text_encoder], train_text)
        with autocast(self.device, self.amp):
            z = torch.randn(images[0].shape[0], self.recipe.noise_dim, device=self.device)
            text, outs = self.g_phase(batch, z, active, train_text)

        # Discriminator phases: only this stage's D (and its loss modules) train.
        for k in active:
            stage = stages[k]
            set_trainable([stage.discriminator, stage.losses], True)
            with autocast(self.device, self.amp):
                d_terms = self.d_phases[k](images[k], outs[k][1].image.detach(), _detach(outs[k][0]),
                                           text.detach(), wrong[k] if wrong else None,
                                           outs[k - 1][1].image.detach() if k else None, batch.get("class_id"))
                total = sum(d_terms.values())
            phases.append(self._backward_and_step(total, [self.d_opts[k]], k, d_terms))
            terms.update({f"stage{k + 1}/{n}": t.detach() for n, t in d_terms.items()})
            terms[f"stage{k + 1}/d_total"] = total.detach()

        # Generator phase: the active stages' conditioners and generators (and the text encoder).
        for k, stage in enumerate(stages):
            set_trainable([stage.discriminator, stage.losses], False)
            set_trainable(stage.generator_parts(), k in active)
        g_total: Tensor = torch.zeros((), device=self.device)
        g_named: dict[str, Tensor] = {}
        with autocast(self.device, self.amp):
            for k in active:
                stage = stages[k]
                state = StepState(stage=k, phase="g", discriminator=stage.discriminator, real=images[k],
                                  fake=outs[k][1].image, condition=outs[k][0], text=text,
                                  prev_fake=outs[k - 1][1].image if k else None,
                                  class_id=batch.get("class_id"))
                g_terms = {n: t for loss in stage.losses for n, t in loss.g_terms(state).items()}
                g_total = g_total + sum(g_terms.values())
                g_named.update({f"stage{k + 1}/{n}": t for n, t in g_terms.items()})
        opts = [self.g_opts[k] for k in active] + ([self.text_opt] if train_text else [])
        phases.append(self._backward_and_step(g_total, opts, active[-1], g_named))
        self._update_ema(~phases[-1][1])
        self.scaler.update()
        self._pending.append((self.position.step + 1, phases))
        terms.update({n: t.detach() for n, t in g_named.items()})
        terms["g_total"] = g_total.detach()
        for stage in stages:
            set_trainable([stage.discriminator, stage.losses, *stage.generator_parts()], True)
        return terms

    def _backward_and_step(self, total: Tensor, opts: list[torch.optim.Optimizer], stage: int,
                           named: dict[str, Tensor]) -> tuple[int, Tensor, dict[str, Tensor]]:
        """Backward, then a step each optimiser skips on the device if the loss is not finite on any
        rank; returns the phase's flag and terms for :meth:`_resolve_nonfinite`."""
        bad = distributed.any_rank(~torch.isfinite(total.detach()), self.dist)
        for o in opts:
            o.zero_grad(set_to_none=True)
        if total.requires_grad:
            self.scaler.scale(total).backward()
        for o in opts:
            if self.scaler.is_enabled():
                self.scaler.step(o)  # fp16: its own check of the gradients skips the step
            else:
                o.found_inf = bad.float()  # read by fused Adam: no update, and its step count restored
                o.step()
        return stage, bad, {n: t.detach() for n, t in named.items()}

    def _resolve_nonfinite(self) -> None:
        """Skip-and-count on the host, one sync for the steps since the last call: stop after
        ``nan_patience`` steps in a row with a non-finite loss."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flags = torch.stack([bad for _step, phases in pending for _stage, bad, _terms in phases]).tolist()
        at = 0
        for step, phases in pending:
            bad_phases = [phase for phase, flag in zip(phases, flags[at:at + len(phases)], strict=True) if flag]
            at += len(phases)
            if not bad_phases:
                self.nonfinite = 0
                continue
            self.nonfinite += 1
            self.skipped_steps += 1
            if self.nonfinite >= self.train_spec.nan_patience:
                stage, _bad, terms = bad_phases[0]  # the terms are read only here, on the way out
                local = [n for n, t in terms.items() if not torch.isfinite(t).all()]
                term = local[0].rsplit("/", 1)[-1] if local else "(on another process)"
                raise NonFiniteLoss(
                    f"stage {stage + 1} loss term '{term}' was not finite for {self.nonfinite} steps in a row "
                    f"(step {step}); training stopped and the last good checkpoint was kept "
                    f"in {self.out_dir / 'checkpoints'}",
                    path="training", fix="lower the learning rate, check the data for NaNs, or resume from the "
                    "last checkpoint with `ganstack run --resume`")

    def _update_ema(self, stepped: Tensor) -> None:
        """Move the EMA towards the generator if its step was taken (``stepped``, on the device)."""
        if self.ema is None:
            return
        weight = stepped.float() * (1 - float(self.train_spec.ema))
        with torch.no_grad():
            for (name, p_ema), p in zip(self.ema.named_parameters(), self.stack.parameters(), strict=True):
                if ".discriminator." not in name:
                    p_ema.lerp_(p, weight.to(p_ema.dtype))
            for b_ema, b in zip(self.ema.buffers(), self.stack.buffers(), strict=True):
                b_ema.copy_(torch.where(stepped, b, b_ema))

    # ------------------------------------------------------------------------------ checkpoints
    def state(self, *, resumable: bool = True) -> dict[str, Any]:
        """Everything a checkpoint holds. Without ``resumable`` (kept snapshots): the weights, EMA and
        position only, half the size, enough for ``eval``, ``sample`` and ``init_from``."""
        weights = {
            "recipe": to_data(self.recipe),
            "model": self.stack.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "position": attrs.asdict(self.position),
            "world_size": self.dist.world_size,
            "counters": {"skipped_steps": self.skipped_steps, "best": self.best,
                         "train_seconds": self.train_seconds()},
            "resolutions": list(self.stack.resolutions),
            "recipe_dir": str(self.resolved.base_dir) if self.resolved.base_dir else None,
            "resumable": resumable,
        }
        if not resumable:
            return weights
        return {
            **weights,
            "g_opts": [o.state_dict() for o in self.g_opts],
            "d_opts": [o.state_dict() for o in self.d_opts],
            "text_opt": self.text_opt.state_dict() if self.text_opt else None,
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if not ckpt.get("resumable", True):
            raise CheckpointError("this checkpoint is a kept snapshot (weights and EMA, without the optimiser "
                                  "state a resume needs)", file=ckpt.get("path"),
                                  fix="resume the run folder (`ganstack run --resume RUN_DIR` reads "
                                  "checkpoints/last.pt); to start a new run from these weights, name the file "
                                  "in a stage's init_from")
        try:
            self.stack.load_state_dict(ckpt["model"])
            if self.ema is not None and ckpt.get("ema"):
                self.ema.load_state_dict(ckpt["ema"])
            for opt, st in zip(self.g_opts + self.d_opts, ckpt["g_opts"] + ckpt["d_opts"], strict=True):
                opt.load_state_dict(st)
            if self.text_opt is not None and ckpt.get("text_opt"):
                self.text_opt.load_state_dict(ckpt["text_opt"])
            for sch, st in zip(self.schedulers, ckpt["schedulers"], strict=True):
                sch.load_state_dict(st)
            self.scaler.load_state_dict(ckpt["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not match this recipe's stack ({str(exc)[:300]})",
                                  file=ckpt.get("path"), fix="resume with the recipe the run was started "
                                  "with (the checkpoint holds it: `ganstack run --resume RUN_DIR`)") from None
        self.position = Position(**ckpt["position"])
        saved_world = int(ckpt.get("world_size", 1))
        if saved_world != self.dist.world_size:  # same examples done in the epoch, other shard sizes
            self.position.batch = self.position.batch * saved_world // self.dist.world_size
        self.skipped_steps = ckpt["counters"]["skipped_steps"]
        self.best = ckpt["counters"]["best"]
        self._seconds_before = float(ckpt["counters"].get("train_seconds", 0.0))
        self._pending_rng = ckpt["rng"]

    def save(self, name: str = "last") -> Path:
        """Write a checkpoint (rank 0 only: the replicas are identical). ``last`` is the one a resume
        reads; the others (``best``, ``step_N``) are weights-only snapshots."""
        path = self.out_dir / "checkpoints" / f"{name}.pt"
        if self.dist.is_main:
            save_atomic(self.state(resumable=name == "last"), path)
        return path

    # ---------------------------------------------------------------------------------- samples
    @torch.no_grad()
    def write_samples(self) -> Path:
        """Write the fixed captions' sample sheet for this step (rank 0); returns its path."""
        path = self.out_dir / "samples" / f"step_{self.position.step:07d}.png"
        if not self.dist.is_main:
            return path
        model = self.ema if self.ema is not None else self.stack
        was_training = model.training
        model.eval()
        batch = _to_device(self.sample_batch, self.device, False)
        with isolated_rng(self.train_spec.seed + 13):
            text = model.text_encoder(batch)
            outs = model.generate(text, batch["z"])
        model.train(was_training)
        columns = [out.image.float().cpu() for _cond, out in outs]
        headers = [f"stage {k + 1} ({r}px)" for k, r in enumerate(self.stack.resolutions)]
        save_png(contact_sheet(batch["caption"], columns, headers=headers), path)
        return path

    def evaluate(self) -> dict[str, float | str]:
        """Score the current generator (its EMA where kept) with the recipe's metrics; keep the best."""
        from ganstack.evaluate.scoring import build_metric, evaluate, is_better
        from ganstack.sample.draw import TextToImage

        ev = self.recipe.evaluation
        if not hasattr(self, "_metrics"):
            self._metrics = [(c.type, build_metric(c, device=str(self.device), path=f"evaluation.metrics[{j}]",
                                                   file=self.resolved.file, recipe_dir=self.resolved.base_dir))
                             for j, c in enumerate(ev.metrics)]
        model = self.ema if self.ema is not None else self.stack
        with isolated_rng(self.train_spec.seed + 17):
            results = evaluate(TextToImage(model, self.resolved, self.device, self.position.step),
                               self.resolved, self._metrics, ev.n)
        if ev.best:
            if ev.best not in results:
                raise UserError(f"evaluation.best names '{ev.best}', which no metric reports",
                                file=self.resolved.file, path="evaluation.best",
                                fix=f"use one of: {', '.join(sorted(results))}")
            value = float(results[ev.best])
            if is_better(value, self.best, ev.best_mode):
                self.best = value
                self.save("best")
        return {f"eval/{k}": v for k, v in results.items()}

    # ---------------------------------------------------------------------------------- running
    def _install_signals(self) -> Callable[[], None]:
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            if self._stop_reason is not None:
                self.report("Second interrupt: exiting now without a checkpoint.")
                raise SystemExit(130)
            self._stop_reason = signal.Signals(signum).name
            self.report(f"{self._stop_reason} received: finishing this step and writing a checkpoint "
                        "(press Ctrl-C again to exit at once)...")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread (e.g. a notebook worker)
                pass

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A loader's batch on the training device, images in the training memory format."""
        return _to_device(batch, self.device, self.channels_last)

    def loader(self, block: int, epoch: int, start_batch: int) -> DataLoader:
        """The loader of one epoch, from ``start_batch`` on. Its own seeded generator (worker seeds)
        keeps it from drawing on the global RNG, so a resumed run draws exactly what the original did."""
        sampler = EpochSampler(len(self.dataset), self.train_spec.seed, self.dist.rank, self.dist.world_size)
        sampler.set_position(block, epoch, start_batch * self.train_spec.batch_size)
        generator = torch.Generator().manual_seed(self.train_spec.seed * 7919 + block * 104_729 + epoch)
        return DataLoader(self.dataset, batch_size=self.train_spec.batch_size, sampler=sampler,
                          drop_last=True, num_workers=self.train_spec.num_workers,
                          pin_memory=self.device.type == "cuda", generator=generator)

    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.dist.world_size // self.train_spec.batch_size

    def total_steps(self) -> int:
        per_epoch = self.steps_per_epoch()
        total = sum(self._block_epochs(b) for b in range(len(self.blocks))) * per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    def run(self) -> dict[str, Any]:
        """Train until the recipe's epochs, a budget, or a signal; always ends with a checkpoint."""
        resumed = self.position.step > 0
        log: MetricsLog | None = None
        tensorboard = None
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "environment.json", environment_record(
                device=str(self.device), settings={
                    "seed": self.train_spec.seed, "amp": self.train_spec.amp, "amp_active": self.amp is not None,
                    "channels_last": self.channels_last, "retain_memory": self.retains_memory,
                    "compile": self.train_spec.compile,
                    "ema": self.train_spec.ema, "deterministic": self.train_spec.deterministic,
                    "world_size": self.dist.world_size,
                    "resumed_from_step": self.position.step if resumed else None}))
            log = MetricsLog(self.out_dir / "metrics.jsonl", resume_step=self.position.step if resumed else None)
            tensorboard = open_tensorboard(self.out_dir) if self.recipe.output.tensorboard else None
        self._log, self._tensorboard = log, tensorboard
        restore_signals = self._install_signals()
        if hasattr(self, "_pending_rng"):
            set_rng_state(self._pending_rng)
        self._started = time.monotonic()
        self._interval = {"sums": {}, "count": 0, "start": time.monotonic(), "images": 0}
        ended = "finished"
        if self.progress and self.dist.is_main:
            self.progress.start(self.total_steps(), self.position.step, self.max_minutes)
        try:
            pos = self.position
            while pos.block < len(self.blocks) and ended == "finished":
                active = self.blocks[pos.block]
                for k, stage in enumerate(self.stack.stages):
                    stage.train(k >= min(active))  # earlier stages are finished: inference mode
                while pos.epoch < self._block_epochs(pos.block) and ended == "finished":
                    for batch in self.loader(pos.block, pos.epoch, pos.batch):
                        terms = self.step_fn(self.to_device(batch), active)
                        pos.batch += 1
                        pos.step += 1
                        self._after_step(terms, active)
                        ended = self._budget_reason()
                        if ended != "finished":
                            break
                    else:
                        pos.epoch += 1
                        pos.batch = 0
                        with warnings.catch_warnings():  # a resumed run may end an epoch before any step
                            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
                            for k in active:
                                for sch in self.schedulers[2 * k : 2 * k + 2]:
                                    sch.step()
                if ended == "finished":
                    pos.block += 1
                    pos.epoch = 0
            self._resolve_nonfinite()
            in_sync = distributed.replicas_in_sync(self.stack, self.dist, self.device)
        finally:
            restore_signals()
            if log is not None:
                log.close()
            if tensorboard is not None:
                tensorboard.close()
            if self.progress and self.dist.is_main:
                self.progress.stop()
        self.write_samples()
        ckpt = self.save()
        self.g_phase = distributed.unwrap(self.g_phase)  # no reference to the group outlives it
        self.d_phases = [distributed.unwrap(d) for d in self.d_phases]
        distributed.teardown(self.dist)
        return {"ended": ended, "step": self.position.step, "checkpoint": str(ckpt),
                "out_dir": str(self.out_dir), "skipped_steps": self.skipped_steps,
                "steps_per_epoch": self.steps_per_epoch(), "world_size": self.dist.world_size,
                "replicas_in_sync": in_sync}

    def _after_step(self, terms: dict[str, Tensor], active: list[int]) -> None:
        """Logging, samples, evaluation and checkpoints at their intervals."""
        pos, out, ev, iv = self.position, self.recipe.output, self.recipe.evaluation, self._interval
        log_now = pos.step % out.log_every == 0
        sample_now = pos.step % out.sample_every == 0
        eval_now = bool(ev.every) and pos.step % ev.every == 0
        save_now = pos.step % out.checkpoint_every == 0
        if log_now or sample_now or eval_now or save_now or len(self._pending) >= self.train_spec.nan_patience:
            self._resolve_nonfinite()  # before anything reads the counters or writes a checkpoint
        iv["count"] += 1
        iv["images"] += self.train_spec.batch_size * self.dist.world_size
        for name, value in terms.items():
            iv["sums"][name] = iv["sums"].get(name, 0) + value.float()
        if log_now:
            means = distributed.mean_across_ranks({n: v / iv["count"] for n, v in iv["sums"].items()}, self.dist)
            elapsed = max(time.monotonic() - iv["start"], 1e-9)
            record = {"step": pos.step, "epoch": pos.epoch, "stage": active[-1] + 1,
                      **{n: round(float(v), 6) for n, v in means.items()}, **self._learning_rates(),
                      "images_per_s": round(iv["images"] / elapsed, 2), "skipped_steps": self.skipped_steps,
                      "time_s": round(self.train_seconds(), 2)}
            self._write_log(record)
            if self.progress and self.dist.is_main:
                self.progress.update(pos.step, record)
            self._interval = {"sums": {}, "count": 0, "start": time.monotonic(), "images": 0}
        elif self.progress and self.dist.is_main:
            self.progress.update(pos.step, None)
        if sample_now:
            sheet = self.write_samples()
            if self._tensorboard is not None:
                self._tensorboard.add_image("samples", _png_tensor(sheet), pos.step)
        if eval_now and self.dist.is_main:
            self._write_log({"step": pos.step, "epoch": pos.epoch, **self.evaluate()})
        if save_now and self.nonfinite == 0:
            self.save()
            if out.keep_every and pos.step % out.keep_every == 0:
                self.save(f"step_{pos.step:07d}")

    def train_seconds(self) -> float:
        """Wall-clock seconds this run has trained, across resumes."""
        return self._seconds_before + time.monotonic() - self._started

    def _write_log(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(record)
        if self._tensorboard is not None:
            for name, value in record.items():
                if name not in ("step", "epoch") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(name, value, record["step"])

    def _budget_reason(self) -> str:
        """Why to stop now ("finished": go on). Under torchrun every rank stops at the same step."""
        reason = "finished"
        if self._stop_reason:
            reason = f"interrupted ({self._stop_reason})"
        elif self.max_steps and self.position.step >= self.max_steps:
            reason = "max_steps reached"
        elif self.max_minutes and (time.monotonic() - self._started) / 60 >= self.max_minutes:
            reason = "max_minutes reached"
        if distributed.agree(reason != "finished", self.dist) and reason == "finished":
            reason = "stopped with another process"
        return reason

    def _learning_rates(self) -> dict[str, float]:
        rates = {}
        for k in range(len(self.stack.stages)):
            rates[f"lr/stage{k + 1}/g"] = self.g_opts[k].param_groups[0]["lr"]
            rates[f"lr/stage{k + 1}/d"] = self.d_opts[k].param_groups[0]["lr"]
        return rates


def trainer_from_checkpoint(run_dir: Path, **kwargs: Any) -> Trainer:
    """Rebuild a run's trainer from its last checkpoint (the recipe travels inside it)."""
    ckpt = load_checkpoint(run_dir)
    resolved = recipe_from_dict(checkpoint_recipe(ckpt), file=ckpt["path"], base_dir=ckpt.get("recipe_dir"))
    return Trainer(resolved, run_dir, checkpoint=ckpt, **kwargs)


__all__ = ["EpochSampler", "Position", "Trainer", "isolated_rng", "trainer_from_checkpoint"]
