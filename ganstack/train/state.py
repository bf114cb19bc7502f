"""What a run trains and carries from one process to the next: the train state.

The stack, each stage's optimisers and learning-rate schedules (named bundles, not list offsets),
the text encoder's optimiser, the gradient scaler, the generator EMA and the position, with one
``state_dict``/``load_state_dict`` pair. Every parameter belongs to exactly one optimiser: a module
shared by several stages (StackGAN-v2's one conditioner) is trained by the first stage that has it.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ganstack.build.stack import Stack
from ganstack.recipe.schema import Recipe

_GENERATOR_SIDE = re.compile(r"^(text_encoder\.|stages\.\d+\.(conditioner|generator)\.)")


@attrs.define
class Position:
    """Where a run is: the block (stage, in stagewise), epoch, batches done in it, global step."""

    block: int = 0
    epoch: int = 0
    batch: int = 0
    step: int = 0


class Optimised:
    """One fused Adam and its step decay over the parameters it owns. Fused Adam runs one kernel per
    step and can skip a step on the device (``found_inf``)."""

    def __init__(self, params: list[nn.Parameter], spec: Any, decay_every: int | None, factor: float) -> None:
        self.params = params
        self.optimizer = torch.optim.Adam(params, lr=spec.lr, betas=tuple(spec.betas),
                                          weight_decay=spec.weight_decay, fused=True)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=decay_every or 10**9,
                                                         gamma=factor)

    def set_trainable(self, flag: bool) -> None:
        for p in self.params:
            p.requires_grad_(flag)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


@attrs.define
class StageOptimisers:
    """A stage's two optimisers: its generator side (conditioner and generator) and its discriminator
    side (discriminator and loss modules)."""

    generator: Optimised
    discriminator: Optimised


class GeneratorEMA:
    """An exponential moving average of the generator side (text encoder, conditioners, generators).

    It holds one shadow tensor per distinct parameter or buffer, so a module shared by several stages
    is averaged once; its ``state_dict`` is a whole stack's (the live discriminators beside the
    averaged generator), the form ``ganstack sample`` and ``eval`` load.
    """

    def __init__(self, stack: Stack, decay: float) -> None:
        self.decay = decay
        self._names: dict[str, Tensor] = {}
        self._params: list[tuple[Tensor, Tensor]] = []
        self._buffers: list[tuple[Tensor, Tensor]] = []
        shadows: dict[int, Tensor] = {}
        with torch.no_grad():
            for name, value in stack.state_dict(keep_vars=True).items():
                if not (torch.is_tensor(value) and _GENERATOR_SIDE.match(name)):
                    continue
                if id(value) not in shadows:
                    shadows[id(value)] = shadow = value.detach().clone()
                    (self._params if isinstance(value, nn.Parameter) else self._buffers).append((value, shadow))
                self._names[name] = shadows[id(value)]

    @torch.no_grad()
    def update(self, stepped: Tensor) -> None:
        """Move towards the live weights if the generator's step was taken (``stepped``, on the device)."""
        weight = stepped.float() * (1 - float(self.decay))
        for live, shadow in self._params:
            shadow.lerp_(live.detach(), weight.to(shadow.dtype))
        for live, shadow in self._buffers:
            shadow.copy_(torch.where(stepped, live, shadow))

    def parameters(self) -> list[Tensor]:
        return [shadow for _live, shadow in self._params]

    def buffers(self) -> list[Tensor]:
        return [shadow for _live, shadow in self._buffers]

    def state_dict(self, stack: Stack) -> dict[str, Any]:
        return {**stack.state_dict(), **{name: shadow.detach() for name, shadow in self._names.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, shadow in self._names.items():
            shadow.copy_(state[name])


@attrs.define
class Counters:
    """Run-wide tallies that travel in checkpoints."""

    skipped_steps: int = 0
    best: float | None = None
    train_seconds: float = 0.0  # training time of earlier processes of this run


class TrainState:
    """Everything training changes, with one ``state_dict``/``load_state_dict``."""

    def __init__(self, stack: Stack, recipe: Recipe, *, amp: torch.dtype | None, device: torch.device) -> None:
        spec = recipe.training
        opt = spec.optimizer
        self.stack = stack
        self.position = Position()
        self.counters = Counters()
        seen: set[int] = set()

        def owned(modules: list[nn.Module]) -> list[nn.Parameter]:
            params = [p for m in modules for p in m.parameters() if id(p) not in seen]
            unique = list({id(p): p for p in params}.values())
            seen.update(id(p) for p in unique)
            return unique

        text_params = owned([stack.text_encoder])
        self.stages: list[StageOptimisers] = []
        for k, stage in enumerate(stack.stages):
            every = recipe.stages[k].lr_decay_every or spec.lr_decay_every
            self.stages.append(StageOptimisers(
                generator=Optimised(owned(stage.generator_parts()), opt.generator, every, spec.lr_decay_factor),
                discriminator=Optimised(owned([stage.discriminator, stage.losses]), opt.discriminator, every,
                                        spec.lr_decay_factor)))
        enc = stack.text_encoder
        self.text_encoder: Optimised | None = None
        if enc.trainable and any(p.requires_grad for p in text_params):
            self.text_encoder = Optimised(text_params, opt.generator, None, 1.0)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        self.ema: GeneratorEMA | None = None

    def start_ema(self, decay: float | None) -> None:
        """Begin the generator EMA from the current weights (after initialisation and ``prepare``)."""
        self.ema = GeneratorEMA(self.stack, decay) if decay else None

    def ema_or_model_state(self) -> dict[str, Any]:
        """The weights to draw from: the EMA's where kept, the trained ones otherwise."""
        return self.ema.state_dict(self.stack) if self.ema is not None else self.stack.state_dict()

    def state_dict(self, *, resumable: bool = True) -> dict[str, Any]:
        """Weights, EMA, position and counters; with ``resumable``, the optimisers and scaler too."""
        state: dict[str, Any] = {
            "model": self.stack.state_dict(),
            "ema": self.ema.state_dict(self.stack) if self.ema is not None else None,
            "position": attrs.asdict(self.position),
            "counters": attrs.asdict(self.counters),
        }
        if resumable:
            state["optimisers"] = {
                "stages": [{"generator": s.generator.state_dict(), "discriminator": s.discriminator.state_dict()}
                           for s in self.stages],
                "text_encoder": self.text_encoder.state_dict() if self.text_encoder is not None else None,
            }
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The inverse of :meth:`state_dict`; also reads checkpoints of earlier ganstack versions (optimisers
        and schedulers as flat lists). Raises ``KeyError``/``RuntimeError``/``ValueError`` on a mismatch."""
        self.stack.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] or state["model"])
        optimisers = state["optimisers"] if "optimisers" in state else _from_flat_lists(state)
        for stage, saved in zip(self.stages, optimisers["stages"], strict=True):
            stage.generator.load_state_dict(saved["generator"])
            stage.discriminator.load_state_dict(saved["discriminator"])
        if self.text_encoder is not None and optimisers.get("text_encoder"):
            self.text_encoder.load_state_dict(optimisers["text_encoder"])
        self.scaler.load_state_dict(state["scaler"])
        self.position = Position(**state["position"])
        counters = state["counters"]
        self.counters = Counters(skipped_steps=int(counters["skipped_steps"]), best=counters["best"],
                                 train_seconds=float(counters.get("train_seconds", 0.0)))


def _from_flat_lists(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before the train state: ``g_opts``/``d_opts`` per stage, two schedulers a stage."""
    schedulers = state["schedulers"]
    if len(schedulers) != 2 * len(state["g_opts"]):
        raise ValueError(f"{len(schedulers)} schedulers for {len(state['g_opts'])} stages")
    text = state.get("text_opt")
    return {
        "stages": [{"generator": {"optimizer": g, "scheduler": schedulers[2 * k]},
                    "discriminator": {"optimizer": d, "scheduler": schedulers[2 * k + 1]}}
                   for k, (g, d) in enumerate(zip(state["g_opts"], state["d_opts"], strict=True))],
        # the old text optimiser had no schedule: the new one's never decays either
        "text_encoder": {"optimizer": text, "scheduler": {"step_size": 10**9, "gamma": 1.0}} if text else None,
    }
