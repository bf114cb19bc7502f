"""The ``stackgan-pytorch`` importer: the official StackGAN-Pytorch netG/netD files as a ganstack run.

The official code (hanzhanggit/StackGAN-Pytorch) saves ``STAGE1_G``/``STAGE1_D`` for a Stage-I
run and ``STAGE2_G``/``STAGE2_D`` for a Stage-II run, whose netG holds the frozen Stage-I under
``STAGE1_G.``. ganstack's StackGAN components compute the same functions with other parameter
names, so importing is renaming: each official key maps by rule onto the recipe's stack, after
the settings read from the tensors' shapes (widths, residual count, condition size, image size)
were checked against the recipe, so that a file that does not fit is refused by naming the
recipe values that would fit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor

from ganstack.errors import CheckpointError, UserError
from ganstack.interfaces import ImportContext
from ganstack.recipe.resolve import ResolvedRecipe
from ganstack_defaults.official.legacy import (
    WRAPPER_PREFIX,
    is_legacy_file,
    load_state_dict_file,
    strip_wrapper_prefix,
)

STAGE1_PREFIX = "STAGE1_G."
NAMES = {"G1": "STAGE1_G (a Stage-I generator)", "G2": "STAGE2_G (a Stage-II generator)",
         "D1": "STAGE1_D (a 64x64 discriminator)", "D2": "STAGE2_D (a 256x256 discriminator)"}
# The official settings of the shipped recipes, to point at the one a file was trained with.
KNOWN = {(128, 64, 4): "recipes/stackgan_cub.yaml (or stackgan_flowers.yaml)",
         (192, 96, 2): "recipes/stackgan_coco.yaml"}


# ------------------------------------------------------------------------------------ key rules
def _g1_key(key: str) -> str | None:
    """A ``STAGE1_G`` key as the stage's ``conditioner.``/``generator.`` key."""
    if m := re.fullmatch(r"ca_net\.fc\.(weight|bias)", key):
        return f"conditioner.net.0.{m[1]}"
    if m := re.fullmatch(r"fc\.([01])\.(\w+)", key):
        return f"generator.fc.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"upsample([1-9]\d*)\.([12])\.(\w+)", key):
        return f"generator.up.{int(m[1]) - 1}.{m[2]}.{m[3]}"
    if key == "img.0.weight":
        return "generator.to_image.0.weight"
    return None


_ENCODER = {"0": "0", "2": "2.0", "3": "2.1", "5": "3.0", "6": "3.1"}


def _g2_key(key: str) -> str | None:
    """A ``STAGE2_G`` key (its own part, not ``STAGE1_G.``) as the refiner stage's key."""
    if m := re.fullmatch(r"encoder\.(\d+)\.(\w+)", key):
        return f"generator.encode.{_ENCODER[m[1]]}.{m[2]}" if m[1] in _ENCODER else None
    if m := re.fullmatch(r"hr_joint\.([01])\.(\w+)", key):
        return f"generator.joint.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"residual\.(\d+)\.block\.([0134])\.(\w+)", key):
        return f"generator.residual.{m[1]}.body.{m[2]}.{m[3]}"
    if key.startswith("ca_net.") or key.startswith("upsample") or key.startswith("img."):
        return _g1_key(key)
    return None


def _d_key(key: str) -> str | None:
    """A ``STAGE1_D``/``STAGE2_D`` key as the stage's ``discriminator.`` key.

    The official ``encode_img`` is one Sequential of (conv, [BN], LeakyReLU) triples after a first
    (conv, LeakyReLU) pair: its conv ``3i - 1`` and BN ``3i`` are ganstack's block ``i``.
    """
    if m := re.fullmatch(r"encode_img\.(\d+)\.(\w+)", key):
        n = int(m[1])
        if n == 0:
            return f"discriminator.image_path.0.0.{m[2]}"
        if n % 3 == 1:
            return None  # activations hold no tensors
        return f"discriminator.image_path.{(n + 1) // 3}.{0 if n % 3 == 2 else 1}.{m[2]}"
    if m := re.fullmatch(r"get_cond_logits\.outlogits\.([013])\.(\w+)", key):
        return f"discriminator.cond_head.{ {'0': '0.0', '1': '0.1', '3': '1'}[m[1]] }.{m[2]}"
    if m := re.fullmatch(r"get_uncond_logits\.outlogits\.0\.(\w+)", key):
        return f"discriminator.uncond_head.{m[1]}"
    return None


