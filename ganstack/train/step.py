"""One training step, and the guard that stops a run whose losses stay non-finite.

A step is each active stage's discriminator phase, then one generator phase for them all. The
generator runs once; its images serve the D phases (detached) and the G phase. A phase whose loss
is not finite on any rank is skipped on every rank, decided on the device (fused Adam's
``found_inf``, a masked EMA update): the step never waits for the host (fp16's gradient scaler
aside, which checks on the host). The guard reads the flags back at log, sample, evaluation and
checkpoint steps, one sync for all the steps since the last read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ganstack.build.devices import autocast
from ganstack.errors import UserError
from ganstack.interfaces import Condition, StageOutput, StepState
from ganstack.train import distributed
from ganstack.train.distributed import DistInfo
from ganstack.train.phases import DiscriminatorPhase, GeneratorPhase, merge_terms
from ganstack.train.state import Optimised, TrainState


class NonFiniteLoss(UserError):
    """Too many non-finite steps in a row."""


@attrs.frozen
class PhaseRecord:
    """A phase of one step as the guard sees it: the stage it trains (the first active one for the
    generator phase), its non-finite flag on the device, and its terms named ``stageK/NAME``."""

    stage: int
    bad: Tensor
    terms: dict[str, Tensor]


def _detach(cond: Condition) -> Condition:
    return Condition(*(t.detach() if t is not None else None for t in cond))


def _detach_fields(fields: dict[str, Tensor]) -> dict[str, Tensor]:
    """The D phase's fields: word features carry the text encoder's graph, which D never trains."""
    return {n: t.detach() for n, t in fields.items()}


def _stage_of(term: str) -> int | None:
    head = term.split("/", 1)[0]
    return int(head.removeprefix("stage")) - 1 if head.startswith("stage") and "/" in term else None


class NonFiniteGuard:
    """Counts skipped steps on the host and stops after ``patience`` in a row."""

    def __init__(self, patience: int, checkpoints: Path, last_checkpoint: Callable[[], int | None]) -> None:
        self.patience = patience
        self.checkpoints = checkpoints
        self.last_checkpoint = last_checkpoint
        self.in_a_row = 0
        self.skipped = 0
        self.pending: list[tuple[int, list[PhaseRecord]]] = []

    def add(self, step: int, phases: list[PhaseRecord]) -> None:
        self.pending.append((step, phases))

    def resolve(self) -> None:
        """One read-back of the flags since the last call; raises :class:`NonFiniteLoss` at the limit."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        flags = torch.stack([ph.bad for _step, phases in pending for ph in phases]).tolist()
        at = 0
        for step, phases in pending:
            bad = [ph for ph, flag in zip(phases, flags[at:at + len(phases)], strict=True) if flag]
            at += len(phases)
            if not bad:
                self.in_a_row = 0
                continue
            self.in_a_row += 1
            self.skipped += 1
            if self.in_a_row >= self.patience:
                raise self._stop(step, bad[0])

    def _stop(self, step: int, phase: PhaseRecord) -> NonFiniteLoss:
        # The terms are read only here, on the way out; the stage is the one whose term was not finite.
        local = [n for n, t in phase.terms.items() if not torch.isfinite(t).all()]
        if local:
            stage, term = _stage_of(local[0]), local[0].rsplit("/", 1)[-1]
            where = f"stage {(phase.stage if stage is None else stage) + 1} loss term '{term}'"
        else:
            where = f"a stage {phase.stage + 1} loss term (on another process)"
        saved = self.last_checkpoint()
        kept = (f"the last good checkpoint was kept (step {saved}, in {self.checkpoints})" if saved is not None
                else "no checkpoint had been written yet, so there is none to resume from")
        fix = ("lower the learning rate, check the data for NaNs, or resume from the last checkpoint with "
               "`ganstack run --resume`" if saved is not None else
               "lower the learning rate or check the data for NaNs, then start the run again")
        return NonFiniteLoss(f"{where} was not finite for {self.in_a_row} steps in a row (step {step}); training "
                             f"stopped and {kept}", path="training", fix=fix)


