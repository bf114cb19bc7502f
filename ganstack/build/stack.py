"""The N-stage stack: build every stage's modules from a resolved recipe, in dependency order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ganstack.errors import RecipeError, UserError
from ganstack.interfaces import (
    Condition,
    LossContext,
    StageContext,
    StageOutput,
    TextEncoderContext,
)
from ganstack.recipe.resolve import ResolvedRecipe


class Stage(nn.Module):
    """One stage: its conditioner, generator stage, discriminator and losses."""

    def __init__(self, conditioner: nn.Module, generator: nn.Module, discriminator: nn.Module,
                 losses: list[nn.Module], name: str) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.generator = generator
        self.discriminator = discriminator
        self.losses = nn.ModuleList(losses)
        self.stage_name = name

    @property
    def resolution(self) -> int:
        return int(self.generator.out_size)

    def generator_parts(self) -> list[nn.Module]:
        """What the stage's generator optimiser trains: its conditioner and generator."""
        return [self.conditioner, self.generator]


class Stack(nn.Module):
    """Text encoder plus stages; ``generate`` runs the stages in order, each refining the last."""

    def __init__(self, text_encoder: nn.Module, stages: list[Stage], noise_dim: int) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.stages = nn.ModuleList(stages)
        self.noise_dim = noise_dim

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(s.resolution for s in self.stages)

    def generate(self, text: Tensor, z: Tensor, *, upto: int | None = None,
                 eps: list[Tensor | None] | None = None) -> list[tuple[Condition, StageOutput]]:
        """Run stages ``0..upto`` (all by default) on a text embedding and noise."""
        return run_chain([(s.conditioner, s.generator) for s in self.stages], text, z, upto=upto, eps=eps)


def run_chain(parts: Sequence[tuple[nn.Module, nn.Module]], text: Tensor, z: Tensor, *, upto: int | None = None,
              eps: Sequence[Tensor | None] | None = None,
              with_grad: Callable[[int], bool] | None = None) -> list[tuple[Condition, StageOutput]]:
    """The stage chain, the one way sampling, evaluation and training run it: each stage's
    ``(conditioner, generator)`` on the text and the previous stage's output; ``z`` to the first only.

    ``eps[k]`` fixes stage ``k``'s CA noise (``None``: drawn). A conditioner object shared with an
    earlier stage runs once, in the first stage that has it (with that stage's ``eps``), and its
    condition serves every stage that shares it. ``with_grad(k)`` false runs stage ``k`` without
    gradients (finished stages, stagewise); every stage records them by default.
    """
    last = len(parts) - 1 if upto is None else upto
    results: list[tuple[Condition, StageOutput]] = []
    conditions: dict[int, Condition] = {}
    prev: StageOutput | None = None
    for k in range(last + 1):
        conditioner, generator = parts[k]
        with contextlib.nullcontext() if with_grad is None or with_grad(k) else torch.no_grad():
            cond = conditions.get(id(conditioner))
            if cond is None:
                cond = conditions[id(conditioner)] = conditioner(text, None if eps is None else eps[k])
            prev = generator(z if k == 0 else None, cond, prev)
        results.append((cond, prev))
    return results


def _build(resolved: ResolvedRecipe, path: str, ctx: Any) -> nn.Module:
    """Call one component's factory, reporting a bad option combination at its key path."""
    comp_entry = resolved.entry(path)
    options = _component_at(resolved, path).options
    try:
        return comp_entry.factory(options, ctx)
    except UserError as exc:
        raise type(exc)(exc.message, file=exc.file or resolved.file, path=exc.path or path,
                        fix=exc.fix) from None
    except ValueError as exc:
        raise RecipeError(f"{comp_entry.kind.replace('_', ' ')} '{comp_entry.name}' rejected its "
                          f"options: {exc}", file=resolved.file, path=path,
                          fix="change these options; `ganstack check` shows the resolved values") from None


def _component_at(resolved: ResolvedRecipe, path: str) -> Any:
    from ganstack.recipe.resolve import component_paths

    for p, _kind, comp in component_paths(resolved.recipe):
        if p == path:
            return comp
    raise KeyError(path)


def build_text_encoder(resolved: ResolvedRecipe, device: str = "cpu") -> nn.Module:
    return _build(resolved, "text_encoder", TextEncoderContext(device=device))


def build_stack(resolved: ResolvedRecipe, *, device: str = "cpu") -> Stack:
    """Build the stack on CPU; each child gets the sizes its parent knows."""
    recipe = resolved.recipe
    text_encoder = build_text_encoder(resolved, device)
    text_dim = int(text_encoder.dim)
    stages: list[Stage] = []
    in_size: int | None = None
    in_channels: int | None = None
    n = len(recipe.stages)
    for i, spec in enumerate(recipe.stages):
        base = StageContext(index=i, num_stages=n, text_dim=text_dim, noise_dim=recipe.noise_dim)
        conditioner = _build(resolved, f"stages[{i}].conditioner", base)
        ctx = attrs.evolve(base, cond_dim=int(conditioner.out_dim), in_size=in_size,
                           in_feature_channels=in_channels)
        generator = _build(resolved, f"stages[{i}].generator", ctx)
        ctx = attrs.evolve(ctx, image_size=int(generator.out_size))
        discriminator = _build(resolved, f"stages[{i}].discriminator", ctx)
        losses = [_build(resolved, f"stages[{i}].losses[{j}]", LossContext(index=i, num_stages=n))
                  for j in range(len(spec.losses))]
        stages.append(Stage(conditioner, generator, discriminator, losses, spec.name or f"stage{i + 1}"))
        in_size, in_channels = int(generator.out_size), int(generator.feature_channels)
    return Stack(text_encoder, stages, recipe.noise_dim)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@attrs.frozen
class ModuleReport:
    stage: str
    role: str
    type: str
    params: int
    output_shape: tuple[int, ...]


def describe_stack(stack: Stack, resolved: ResolvedRecipe, batch: int = 2) -> list[ModuleReport]:
    """Parameter count and output shape of every module, from one small forward pass."""
    rows: list[ModuleReport] = []
    recipe = resolved.recipe
    gen = torch.Generator().manual_seed(0)
    stack.eval()
    with torch.no_grad():
        text = torch.randn(batch, int(stack.text_encoder.dim), generator=gen)
        z = torch.randn(batch, stack.noise_dim, generator=gen)
        rows.append(ModuleReport("-", "text_encoder", recipe.text_encoder.type,
                                 count_params(stack.text_encoder), tuple(text.shape)))
        outputs = stack.generate(text, z)
        for i, (stage, (cond, out)) in enumerate(zip(stack.stages, outputs, strict=True)):
            spec = recipe.stages[i]
            d = stage.discriminator
            logits = d.cond_logits(d.features(out.image), cond, text)
            named: list[tuple[str, str, nn.Module, tuple[int, ...]]] = [
                ("conditioner", spec.conditioner.type, stage.conditioner, tuple(cond.c.shape)),
                ("generator", spec.generator.type, stage.generator, tuple(out.image.shape)),
                ("discriminator", spec.discriminator.type, d, tuple(logits.shape)),
            ]
            rows += [ModuleReport(stage.stage_name, role, kind, count_params(m), shape)
                     for role, kind, m, shape in named]
            rows.append(ModuleReport(stage.stage_name, "generator+conditioner", spec.generator.type,
                                     count_params(stage.conditioner) + count_params(stage.generator),
                                     tuple(out.image.shape)))
    return rows