KEY_RULES: dict[str, Callable[[str], str | None]] = {"G1": _g1_key, "G2": _g2_key, "D1": _d_key, "D2": _d_key}
TARGETS = {"G1": ("conditioner.", "generator."), "G2": ("conditioner.", "generator."),
           "D1": ("discriminator.",), "D2": ("discriminator.",)}


# ----------------------------------------------------------------------------- official parts
@attrs.define
class Part:
    """One official network, as read from a file: which it is, the stage it fills, its tensors."""

    kind: str  # G1, G2, D1, D2
    stage: int
    state: dict[str, Tensor]
    file: str
    flag: str

    @property
    def role(self) -> str:
        return "generator" if self.kind.startswith("G") else "discriminator"


def _refuse_v2(state: dict[str, Tensor], file: str, flag: str) -> None:
    if any(k.startswith(("h_net1.", "h_net2.", "img_net1.")) for k in state):
        what = "G_NET (its keys start with h_net1.)"
    elif any(k.startswith(("img_code_s16.", "jointConv.")) for k in state):
        what = "D_NET64/128/256 (its keys start with img_code_s16.)"
    else:
        return
    raise CheckpointError(f"this is a StackGAN-v2 file, {what}, not a StackGAN-Pytorch (v1) one", file=file,
                          path=flag, fix="import it with `ganstack import stackgan-v2` and a StackGAN-v2 "
                          "recipe (recipes/stackgan_v2_cub.yaml)")


def identify(state: dict[str, Tensor], file: str, flag: str) -> str:
    """G1, G2 or D1/D2 (by depth), from the keys; anything else is refused."""
    _refuse_v2(state, file, flag)
    if "encoder.0.weight" in state and "hr_joint.0.weight" in state:
        return "G2"
    if "fc.0.weight" in state and "ca_net.fc.weight" in state:
        return "G1"
    if "encode_img.0.weight" in state and "get_cond_logits.outlogits.0.weight" in state:
        return "D2" if _downs(state) > 4 else "D1"
    shown = ", ".join(list(state)[:4])
    raise CheckpointError(f"not an official StackGAN-Pytorch netG or netD (its first keys: {shown})", file=file,
                          path=flag, fix="give a netG_epoch_N.pth or netD_epoch_last.pth written by "
                          "StackGAN-Pytorch's trainer")


def read_parts(file: str, flag: str, role: str, stage_of: dict[str, int]) -> tuple[list[Part], list[str]]:
    """The networks in one file (a Stage-II netG is two: itself and the Stage-I inside), and notes
    about how the file was read."""
    raw = load_state_dict_file(file, flag=flag)
    state = strip_wrapper_prefix(raw)
    notes = []
    if is_legacy_file(file):
        notes.append("a legacy (PyTorch < 1.6) pickle, read with weights_only")
    if any(k.startswith(WRAPPER_PREFIX) for k in raw):
        notes.append("saved from DataParallel: the 'module.' prefix of its keys was dropped")
    kind = identify(state, file, flag)
    if ("G" if role == "generator" else "D") != kind[0]:
        raise CheckpointError(f"{flag} takes a {role}, but the file holds {NAMES[kind]}", file=file, path=flag,
                              fix="netG files go to NETG / --stage1-netG, netD files to --netD / --stage1-netD")
    if kind == "G2":
        inner = {k[len(STAGE1_PREFIX):]: v for k, v in state.items() if k.startswith(STAGE1_PREFIX)}
        own = {k: v for k, v in state.items() if not k.startswith(STAGE1_PREFIX)}
        parts = [Part("G2", stage_of["G2"], own, file, flag)]
        if inner:
            parts.append(Part("G1", stage_of["G1"], inner, file, flag + " (its STAGE1_G.*)"))
        return parts, notes
    return [Part(kind, stage_of[kind], state, file, flag)], notes


