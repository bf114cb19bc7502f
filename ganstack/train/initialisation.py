"""Where a new run's weights start: stages from other runs' checkpoints (``init_from``), a pretrained
text encoder (``text_encoder_init``), or the text encoder's own ``prepare`` on the training data."""

from __future__ import annotations

from typing import Any

from ganstack.build.stack import Stack
from ganstack.errors import CheckpointError, UserError
from ganstack.recipe.paths import looked_in, resolve_recipe_path
from ganstack.recipe.resolve import ResolvedRecipe
from ganstack.run_folder.checkpoint import check_weights, load_checkpoint


def init_from_checkpoints(stack: Stack, resolved: ResolvedRecipe) -> bool:
    """Load stage ``i`` from ``stages[i].init_from`` (the paper's Stage-II starts from a trained Stage-I),
    and the text encoder where that checkpoint has its state. True if the text encoder was loaded.

    The weights get the checks a resumed or sampled checkpoint gets (``check_weights``: tensors, every
    key, the shapes, finite values), so a diverged or mismatched run is refused before any step."""
    text_loaded = False
    own = stack.state_dict()
    text_keys = [k for k in own if k.startswith("text_encoder.")]
    for i, spec in enumerate(resolved.recipe.stages):
        if not spec.init_from:
            continue
        key = f"stages[{i}].init_from"
        path, looked = resolve_recipe_path(spec.init_from, resolved.base_dir)
        try:
            state = load_checkpoint(path).get("model")
        except CheckpointError as exc:
            raise CheckpointError(exc.message, file=resolved.file, path=key,
                                  fix=f"{exc.fix} (looked for {looked_in(looked)})") from None
        has_text = isinstance(state, dict) and bool(text_keys) and any(k in state for k in text_keys)
        # all of the text encoder's state or none of it
        wanted = [k for k in own if k.startswith(f"stages.{i}.")] + (text_keys if has_text else [])
        fit = (f"give a checkpoint of a run whose stage {i + 1} (and text encoder) match this recipe's")
        try:
            if state is None:
                raise CheckpointError("it holds no weights ('model')", fix=fit)
            check_weights({k: own[k] for k in wanted}, state, file=str(path), key="model", allow_extra=True,
                          against=f"stage {i + 1}{' and the text encoder' if has_text else ''} of this recipe",
                          fit_fix=fit)
            stack.load_state_dict({k: state[k] for k in wanted}, strict=False)
        except (CheckpointError, RuntimeError, TypeError, ValueError) as exc:
            message, fix = (exc.message, exc.fix) if isinstance(exc, CheckpointError) else (str(exc)[:300], fit)
            raise CheckpointError(f"cannot initialise stage {i + 1} from {path}: {message}", file=resolved.file,
                                  path=key, fix=fix) from None
        text_loaded = text_loaded or has_text
    return text_loaded


def load_pretrained_text_encoder(stack: Stack, resolved: ResolvedRecipe, value: str) -> None:
    from ganstack.train.encoder_pretraining import load_pretrained

    path, looked = resolve_recipe_path(value, resolved.base_dir)
    try:
        load_pretrained(path, stack.text_encoder)
    except UserError as exc:
        fix = exc.fix or "give a file written by `ganstack pretrain-encoder` for this recipe's text encoder"
        raise type(exc)(exc.message, file=resolved.file, path="text_encoder_init",
                        fix=f"{fix} (looked for {looked_in(looked)})") from None


def initialise(stack: Stack, resolved: ResolvedRecipe, dataset: Any) -> None:
    """A new run's starting weights; the text encoder is prepared on the data unless it came from a file."""
    text_loaded = init_from_checkpoints(stack, resolved)
    if resolved.recipe.text_encoder_init:
        load_pretrained_text_encoder(stack, resolved, resolved.recipe.text_encoder_init)
    elif not text_loaded:
        stack.text_encoder.prepare(dataset)