class TrainStep:
    """``step(batch, active) -> terms``: one step of the active stages, terms detached for logging."""

    def __init__(self, state: TrainState, *, dist: DistInfo, device: torch.device, amp: torch.dtype | None,
                 joint: bool, guard: NonFiniteGuard, noise_dim: int, file: str | None) -> None:
        self.state = state
        self.dist = dist
        self.device = device
        self.amp = amp
        self.joint = joint
        self.guard = guard
        self.noise_dim = noise_dim
        self.file = file
        stack = state.stack
        self.loss_paths = [[f"stages[{k}].losses[{j}]" for j in range(len(s.losses))]
                           for k, s in enumerate(stack.stages)]
        self.g_phase: nn.Module = distributed.wrap(GeneratorPhase(stack), dist, device)
        self.d_phases: list[nn.Module] = [
            distributed.wrap(DiscriminatorPhase(s.discriminator, s.losses, k, self.loss_paths[k], file), dist, device)
            for k, s in enumerate(stack.stages)]

    def unwrap(self) -> None:
        """Drop the DDP wrappers (no reference to the process group outlives it)."""
        self.g_phase = distributed.unwrap(self.g_phase)
        self.d_phases = [distributed.unwrap(d) for d in self.d_phases]

    def __call__(self, batch: dict[str, Any], active: list[int]) -> dict[str, Tensor]:
        state, stages = self.state, self.state.stack.stages
        optimisers = state.stages
        images: list[Tensor] = batch["images"]
        wrong: list[Tensor] | None = batch.get("wrong_images")
        text_opt = state.text_encoder
        train_text = text_opt is not None and (self.joint or active == [0])
        terms: dict[str, Tensor] = {}
        phases: list[PhaseRecord] = []

        for p in state.stack.text_encoder.parameters():
            p.requires_grad_(train_text)
        with autocast(self.device, self.amp):
            z = torch.randn(images[0].shape[0], self.noise_dim, device=self.device)
            text, fields, outs = self.g_phase(batch, z, active, train_text)

        # Discriminator phases: only this stage's D (and its loss modules) train.
        for k in active:
            optimisers[k].discriminator.set_trainable(True)
            with autocast(self.device, self.amp):
                d_terms = self.d_phases[k](images[k], outs[k][1].image.detach(), _detach(outs[k][0]),
                                           text.detach(), wrong[k] if wrong else None,
                                           outs[k - 1][1].image.detach() if k else None, batch.get("class_id"),
                                           _detach_fields(fields))
                total = sum(d_terms.values())
            named = {f"stage{k + 1}/{n}": t.detach() for n, t in d_terms.items()}
            phases.append(self._backward_and_step(total, [optimisers[k].discriminator], k, named))
            terms.update(named)
            terms[f"stage{k + 1}/d_total"] = total.detach()

        # Generator phase: the active stages' conditioners and generators (and the text encoder).
        for k, bundle in enumerate(optimisers):
            bundle.discriminator.set_trainable(False)
            bundle.generator.set_trainable(k in active)
        g_total: Tensor = torch.zeros((), device=self.device)
        g_named: dict[str, Tensor] = {}
        with autocast(self.device, self.amp):
            for k in active:
                stage = stages[k]
                step_state = StepState(stage=k, phase="g", discriminator=stage.discriminator, real=images[k],
                                       fake=outs[k][1].image, condition=outs[k][0], text=text,
                                       prev_fake=outs[k - 1][1].image if k else None,
                                       class_id=batch.get("class_id"), fields=fields,
                                       generate=self._generator_for(k, active, fields))
                g_terms = merge_terms([loss.g_terms(step_state) for loss in stage.losses], self.loss_paths[k], k,
                                      "generator", self.file)
                g_total = g_total + sum(g_terms.values())
                g_named.update({f"stage{k + 1}/{n}": t.detach() for n, t in g_terms.items()})
        opts = [optimisers[k].generator for k in active] + ([text_opt] if train_text and text_opt else [])
        phases.append(self._backward_and_step(g_total, opts, active[0], g_named))
        if state.ema is not None:
            state.ema.update(~phases[-1].bad)
        state.scaler.update()
        self.guard.add(state.position.step + 1, phases)
        terms.update(g_named)
        terms["g_total"] = g_total.detach()
        for bundle in optimisers:
            bundle.discriminator.set_trainable(True)
            bundle.generator.set_trainable(True)
        return terms

    def _generator_for(self, k: int, active: list[int], batch_fields: dict[str, Tensor]
                       ) -> Callable[..., tuple[Condition, StageOutput]]:
        """``StepState.generate`` for stage ``k``'s G phase: the chain up to ``k`` on another text, fresh
        noise, gradients for the active stages, through the generator phase's own modules (inside this
        step's one backward; see :class:`~ganstack.train.phases.GeneratorPhase` on DDP)."""
        phase = distributed.unwrap(self.g_phase)

        def generate(text: Tensor, fields: dict[str, Tensor] | None = None) -> tuple[Condition, StageOutput]:
            z = torch.randn(text.shape[0], self.noise_dim, device=text.device)
            return phase.chain(text, z, active, batch_fields if fields is None else fields, upto=k)[k]

        return generate

    def _backward_and_step(self, total: Tensor, opts: list[Optimised], stage: int,
                           named: dict[str, Tensor]) -> PhaseRecord:
        """Backward, then a step each optimiser skips on the device if the loss is not finite on any rank."""
        bad = distributed.any_rank(~torch.isfinite(total.detach()), self.dist)
        scaler = self.state.scaler
        for o in opts:
            o.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:
            scaler.scale(total).backward()
        for o in opts:
            if scaler.is_enabled():
                scaler.step(o.optimizer)  # fp16: its own check of the gradients skips the step
            else:
                o.optimizer.found_inf = bad.float()  # read by fused Adam: no update, its step count restored
                o.optimizer.step()
        return PhaseRecord(stage, bad, named)