def _downs(state: dict[str, Tensor]) -> int:
    """Stride-2 (4x4) convolutions of an official D's encode_img."""
    return sum(1 for k, v in state.items()
               if re.fullmatch(r"encode_img\.\d+\.weight", k) and v.dim() == 4 and v.shape[-1] == 4)


def _count(state: dict[str, Tensor], pattern: str) -> int:
    return len({m[1] for k in state if (m := re.fullmatch(pattern, k))})


# --------------------------------------------------------------------------- fitting the recipe
def _shape(state: dict[str, Tensor], key: str, file: str, flag: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"the file has no '{key}', which every official network of its kind has",
                              file=file, path=flag, fix="give an unmodified netG/netD file of StackGAN-Pytorch")
    return state[key].shape


def disagreements(part: Part, resolved: ResolvedRecipe, text_dim: int, resolutions: tuple[int, ...]) -> list[str]:
    """Every recipe value that makes this part's official network differ from the recipe's stage."""
    recipe = resolved.recipe
    i, s, f, g = part.stage, part.state, part.file, part.flag
    if i >= len(recipe.stages):
        return [f"stages: the recipe has {len(recipe.stages)} stage(s) but {g} holds {NAMES[part.kind]} for "
                f"stage {i + 1}; use a two-stage recipe such as recipes/stackgan_cub.yaml"]
    spec = recipe.stages[i]
    out: list[str] = []

    def check(path: str, found: Any, made: Any, what: str, fix: str) -> None:
        if found != made:
            out.append(f"stages[{i}].{path}: the file has {what.format(found)} where the recipe makes "
                       f"{what.format(made)}; set {fix}")

    def opt(component: Any, name: str) -> Any:
        return getattr(component.options, name, None)

    if part.kind in ("G1", "G2"):
        cond, text = (int(n) for n in _shape(s, "ca_net.fc.weight", f, g))
        cond //= 2
        cd = spec.conditioner
        if cd.type != "ca" or opt(cd, "activation") != "relu":
            out.append(f"stages[{i}].conditioner: the file's Conditioning Augmentation is Linear -> ReLU where the "
                       f"recipe has {cd.type}" + (f" ({opt(cd, 'activation')})" if cd.type == "ca" else "")
                       + "; set type: ca, activation: relu")
        else:
            check("conditioner.condition_dim", cond, opt(cd, "condition_dim"), "a {}-d condition",
                  f"condition_dim: {cond}")
        if text != text_dim:
            out.append(f"text_encoder.dim: the file reads {text}-d text embeddings where the recipe gives "
                       f"{text_dim}; set dim: {text} (Reed's char-CNN-RNN embeddings are 1024-d)")
    gen, ups = spec.generator, _count(s, r"upsample(\d+)\.1\.weight")
    if part.kind == "G1":
        width = int(_shape(s, "upsample1.1.weight", f, g)[1])
        if gen.type != "stackgan-stage1":
            out.append(f"stages[{i}].generator.type: the file holds a StackGAN Stage-I generator where the recipe "
                       f"has '{gen.type}'; set type: stackgan-stage1")
        else:
            check("generator.ngf", width, 8 * opt(gen, "ngf"), "{} channels at 4x4", f"ngf: {width // 8}")
            check("generator.out_size", 4 << ups, opt(gen, "out_size"), "{0}x{0} images", f"out_size: {4 << ups}")
        z = int(_shape(s, "fc.0.weight", f, g)[1]) - cond
        if z != recipe.noise_dim:
            out.append(f"noise_dim: the file's fc takes z of {z} (and a {cond}-d condition) where the recipe "
                       f"gives {recipe.noise_dim}; set noise_dim: {z}")
    elif part.kind == "G2":
        ngf = int(_shape(s, "encoder.0.weight", f, g)[0])
        blocks = _count(s, r"residual\.(\d+)\.block\.0\.weight")
        if gen.type != "stackgan-refiner":
            out.append(f"stages[{i}].generator.type: the file holds a StackGAN Stage-II generator where the recipe "
                       f"has '{gen.type}'; set type: stackgan-refiner")
        else:
            check("generator.ngf", ngf, opt(gen, "ngf"), "{} channels after its first conv", f"ngf: {ngf}")
            check("generator.residual_blocks", blocks, opt(gen, "residual_blocks"), "{} residual blocks",
                  f"residual_blocks: {blocks}")
            scale = 1 << max(ups - 2, 0)  # two of its up blocks undo the encoder's two down blocks
            check("generator.scale", scale, opt(gen, "scale"), "an up-scaling of {}", f"scale: {scale}")
            check("generator.input", "image", opt(gen, "input"), "'{}' input", "input: image")
    else:
        ndf = int(_shape(s, "encode_img.0.weight", f, g)[0])
        size = 4 << _downs(s)
        joint = int(_shape(s, "get_cond_logits.outlogits.0.weight", f, g)[1])
        feature = int(_shape(s, "get_cond_logits.outlogits.0.weight", f, g)[0])
        dis = spec.discriminator
        made = resolutions[i]
        if dis.type != "matching-aware" or opt(dis, "condition") != "mu":
            out.append(f"stages[{i}].discriminator: the file's D joins the CA mean to its 4x4 features where the "
                       f"recipe has {dis.type}" + (f" (condition: {opt(dis, 'condition')})" if dis.type ==
                                                   "matching-aware" else "")
                       + "; set type: matching-aware, condition: mu")
        else:
            check("discriminator.ndf", ndf, opt(dis, "ndf"), "{} channels in its first conv", f"ndf: {ndf}")
            check("discriminator.unconditional_head", "get_uncond_logits.outlogits.0.weight" in s,
                  opt(dis, "unconditional_head"), "unconditional head: {}",
                  f"unconditional_head: {str('get_uncond_logits.outlogits.0.weight' in s).lower()}")
            cond = opt(spec.conditioner, "condition_dim")
            if cond is not None and joint - feature != cond:
                out.append(f"stages[{i}].conditioner.condition_dim: the file's D joins a {joint - feature}-d "
                           f"condition where the recipe makes {cond}; set condition_dim: {joint - feature}")
        if made != size:
            out.append(f"stages[{i}].discriminator: the file judges {size}x{size} images but stage {i + 1} draws {made}x{made}; "
                       f"give a {size}x{size} discriminator as " + ("--stage1-netD" if size == 64 else "--netD"))
    return out


