"""The N-stage stack: build every stage's modules from a resolved recipe, in dependency order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ganstack.build.estimate import StackSize, require_fits, saved_input_bytes, stack_size
from ganstack.components.shared import SharedConditionerOptions
from ganstack.errors import PluginError, RecipeError, UserError
from ganstack.interfaces import (
    WORD_FIELDS,
    Condition,
    Conditioner,
    GeneratorStage,
    LossContext,
    StageContext,
    StageOutput,
    TextEncoder,
    TextEncoderContext,
    as_text_features,
    field_requests,
    word_dim_of,
)
from ganstack.recipe.resolve import ResolvedRecipe, place_of


class Stage(nn.Module):
    """One stage: its conditioner, generator stage, discriminator and losses.

    ``conditioner_source`` is the 0-based index of the stage that owns the conditioner: this
    stage's own index, or an earlier one's when the recipe says ``conditioner: {type: shared}``
    (then ``conditioner`` is that stage's module object).
    """

    def __init__(self, conditioner: nn.Module, generator: nn.Module, discriminator: nn.Module,
                 losses: list[nn.Module], name: str, conditioner_source: int | None = None,
                 index: int = 0) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.generator = generator
        self.discriminator = discriminator
        self.losses = nn.ModuleList(losses)
        self.stage_name = name
        self.conditioner_source = index if conditioner_source is None else conditioner_source
        self.shares_conditioner = self.conditioner_source != index

    @property
    def resolution(self) -> int:
        return int(self.generator.out_size)

    def generator_parts(self) -> list[nn.Module]:
        """What the stage's generator optimiser trains: its generator and the conditioner it owns
        (a shared conditioner belongs to the stage that owns it, so each parameter has one optimiser)."""
        return [self.generator] if self.shares_conditioner else [self.conditioner, self.generator]


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
                 eps: list[Tensor | None] | None = None,
                 fields: dict[str, Tensor] | None = None) -> list[tuple[Condition, StageOutput]]:
        """Run stages ``0..upto`` (all by default) on a text embedding and noise; ``fields`` holds the
        conditioning fields (and word features) the components request (see :func:`stack_fields`)."""
        return run_chain([(s.conditioner, s.generator) for s in self.stages], text, z, upto=upto, eps=eps,
                         fields=fields)

    def requested_fields(self) -> frozenset[str]:
        """Every field a component of the stack requests (``words`` as ``words`` and ``word_mask``)."""
        return stack_fields(self)

    def data_fields(self) -> frozenset[str]:
        """The requested fields that come from the data (not the text encoder's words)."""
        return stack_fields(self) - set(WORD_FIELDS)


def stack_fields(stack: Stack) -> frozenset[str]:
    """What the stack's components ask ``fields`` to hold (``ganstack.interfaces.field_requests``)."""
    wanted: set[str] = set()
    for s in stack.stages:
        for m in (s.conditioner, s.generator, s.discriminator, *s.losses):
            wanted |= field_requests(m)
    return frozenset(wanted)


def with_fields(module: nn.Module, fields: dict[str, Tensor] | None) -> dict[str, Any]:
    """The keyword arguments a component is called with: ``{"fields": what it requested}``, or ``{}``
    for one that requests nothing (called exactly as before requests existed)."""
    wanted = field_requests(module)
    if not wanted:
        return {}
    given = fields or {}
    missing = sorted(wanted - set(given))
    if missing:
        raise UserError(f"a component ({type(module).__name__}) needs the conditioning field '{missing[0]}', "
                        "which was not given", fix=f"give '{missing[0]}' for every caption (`ganstack sample` "
                        "--box / --keypoints; in Python, generate(..., fields={...}))")
    return {"fields": {n: given[n] for n in sorted(wanted)}}


def run_chain(parts: Sequence[tuple[nn.Module, nn.Module]], text: Tensor, z: Tensor, *, upto: int | None = None,
              eps: Sequence[Tensor | None] | None = None,
              with_grad: Callable[[int], bool] | None = None,
              fields: dict[str, Tensor] | None = None) -> list[tuple[Condition, StageOutput]]:
    """The stage chain, the one way sampling, evaluation and training run it: each stage's
    ``(conditioner, generator)`` on the text and the previous stage's output; ``z`` to the first only.

    ``eps[k]`` fixes stage ``k``'s CA noise (``None``: drawn). A conditioner object shared with an
    earlier stage runs once, in the first stage that has it (with that stage's ``eps``), and its
    condition serves every stage that shares it. ``with_grad(k)`` false runs stage ``k`` without
    gradients (finished stages, stagewise); every stage records them by default. A component that
    requests fields gets what it requested from ``fields`` (:func:`with_fields`).
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
                cond = conditions[id(conditioner)] = conditioner(text, None if eps is None else eps[k],
                                                                 **with_fields(conditioner, fields))
            prev = generator(z if k == 0 else None, cond, prev, **with_fields(generator, fields))
        results.append((cond, prev))
    return results


def text_and_fields(encoded: Any, batch: dict[str, Any], wanted: frozenset[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """A text encoder's output as the sentence vector, and the fields the components ``wanted``: the
    encoder's ``words``/``word_mask`` and the batch's own (the dataset's, checked by the trainer)."""
    features = as_text_features(encoded)
    fields = {n: batch[n] for n in sorted(wanted - set(WORD_FIELDS))}
    if "words" in wanted:
        fields["words"], fields["word_mask"] = features.words, features.mask
    return features.sentence, fields


EXAMPLE_WORDS = 8  # words per caption in the example word features of check --params and the estimate


def example_fields(stack: Stack, batch: int, *, device: str | torch.device = "cpu",
                   generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Field values for a forward pass without data: each requesting component's ``example_fields``,
    and word features of the encoder's size where ``words`` is requested."""
    wanted = stack_fields(stack)
    fields: dict[str, Tensor] = {}
    if "words" in wanted:
        dim = word_dim_of(stack.text_encoder)
        words = (torch.randn(batch, EXAMPLE_WORDS, dim, generator=generator) if generator is not None
                 else torch.zeros(batch, EXAMPLE_WORDS, dim))
        fields["words"] = words.to(device)
        fields["word_mask"] = torch.ones(batch, EXAMPLE_WORDS, dtype=torch.bool).to(device)
    for s in stack.stages:
        for m in (s.conditioner, s.generator, s.discriminator, *s.losses):
            needs = field_requests(m) - set(WORD_FIELDS) - set(fields)
            if not needs:
                continue
            if not callable(getattr(m, "example_fields", None)):
                raise PluginError(f"{type(m).__name__} requests the field(s) {', '.join(sorted(needs))} but offers "
                                  "no example_fields(batch_size), which ganstack.interfaces.ExampleFields declares "
                                  "for a forward pass without data (ganstack check --params)",
                                  fix="give the plugin's module an example_fields method")
            given = m.example_fields(batch)
            fields.update({n: torch.as_tensor(given[n]).to(device) for n in needs if n in given})
    return fields


# What the core reads from each kind once built (methods are called, so a missing one fails loudly).
_DECLARED = {"text_encoder": TextEncoder, "conditioner": Conditioner, "generator_stage": GeneratorStage}


def _check_declared(module: Any, resolved: ResolvedRecipe, path: str) -> None:
    """The attributes ``ganstack.interfaces`` declares for the kind, present, or a PluginError naming them."""
    entry = resolved.entry(path)
    protocol = _DECLARED.get(entry.kind)
    missing = [name for name in getattr(protocol, "__annotations__", {}) if not hasattr(module, name)]
    if missing:
        raise PluginError(f"{entry.kind.replace('_', ' ')} '{entry.name}' of plugin {entry.source()} does not "
                          f"offer {', '.join(map(repr, missing))}, which ganstack.interfaces.{protocol.__name__} "
                          "declares", file=resolved.file, path=path,
                          fix="set them in the plugin's module (or use another component)")


def _build(resolved: ResolvedRecipe, path: str, ctx: Any) -> nn.Module:
    """Call one component's factory, reporting a bad option combination at its key path."""
    comp_entry = resolved.entry(path)
    options = _component_at(resolved, path).options
    try:
        module = comp_entry.factory(options, ctx)
        _check_declared(module, resolved, path)
        return module
    except UserError as exc:  # the core adds the file and the component's key path
        raise type(exc)(exc.message, file=exc.file or resolved.file, path=place_of(path, exc.path),
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


def _conditioner_source(resolved: ResolvedRecipe, i: int) -> int:
    """The stage whose conditioner stage ``i`` uses: ``i`` itself, or the one ``shared`` names."""
    options = resolved.recipe.stages[i].conditioner.options
    if not isinstance(options, SharedConditionerOptions):
        return i
    source = options.stage - 1
    if source >= i:
        raise RecipeError(f"stage {i + 1} shares the conditioner of stage {options.stage}, which is not an "
                          f"earlier stage", file=resolved.file, path=f"stages[{i}].conditioner.stage",
                          fix=f"name an earlier stage (1 to {i}), or give this stage its own conditioner"
                          if i else "give the first stage its own conditioner (e.g. {type: ca})")
    return _conditioner_source(resolved, source)


def build_text_encoder(resolved: ResolvedRecipe, device: str = "cpu") -> nn.Module:
    return _build(resolved, "text_encoder", TextEncoderContext(device=device, recipe_dir=resolved.base_dir))


def build_stack(resolved: ResolvedRecipe, *, device: str = "cpu", for_training: bool = True) -> Stack:
    """Build the stack on CPU; each child gets the sizes its parent knows.

    First the parameters are counted on a ``meta`` build (no memory), and a stack that cannot fit is
    refused (:func:`~ganstack.build.estimate.require_fits`; ``for_training`` also counts gradients and
    optimiser state against the training device).
    """
    check_size(resolved, for_training=for_training)
    return _build_stack(resolved, device)


def check_size(resolved: ResolvedRecipe, *, for_training: bool = True) -> StackSize | None:
    """Estimate the stack's size without allocating it and refuse one that cannot fit (``ganstack check``)."""
    size = estimate_stack(resolved)
    if size is not None:
        require_fits(size, for_training=for_training, device=resolved.recipe.training.device, file=resolved.file)
    return size


def estimate_stack(resolved: ResolvedRecipe) -> StackSize | None:
    """Parameters per component from a build on the ``meta`` device, or None for a plugin that cannot
    build there (it is then built for real without an estimate). Option errors propagate as they would."""
    try:
        with torch.device("meta"):
            stack = _build_stack(resolved, "meta")
    except UserError:
        raise
    except Exception:  # a plugin computing with tensor values while it builds; meta tensors have none
        return None
    parts: list[tuple[str, nn.Module]] = [("text_encoder", stack.text_encoder)]
    for i, stage in enumerate(stack.stages):
        parts += [(f"stages[{i}].conditioner", stage.conditioner), (f"stages[{i}].generator", stage.generator),
                  (f"stages[{i}].discriminator", stage.discriminator)]
        parts += [(f"stages[{i}].losses[{j}]", loss) for j, loss in enumerate(stage.losses)]
    batch = int(resolved.recipe.training.batch_size)
    activations = _meta_activations(stack, batch)
    batches: dict[str, int] = {}
    if resolved.recipe.training.schedule == "stagewise":  # a stage's own batch size: its activations scale
        for i, spec in enumerate(resolved.recipe.stages):
            key = f"stages[{i}]"
            if spec.batch_size is not None:
                batches[key] = spec.batch_size
                if key in activations:
                    activations[key] = activations[key] * spec.batch_size // batch
    if resolved.recipe.training.amp != "off":  # 16-bit activations: half of what float32 meta tensors count
        activations = {k: v // 2 for k, v in activations.items()}
    return stack_size(parts, activations, batch, batches)


def _meta_activations(stack: Stack, batch: int) -> dict[str, int]:
    """Per stage, a lower bound on the bytes one training batch keeps for the backward pass, from a
    forward pass on ``meta``; empty when a module cannot run there."""
    result: dict[str, int] = {}
    try:
        with torch.no_grad():
            text = torch.zeros(batch, int(stack.text_encoder.dim), device="meta")
            fields = example_fields(stack, batch, device="meta")
            prev = None
            for i, stage in enumerate(stack.stages):
                g_count, handles = saved_input_bytes(stage.generator_parts())
                try:
                    cond = stage.conditioner(text, None, **with_fields(stage.conditioner, fields))
                    prev = stage.generator(torch.zeros(batch, stack.noise_dim, device="meta") if i == 0 else None,
                                           cond, prev, **with_fields(stage.generator, fields))
                finally:
                    for h in handles:
                        h.remove()
                d_count, handles = saved_input_bytes([stage.discriminator])
                try:
                    d = stage.discriminator
                    d.cond_logits(d.features(prev.image), cond, text, **with_fields(d, fields))
                finally:
                    for h in handles:
                        h.remove()
                # the generator step keeps the generator's, a discriminator step at least the discriminator's
                result[f"stages[{i}]"] = max(g_count[0], d_count[0])
    except Exception:  # an operation meta tensors do not support: the parameter estimate stands alone
        return {}
    return result


def _build_stack(resolved: ResolvedRecipe, device: str) -> Stack:
    recipe = resolved.recipe
    text_encoder = build_text_encoder(resolved, device)
    text_dim = int(text_encoder.dim)
    word_dim = word_dim_of(text_encoder)
    stages: list[Stage] = []
    in_size: int | None = None
    in_channels: int | None = None
    n = len(recipe.stages)
    for i, spec in enumerate(recipe.stages):
        base = StageContext(index=i, num_stages=n, text_dim=text_dim, noise_dim=recipe.noise_dim, word_dim=word_dim)
        source = _conditioner_source(resolved, i)
        conditioner = (stages[source].conditioner if source != i
                       else _build(resolved, f"stages[{i}].conditioner", base))
        ctx = attrs.evolve(base, cond_dim=int(conditioner.out_dim), in_size=in_size,
                           in_feature_channels=in_channels)
        generator = _build(resolved, f"stages[{i}].generator", ctx)
        ctx = attrs.evolve(ctx, image_size=int(generator.out_size))
        discriminator = _build(resolved, f"stages[{i}].discriminator", ctx)
        losses = [_build(resolved, f"stages[{i}].losses[{j}]",
                         LossContext(index=i, num_stages=n, key_path=f"stages[{i}].losses[{j}]",
                                     discriminator_fields=field_requests(discriminator)))
                  for j in range(len(spec.losses))]
        stages.append(Stage(conditioner, generator, discriminator, losses, spec.name or f"stage{i + 1}",
                            conditioner_source=source, index=i))
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
        fields = example_fields(stack, batch, generator=gen)
        outputs = stack.generate(text, z, fields=fields)
        for i, (stage, (cond, out)) in enumerate(zip(stack.stages, outputs, strict=True)):
            spec = recipe.stages[i]
            d = stage.discriminator
            logits = d.cond_logits(d.features(out.image), cond, text, **with_fields(d, fields))
            own_conditioner = 0 if stage.shares_conditioner else count_params(stage.conditioner)
            conditioner_type = (f"shared (stage {stage.conditioner_source + 1})" if stage.shares_conditioner
                                else spec.conditioner.type)
            rows += [ModuleReport(stage.stage_name, "conditioner", conditioner_type, own_conditioner,
                                  tuple(cond.c.shape)),
                     ModuleReport(stage.stage_name, "generator", spec.generator.type,
                                  count_params(stage.generator), tuple(out.image.shape)),
                     ModuleReport(stage.stage_name, "discriminator", spec.discriminator.type, count_params(d),
                                  tuple(logits.shape)),
                     ModuleReport(stage.stage_name, "generator+conditioner", spec.generator.type,
                                  own_conditioner + count_params(stage.generator), tuple(out.image.shape))]
        whole = nn.ModuleList([m for s in stack.stages for m in (s.conditioner, s.generator)])
        rows.append(ModuleReport("-", "generator (all stages)", "-", count_params(whole),
                                 tuple(outputs[-1][1].image.shape)))
    return rows
