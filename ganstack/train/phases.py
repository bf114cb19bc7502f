"""The two kinds of training phase as modules, so each trainable component has one ``forward``.

A phase that is one module call per backward is what ``DistributedDataParallel`` needs; calling a
discriminator's ``features``/``cond_logits`` directly several times would bypass DDP's hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ganstack.build.stack import Stack, run_chain, stack_fields, text_and_fields
from ganstack.errors import UserError
from ganstack.interfaces import Condition, StageOutput, StepState

RESERVED_TERMS = frozenset({"d_total"})  # the trainer logs each stage's D total under this name


def merge_terms(per_loss: Sequence[dict[str, Tensor]], paths: Sequence[str], stage: int, phase: str,
                file: str | None = None) -> dict[str, Tensor]:
    """One stage's terms of one phase, by name; two losses naming a term alike is an error (one
    would silently replace the other in the optimised total)."""
    merged: dict[str, Tensor] = {}
    owner: dict[str, str] = {}
    for terms, path in zip(per_loss, paths, strict=True):
        for name, value in terms.items():
            if name in owner or name in RESERVED_TERMS:
                other = f"{owner[name]} and {path}" if name in owner else f"{path} (the trainer's own total)"
                raise UserError(f"stage {stage + 1}: two {phase} loss terms are named '{name}': {other}; one "
                                "would replace the other in the optimised total", file=file, path=path,
                                fix="remove one of the two losses from the stage, or give one of them options "
                                "that rename its terms (each term is logged as stageK/NAME)")
            merged[name] = value
            owner[name] = path
    return merged


class GeneratorPhase(nn.Module):
    """Every generator-side module (text encoder, conditioners, generators) in one forward.

    Stages before the first active one run without gradients (finished stages, stagewise).
    ``chain`` runs the same modules again for ``StepState.generate`` inside the same backward: under
    DDP it is called on the wrapped module's inner module, which is sound because it uses no parameter
    the forward did not already use (DDP's hooks fire per parameter once the whole backward has
    accumulated its gradient, so the second use adds to the same reduced gradient).
    """

    def __init__(self, stack: Stack) -> None:
        super().__init__()
        self.text_encoder = stack.text_encoder
        self.conditioners = nn.ModuleList(s.conditioner for s in stack.stages)
        self.generators = nn.ModuleList(s.generator for s in stack.stages)
        self.wanted = stack_fields(stack)

    def forward(self, batch: dict[str, Any], z: Tensor, active: list[int], train_text: bool
                ) -> tuple[Tensor, dict[str, Tensor], list[tuple[Condition, StageOutput]]]:
        with contextlib.nullcontext() if train_text else torch.no_grad():
            text, fields = text_and_fields(self.text_encoder(batch), batch, self.wanted)
        return text, fields, self.chain(text, z, active, fields, upto=max(active))

    def chain(self, text: Tensor, z: Tensor, active: list[int], fields: dict[str, Tensor],
              *, upto: int) -> list[tuple[Condition, StageOutput]]:
        parts = list(zip(self.conditioners, self.generators, strict=True))
        return run_chain(parts, text, z, upto=upto, with_grad=lambda k: k in active, fields=fields)


class DiscriminatorPhase(nn.Module):
    """One stage's discriminator and loss modules: one forward gives the stage's D loss terms."""

    def __init__(self, discriminator: nn.Module, losses: nn.ModuleList, index: int,
                 paths: Sequence[str], file: str | None = None) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.losses = losses
        self.index = index
        self.paths = list(paths)
        self.file = file

    def forward(self, real: Tensor, fake: Tensor, condition: Condition, text: Tensor,
                wrong_real: Tensor | None, prev_fake: Tensor | None,
                class_id: Tensor | None, fields: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        state = StepState(stage=self.index, phase="d", discriminator=self.discriminator, real=real, fake=fake,
                          condition=condition, text=text, wrong_real=wrong_real, prev_fake=prev_fake,
                          class_id=class_id, fields=fields)
        return merge_terms([loss.d_terms(state) for loss in self.losses], self.paths, self.index, "discriminator",
                           self.file)
