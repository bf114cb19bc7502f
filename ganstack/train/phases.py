"""The two kinds of training phase as modules, so each trainable component has one ``forward``.

A phase that is one module call per backward is what ``DistributedDataParallel`` needs; calling a
discriminator's ``features``/``cond_logits`` directly several times would bypass DDP's hooks.
"""

from __future__ import annotations

import contextlib
from typing import Any

from torch import Tensor, nn

from ganstack.build.stack import Stack
from ganstack.interfaces import Condition, StageOutput, StepState


class GeneratorPhase(nn.Module):
    """Every generator-side module (text encoder, conditioners, generators) in one forward.

    Stages before the first active one run without gradients (finished stages, stagewise).
    """

    def __init__(self, stack: Stack) -> None:
        super().__init__()
        self.text_encoder = stack.text_encoder
        self.conditioners = nn.ModuleList(s.conditioner for s in stack.stages)
        self.generators = nn.ModuleList(s.generator for s in stack.stages)

    def forward(self, batch: dict[str, Any], z: Tensor, active: list[int],
                train_text: bool) -> tuple[Tensor, list[tuple[Condition, StageOutput]]]:
        with contextlib.nullcontext() if train_text else _no_grad():
            text = self.text_encoder(batch)
        outs: list[tuple[Condition, StageOutput]] = []
        prev: StageOutput | None = None
        for k in range(max(active) + 1):
            with contextlib.nullcontext() if k in active else _no_grad():
                cond = self.conditioners[k](text)
                prev = self.generators[k](z if k == 0 else None, cond, prev)
            outs.append((cond, prev))
        return text, outs


class DiscriminatorPhase(nn.Module):
    """One stage's discriminator and loss modules: one forward gives the stage's D loss terms."""

    def __init__(self, discriminator: nn.Module, losses: nn.ModuleList, index: int) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.losses = losses
        self.index = index

    def forward(self, real: Tensor, fake: Tensor, condition: Condition, text: Tensor,
                wrong_real: Tensor | None, prev_fake: Tensor | None,
                class_id: Tensor | None) -> dict[str, Tensor]:
        state = StepState(stage=self.index, phase="d", discriminator=self.discriminator, real=real, fake=fake,
                          condition=condition, text=text, wrong_real=wrong_real, prev_fake=prev_fake,
                          class_id=class_id)
        return {name: t for loss in self.losses for name, t in loss.d_terms(state).items()}


def _no_grad() -> Any:
    import torch

    return torch.no_grad()
