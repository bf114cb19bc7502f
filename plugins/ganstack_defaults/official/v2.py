"""``ganstack import stackgan-v2``: the authors' StackGAN-v2 checkpoints as a ganstack run folder.

The official trainer saves ``netG_N.pth`` (one ``G_NET``: the shared CA and every branch, with the
generator's moving average in place of its weights) and ``netD0.pth``, ``netD1.pth``, ... (one
``D_NET`` per branch), each a bare ``state_dict``: from PyTorch 0.3/0.4 a legacy (non-zip) pickle
without ``num_batches_tracked``, from a ``DataParallel`` model with ``module.`` before every key.
The ganstack modules of ``stackgan-v2-stage1``/``stackgan-v2-next``/``stackgan-v2`` keep the
official parameter names, so the import is a renaming of prefixes, checked entry by entry against
the recipe's stack before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml
from torch import Tensor, nn

from ganstack.atomic import write_text_atomic
from ganstack.errors import CheckpointError, RecipeError
from ganstack.interfaces import ImportContext

_IGNORED = "num_batches_tracked"  # absent from files written by PyTorch < 0.4.1; a counter, not a weight
_SHOWN = 6  # disagreeing entries named in a refusal


@attrs.define(frozen=True, kw_only=True)
class V2ImportOptions:
    """The command line of ``ganstack import stackgan-v2`` (each field is a flag).

    ``netg``: the official generator file (netG_N.pth: G_NET, the CA and every branch); ``recipe``: a
    StackGAN-v2 recipe of the file's sizes (recipes/stackgan_v2_cub.yaml); ``out``: the run folder to
    write; ``netd0``: the first branch's discriminator file (netD0.pth, optional); ``netd1``: the
    second's (netD1.pth); ``netd2``: the third's (netD2.pth)
    """

    netg: str = attrs.field(metadata={"positional": True,
                                      "doc": "the official generator file (netG_N.pth: G_NET, all branches)"})
    recipe: str = attrs.field(metadata={"doc": "a StackGAN-v2 recipe of the file's sizes, e.g. "
                                               "recipes/stackgan_v2_cub.yaml"})
    out: str = attrs.field(metadata={"doc": "run folder to write (checkpoints/last.pt and recipe.yaml)"})
    netd0: str | None = attrs.field(default=None, metadata={"flag": "--netD0",
                                                            "doc": "the first branch's discriminator (netD0.pth)"})
    netd1: str | None = attrs.field(default=None, metadata={"flag": "--netD1", "doc": "the second's (netD1.pth)"})
    netd2: str | None = attrs.field(default=None, metadata={"flag": "--netD2", "doc": "the third's (netD2.pth)"})


# ----------------------------------------------------------------------------------- reading
def read_state_dict(path: str | Path, flag: str) -> dict[str, Tensor]:
    """A checkpoint's tensors by name, ``module.`` prefixes removed; zip or legacy pickle, read with
    ``weights_only=True`` (tensors and plain containers only: a file asking for anything else is refused)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("file not found", file=str(path), path=flag,
                              fix="give the path of the official .pth file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        asked = re.search(r"GLOBAL ([\w.]+) was not an allowed", str(exc))
        operand = re.search(r"Unsupported operand \d+", str(exc))
        what = (f"it asks to load '{asked.group(1)}', which is not a tensor or a plain container" if asked
                else f"it is not a PyTorch state-dict file ({operand.group(0) if operand else type(exc).__name__})")
        raise CheckpointError(f"cannot read this file as a state dict: {what}", file=str(path), path=flag,
                              fix="give the netG_N.pth / netD*.pth file the official StackGAN-v2 code saved "
                              "(a state_dict of tensors)") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError("this file does not hold a state dict (a mapping of names to tensors)",
                              file=str(path), path=flag,
                              fix="give the netG_N.pth / netD*.pth file the official StackGAN-v2 code saved")
    keys = [str(k) for k in data]
    if all(k.startswith("module.") for k in keys):  # saved from a DataParallel model
        return {k[len("module."):]: v for k, v in zip(keys, data.values(), strict=True)}
    return {str(k): v for k, v in data.items()}


# ------------------------------------------------------------------------- renaming to ganstack
def _generator_targets(stack: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Official G_NET key prefix -> (ganstack module, prefix inside it)."""
    targets: dict[str, tuple[nn.Module, str]] = {"ca_net.fc.": (stack.stages[0].conditioner, "net.0.")}
    for k, stage in enumerate(stack.stages, start=1):
        targets[f"h_net{k}."] = (stage.generator, "")
        targets[f"img_net{k}."] = (stage.generator.head, "")
    return targets


def _rename(file_keys: dict[str, Tensor], targets: dict[str, tuple[nn.Module, str]]
            ) -> tuple[dict[int, dict[str, Tensor]], list[str]]:
    """Group a file's entries by target module (by ``id``), renamed; and the keys no target takes."""
    by_module: dict[int, dict[str, Tensor]] = {}
    unknown: list[str] = []
    for key, value in file_keys.items():
        prefix = next((p for p in sorted(targets, key=len, reverse=True) if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
            continue
        module, inner = targets[prefix]
        by_module.setdefault(id(module), {})[inner + key[len(prefix):]] = value
    return by_module, unknown


def _official_name(targets: dict[str, tuple[nn.Module, str]], module: nn.Module, key: str) -> str:
    for prefix, (m, inner) in targets.items():
        if m is module and key.startswith(inner):
            return prefix + key[len(inner):]
    return key


def _disagreements(file_keys: dict[str, Tensor], targets: dict[str, tuple[nn.Module, str]]) -> list[str]:
    """Every entry where the file and the recipe's stack differ, named as the official code names it."""
    by_module, unknown = _rename(file_keys, targets)
    problems = [f"{k} {tuple(file_keys[k].shape)} (the recipe has no such entry)" for k in unknown]
    seen: set[int] = set()
    for module, _inner in targets.values():
        if id(module) in seen:
            continue
        seen.add(id(module))
        given = by_module.get(id(module), {})
        expected = {k: v for k, v in module.state_dict().items()
                    if not _belongs_to_child(module, k, targets)}
        for name, want in expected.items():
            official = _official_name(targets, module, name)
            if name not in given:
                if not name.endswith(_IGNORED):
                    problems.append(f"{official} (missing from the file; the recipe has {tuple(want.shape)})")
            elif tuple(given[name].shape) != tuple(want.shape):
                problems.append(f"{official} is {tuple(given[name].shape)} in the file, "
                                f"{tuple(want.shape)} in the recipe")
        problems += [f"{_official_name(targets, module, k)} {tuple(v.shape)} (the recipe has no such entry)"
                     for k, v in given.items() if k not in expected]
    return problems


def _belongs_to_child(module: nn.Module, key: str, targets: dict[str, tuple[nn.Module, str]]) -> bool:
    """Whether ``key`` of ``module`` lies in a sub-module that is a target of its own (the image head)."""
    for m, _inner in targets.values():
        if m is module:
            continue
        for name, child in module.named_modules():
            if child is m and name and key.startswith(name + "."):
                return True
    return False


def _load(file_keys: dict[str, Tensor], targets: dict[str, tuple[nn.Module, str]]) -> None:
    by_module, _unknown = _rename(file_keys, targets)
    for module, _inner in {id(m): (m, i) for m, i in targets.values()}.values():
        given = by_module.get(id(module))
        if given:
            result = module.load_state_dict(given, strict=False)
            assert not result.unexpected_keys, result.unexpected_keys  # _disagreements found none


# --------------------------------------------------------------------------- what would fit
def _generator_fit(keys: dict[str, Tensor]) -> str:
    """The recipe values an official G_NET file was built with, read from its shapes."""
    try:
        ca = keys["ca_net.fc.weight"].shape
        fc = keys["h_net1.fc.0.weight"].shape
    except KeyError:
        return ""
    ef = ca[0] // 4
    branches = len({m.group(1) for k in keys if (m := re.match(r"h_net(\d+)\.", k))})
    ups = len({m.group(1) for k in keys if (m := re.match(r"h_net1\.upsample(\d+)\.", k))})
    residual = len({m.group(1) for k in keys if (m := re.match(r"h_net2\.residual\.(\d+)\.", k))})
    parts = [f"{branches} stage(s)", f"text_encoder.dim {ca[1]}", f"stages[0].conditioner.condition_dim {ef}",
             f"noise_dim {fc[1] - ef}", f"stages[0].generator.gf_dim {fc[0] // 512}",
             f"stages[0].generator.out_size {4 << ups}"]
    if branches > 1:
        parts.append(f"residual_blocks {residual} on the later stages")
    return ", ".join(parts)


def _discriminator_fit(keys: dict[str, Tensor]) -> str:
    try:
        df = keys["img_code_s16.0.weight"].shape[0]
        joint = keys["jointConv.0.weight"].shape[1]
    except KeyError:
        return ""
    downs = len({k.split(".")[0] for k in keys if re.match(r"img_code_s\d+\.", k)}) - 1
    return f"df_dim {df}, condition_dim {joint - 8 * df}, a {64 << downs}x{64 << downs} stage"


def _looks_like_v1(keys: dict[str, Tensor]) -> bool:
    return any(k.startswith(("STAGE1_G.", "encode_img.", "get_cond_logits.")) for k in keys) or \
        ("fc.0.weight" in keys and "h_net1.fc.0.weight" not in keys)


def _refuse(path: str, flag: str, recipe: str, problems: list[str], keys: dict[str, Tensor]) -> CheckpointError:
    """One paragraph: which entries disagree, and what the file is or which recipe values would fit it."""
    fit = _generator_fit(keys) if flag == "NETG" else _discriminator_fit(keys)
    shown = "; ".join(problems[:_SHOWN]) + (f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else "")
    if _looks_like_v1(keys):
        return CheckpointError(f"this is a StackGAN-v1 (StackGAN-Pytorch) file, not a StackGAN-v2 one: {shown}",
                               file=path, path=flag,
                               fix="import it with the StackGAN-v1 importer (`ganstack import` lists the importers) "
                               "and a v1 recipe, or give the netG_N.pth / netD*.pth of a StackGAN-v2 run")
    generator_file = any(k.startswith("h_net1.") for k in keys)
    if flag.startswith("--netD") and generator_file:
        return CheckpointError(f"this is a generator file (G_NET), given as a discriminator: {shown}", file=path,
                               path=flag, fix="give netG_N.pth as NETG and the netD0/1/2.pth files as --netD0/1/2")
    if flag == "NETG" and any(k.startswith("img_code_s16.") for k in keys):
        return CheckpointError(f"this is a discriminator file (D_NET), given as the generator: {shown}", file=path,
                               path=flag, fix="give netG_N.pth as NETG and the netD0/1/2.pth files as --netD0/1/2")
    fix = (f"the file was built with {fit}: write these values in the recipe (a recipe with `base:` naming it "
           f"and only the changed keys will do) and import again" if fit
           else "give a StackGAN-v2 file of this recipe's sizes")
    return CheckpointError(f"the file does not fit the stack of {recipe}: {shown}", file=path, path=flag, fix=fix)


# ------------------------------------------------------------------------------------ the import
def _check_recipe_is_v2(stack: nn.Module, recipe: str) -> None:
    from ganstack_defaults.networks.conditioners import ConditioningAugmentation
    from ganstack_defaults.networks.stackgan_v2 import FirstBranch, NextBranch, V2Discriminator

    for i, stage in enumerate(stack.stages):
        want = FirstBranch if i == 0 else NextBranch
        checks = [("generator", stage.generator, want, "stackgan-v2-stage1" if i == 0 else "stackgan-v2-next"),
                  ("discriminator", stage.discriminator, V2Discriminator, "stackgan-v2")]
        for key, module, cls, name in checks:
            if not isinstance(module, cls):
                raise RecipeError(f"this recipe is not a StackGAN-v2 stack: the official files need a {name} "
                                  f"{key} here", file=recipe, path=f"stages[{i}].{key}.type",
                                  fix="use recipes/stackgan_v2_cub.yaml (or a recipe based on it)")
        if i and stage.conditioner is not stack.stages[0].conditioner:
            raise RecipeError("the official G_NET has one CA for all branches, but this stage has its own "
                              "conditioner", file=recipe, path=f"stages[{i}].conditioner",
                              fix="write conditioner: {type: shared, stage: 1}")
    ca = stack.stages[0].conditioner
    if not isinstance(ca, ConditioningAugmentation) or not isinstance(ca.net[1], nn.GLU):
        raise RecipeError("the official G_NET's CA is a linear layer and a GLU", file=recipe,
                          path="stages[0].conditioner", fix="write conditioner: {type: ca, activation: glu}")


def _branches_in_file(netg: dict[str, Tensor], stack: nn.Module) -> tuple[dict[str, tuple[nn.Module, str]], list[str]]:
    """The generator targets the file fills, and the later stages it has no branch for (a G_NET of a
    run with fewer branches than the recipe): those keep ganstack's init."""
    targets = _generator_targets(stack)
    left: list[str] = []
    n = len(stack.stages)
    has = [any(k.startswith((f"h_net{b}.", f"img_net{b}.")) for k in netg) for b in range(1, n + 1)]
    last = max((b for b in range(n) if has[b]), default=0)
    for b in range(last + 1, n):  # trailing branches only; a gap is a file of another layout
        del targets[f"h_net{b + 1}."], targets[f"img_net{b + 1}."]
        left.append(f"{stack.stages[b].stage_name} generator (NETG has no h_net{b + 1})")
    return targets, left


def _step_of(netg: str) -> int:
    match = re.search(r"netG_(\d+)\.pth$", Path(netg).name)
    return int(match.group(1)) if match else 0


def import_stackgan_v2(options: V2ImportOptions, ctx: ImportContext) -> None:
    """Read the official netG (and any netD files), check every entry against the recipe, write a run."""
    from ganstack.build.stack import build_stack
    from ganstack.recipe.resolve import load_recipe, to_data
    from ganstack.run_folder.checkpoint import save_atomic

    out = Path(options.out)
    if (out / "checkpoints" / "last.pt").exists():
        raise CheckpointError("this run folder already holds a checkpoint", file=str(out / "checkpoints" / "last.pt"),
                              path="--out", fix="choose a new --out folder, or delete that one first")
    given_d = (options.netd0, options.netd1, options.netd2)
    read = {"NETG": read_state_dict(options.netg, "NETG")}  # unreadable files fail before the slow build
    read |= {f"--netD{i}": read_state_dict(p, f"--netD{i}") for i, p in enumerate(given_d) if p}
    resolved = load_recipe(options.recipe)
    stack = build_stack(resolved)
    _check_recipe_is_v2(stack, options.recipe)

    targets, left = _branches_in_file(read["NETG"], stack)
    files = [("NETG", options.netg, read["NETG"], targets)]
    for i, given in enumerate(given_d):
        flag = f"--netD{i}"
        if given and i >= len(stack.stages):
            raise CheckpointError(f"the recipe has {len(stack.stages)} stage(s), so it has no discriminator for "
                                  f"{flag}", file=given, path=flag, fix=f"leave out {flag}, or use a recipe of "
                                  f"{i + 1} or more stages")
        if given:
            d = stack.stages[i].discriminator
            files.append((flag, given, read[flag], {"": (d, ""), "uncond_logits.": (d.uncond_logits_head, "")}))
        elif i < len(stack.stages):
            left.append(f"{stack.stages[i].stage_name} discriminator ({flag})")
    left += [f"{stack.stages[i].stage_name} discriminator" for i in range(3, len(stack.stages))]

    for flag, path, keys, targets in files:
        problems = _disagreements(keys, targets)
        if problems:
            raise _refuse(path, flag, options.recipe, problems, keys)
    for _flag, _path, keys, targets in files:
        _load(keys, targets)

    position = {"block": 0, "epoch": 0, "batch": 0, "step": _step_of(options.netg)}
    data = to_data(resolved.recipe)
    checkpoint: dict[str, Any] = {
        "recipe": data, "model": stack.state_dict(), "ema": None, "position": position, "resumable": False,
        "recipe_dir": str(resolved.base_dir) if resolved.base_dir else None,
        "imported": {"importer": "stackgan-v2", "files": {flag: str(Path(p).resolve()) for flag, p, _k, _t in files}},
    }
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_atomic(checkpoint, out / "checkpoints" / "last.pt")
    write_text_atomic(out / "recipe.yaml", yaml.safe_dump(data, sort_keys=False))
    for flag, path, keys, _targets in files:
        ctx.report(f"read {path} ({flag}, {len(keys)} entries)")
    if left:
        ctx.report("not in the given files, so at ganstack's initial weights: " + ", ".join(left))
    ctx.report(f"wrote {out / 'checkpoints' / 'last.pt'} and {out / 'recipe.yaml'}")