def mapped(part: Part, own: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The part's tensors under the stack's keys, and what did not fit (unknown keys, shapes)."""
    rule = KEY_RULES[part.kind]
    prefix = f"stages.{part.stage}."
    out: dict[str, Tensor] = {}
    problems: list[str] = []
    for key, value in part.state.items():
        target = rule(key)
        if target is None:
            problems.append(f"'{key}' is not a key of the official {NAMES[part.kind].split()[0]}")
            continue
        full = prefix + target
        if full not in own:
            problems.append(f"'{key}' has no place in the recipe's stage {part.stage + 1} (it would be '{full}')")
        elif own[full].shape != value.shape:
            problems.append(f"'{key}' is {tuple(value.shape)} where the recipe's '{full}' is {tuple(own[full].shape)}")
        else:
            out[full] = value
    wanted = [k for k in own if k.startswith(tuple(prefix + t for t in TARGETS[part.kind]))]
    missing = [k for k in wanted if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        problems.append(f"the file lacks {len(missing)} tensor(s) of the recipe's stage {part.stage + 1}, e.g. "
                        f"'{missing[0]}'")
    return out, problems


# ------------------------------------------------------------------------------------ importer
def _no_num_batches(part: Part) -> bool:
    return not any(k.endswith("num_batches_tracked") for k in part.state)


@attrs.define(frozen=True, kw_only=True)
class StackGANPytorchOptions:
    """The flags of ``ganstack import stackgan-pytorch``."""

    netg: str = attrs.field(metadata={"positional": True, "doc": (
        "the official netG file (netG_epoch_N.pth): a Stage-I run's STAGE1_G fills stage 1, a Stage-II "
        "run's STAGE2_G fills stage 2 and, from the STAGE1_G inside it, stage 1")})
    recipe: str = attrs.field(metadata={"doc": (
        "the recipe whose stack the weights fill, with the official run's settings "
        "(recipes/stackgan_cub.yaml for GF 128/DF 64/R 4, recipes/stackgan_coco.yaml for the released COCO model)")})
    out: str = attrs.field(metadata={"doc": "the run folder to write (checkpoints/last.pt, recipe.yaml, import.json)"})
    net_d: str | None = attrs.field(default=None, metadata={"flag": "--netD", "doc": (
        "the same run's netD file (the trainer writes netD_epoch_last.pth): the discriminator of NETG's stage")})
    stage1_net_g: str | None = attrs.field(default=None, metadata={"flag": "--stage1-netG", "doc": (
        "a Stage-I netG for stage 1, instead of the copy inside a Stage-II NETG")})
    stage1_net_d: str | None = attrs.field(default=None, metadata={"flag": "--stage1-netD", "doc": (
        "the Stage-I run's netD, for stage 1's discriminator when NETG is a Stage-II file")})


def import_stackgan_pytorch(options: StackGANPytorchOptions, ctx: ImportContext) -> Path:
    """Official StackGAN-Pytorch netG/netD files (any PyTorch version) to a ganstack run folder."""
    from ganstack.build.stack import build_stack
    from ganstack.recipe.resolve import load_recipe
    from ganstack_defaults.official.imported_run import check_out_dir, sha256_of, write_imported_run

    out = Path(options.out)
    check_out_dir(out)
    resolved = load_recipe(options.recipe)
    stack = build_stack(resolved)
    own = stack.state_dict()

    parts: list[Part] = []
    notes: dict[str, list[str]] = {}
    main, main_notes = read_parts(options.netg, "NETG", "generator", {"G1": 0, "G2": 1})
    parts += main
    notes[options.netg] = main_notes
    main_stage = 1 if main[0].kind == "G2" else 0
    extra = [(options.net_d, "--netD", "discriminator", {"D1": main_stage, "D2": main_stage}),
             (options.stage1_net_g, "--stage1-netG", "generator", {"G1": 0, "G2": 0}),
             (options.stage1_net_d, "--stage1-netD", "discriminator", {"D1": 0, "D2": 0})]
    for file, flag, role, stage_of in extra:
        if file:
            found, file_notes = read_parts(file, flag, role, stage_of)
            if flag == "--stage1-netG" and found[0].kind == "G2":
                raise CheckpointError("--stage1-netG takes a Stage-I generator, but the file holds "
                                      f"{NAMES['G2']}", file=file, path=flag,
                                      fix="give a Stage-I run's netG, or the Stage-II file as NETG")
            if flag == "--stage1-netD" and main_stage == 0:
                raise UserError("--stage1-netD is for a Stage-II NETG; with a Stage-I NETG, give its netD as --netD",
                                path=flag, fix="write --netD FILE")
            parts += found
            notes[file] = file_notes

    problems: list[str] = []
    for part in parts:
        problems += [f"{item} [{part.flag}]" for item in disagreements(part, resolved, int(stack.text_encoder.dim),
                                                                       stack.resolutions)]
    if not problems:
        for part in parts:
            problems += [f"{item} [{part.flag}]" for item in mapped(part, own)[1]]
    if problems:
        problems.sort()
        files = sorted({p.file for p in parts})
        hint = _shipped_recipe_hint(parts)
        raise CheckpointError(f"the official files do not fit the recipe {options.recipe}: " + "; ".join(problems),
                              file=files[0] if len(files) == 1 else None, path="--recipe",
                              fix="set those values in (a copy of) the recipe and import again." + hint)

    # Later parts win: an explicit --stage1-netG replaces the Stage-I inside a Stage-II NETG.
    filled: dict[tuple[int, str], Part] = {}
    state = dict(own)
    for part in parts:
        tensors, _ = mapped(part, own)
        state.update(tensors)
        if (part.stage, part.role) in filled:
            ctx.report(f"stage {part.stage + 1} {part.role}: from {part.flag} ({part.file}), replacing the one from "
                       f"{filled[(part.stage, part.role)].flag}")
        filled[(part.stage, part.role)] = part
    stack.load_state_dict(state)

    names = [s.name or f"stage{k + 1}" for k, s in enumerate(resolved.recipe.stages)]
    record_parts, kept = [], []
    for k in range(len(resolved.recipe.stages)):
        for role in ("generator", "discriminator"):
            part = filled.get((k, role))
            if part is None:
                kept.append(f"stage {k + 1} ({names[k]}) {role}")
                continue
            record_parts.append({"stage": k + 1, "part": role if role == "discriminator" else "conditioner+generator",
                                 "official": NAMES[part.kind].split()[0], "flag": part.flag, "file": part.file,
                                 "legacy_format": is_legacy_file(part.file),
                                 "had_num_batches_tracked": not _no_num_batches(part)})
            ctx.report(f"stage {k + 1} ({names[k]}) {role}: {NAMES[part.kind].split()[0]} from {part.flag} "
                       f"({Path(part.file).name})")
    for file, file_notes in notes.items():
        for note in file_notes:
            ctx.report(f"{Path(file).name}: {note}")
    if any(_no_num_batches(p) for p in parts):
        ctx.report("no num_batches_tracked entries (written before PyTorch 0.4.1): set to 0; they do not change "
                   "eval-mode outputs")
    for item in kept:
        ctx.report(f"{item}: not in the given files, keeps ganstack's initialisation")
    record = {
        "importer": "stackgan-pytorch",
        "recipe": str(options.recipe),
        "files": {f: {"sha256": sha256_of(f), "notes": n} for f, n in notes.items()},
        "parts": record_parts,
        "kept_initialisation": kept,
    }
    checkpoint = write_imported_run(out, resolved, stack, record)
    ctx.report(f"Wrote {checkpoint}. Draw from it: ganstack sample {out} --embeddings EMBEDDINGS.npy")
    return checkpoint


def _official_settings(parts: list[Part]) -> dict[str, int]:
    """GF, DF and R as far as the given files tell them."""
    found: dict[str, int] = {}
    for p in parts:
        if p.kind == "G2" and "encoder.0.weight" in p.state:
            found["GF"] = int(p.state["encoder.0.weight"].shape[0])
            found["R"] = _count(p.state, r"residual\.(\d+)\.block\.0\.weight")
        elif p.kind == "G1" and "upsample1.1.weight" in p.state:
            found.setdefault("GF", int(p.state["upsample1.1.weight"].shape[1]) // 8)
        elif p.kind in ("D1", "D2") and "encode_img.0.weight" in p.state:
            found["DF"] = int(p.state["encode_img.0.weight"].shape[0])
    return found


def _shipped_recipe_hint(parts: list[Part]) -> str:
    """Name the shipped recipe whose settings the files have, if one has."""
    found = _official_settings(parts)
    for settings, recipe in KNOWN.items():
        if found and all(dict(zip(("GF", "DF", "R"), settings, strict=True))[k] == v for k, v in found.items()):
            shown = ", ".join(f"{k} {v}" for k, v in found.items())
            return f" The files' settings ({shown}) are those of {recipe}."
    return ""


__all__ = ["StackGANPytorchOptions", "disagreements", "identify", "import_stackgan_pytorch",
           "mapped", "read_parts"]
