"""The ``ganstack`` command line. Heavy imports (torch) happen inside commands, not at start-up."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ganstack import __version__
from ganstack.errors import EXIT_USER_ERROR, UserError

DESCRIPTION = """\
ganstack: stacked text-to-image GANs (StackGAN and friends) assembled from YAML recipes.

Start with:  ganstack run recipes/shapes_quickstart.yaml   (or, from any folder: ganstack run shapes_quickstart)
Recipes name a text encoder, a dataset and a list of stages; `ganstack recipes` lists the shipped ones,
`ganstack plugins` every component a recipe can use, `ganstack check RECIPE` prints a recipe with every
default filled in.
"""


def _main_process() -> bool:
    """False in torchrun's ranks above 0, which train but neither print nor write."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, quiet=not _main_process())


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a recipe key, e.g. --set training.batch_size=32 or "
                   "--set stages.1.discriminator.ndf=32 (VALUE is read as YAML; repeatable; a new `type` "
                   "replaces the component, so give its options after it; stages.1=null drops stage 1, and "
                   "the index one past the end appends one)")


def _seed(text: str) -> int:
    """A --seed: 0 to 2**32 - 1, the range of the recipe's seeds (larger ones overflow the generators)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"a seed is from 0 to {2**32 - 1}, got {value}")
    return value


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganstack", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ganstack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train a recipe (or resume a run)",
                       description="Train the stack a recipe describes. Writes the resolved recipe, "
                       "environment.json, metrics.jsonl, samples/ and checkpoints/ to the output folder. "
                       "Ctrl-C or SIGTERM finishes the step, writes a checkpoint and exits 0 (a second one exits "
                       "130 at once, after any checkpoint being written); `ganstack run --resume RUN_DIR` "
                       "continues exactly where it stopped. One run at a time writes a folder (it is locked).")
    p.add_argument("recipe", nargs="?", help="recipe YAML file (not needed with --resume RUN_DIR)")
    _add_set(p)
    p.add_argument("--out", help="output folder (default runs/<recipe-name>-<timestamp>)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in --out) from its last checkpoint; RUN_DIR may also "
                   "be that checkpoint (RUN_DIR/checkpoints/last.pt)")
    p.add_argument("--max-steps", type=int, help="stop cleanly (with a checkpoint) at this step (above 0)")
    p.add_argument("--max-minutes", type=float,
                   help="stop cleanly (with a checkpoint) after training this long in this process (above 0)")

    p = sub.add_parser("check", help="validate a recipe and print it resolved",
                       description="Validate a recipe and print it fully resolved (after base: and --set) "
                       "with every default filled in, as YAML. Components print as the recipe names them; "
                       "the recipe.yaml a run saves names each one's plugin (PLUGIN:NAME). The stack is sized "
                       "first, without allocating it: one that cannot fit in memory to train is refused with "
                       "the estimate.")
    p.add_argument("recipe", help="recipe YAML file or shipped recipe name")
    _add_set(p)
    p.add_argument("--params", action="store_true",
                   help="build the stack and print each module's parameter count and output shape")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML / a table")

    p = sub.add_parser("plugins", help="list installed plugins and what they register",
                       description="List every registered component by kind, with the plugin and "
                       "distribution that provides it, and plugins that failed to load. "
                       "`ganstack plugins show NAME` prints one component's options.")
    p.add_argument("--json", action="store_true", help="print JSON")
    plugins_sub = p.add_subparsers(dest="plugins_command", metavar="ACTION")
    show = plugins_sub.add_parser(
        "show", help="one component: its plugin, distribution, summary and every option",
        description="Print a component's kind, plugin, distribution and summary, and every option with "
        "its type, default, checks and documentation: what a recipe may write under {type: NAME}.")
    show.add_argument("name", metavar="NAME", help="a component name, or KIND:NAME or PLUGIN:NAME where "
                      "several kinds or plugins share it (e.g. ca, loss:matching-aware, stackgan:ca)")
    show.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("recipes", help="list the recipes that ship with ganstack",
                       description="List the recipes that ship with ganstack, by name, with one line each. "
                       "Run one by name from any folder (`ganstack run shapes_quickstart`), or start your own "
                       "recipe from one with `base: shapes_quickstart.yaml`: a recipe named on the command line "
                       "or by `base:` is looked for as a path (next to the recipe, then in the working folder) "
                       "first, then among these.")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("sample", help="draw images for your own sentences from a trained run",
                       description="Draw images from a run folder or checkpoint: one PNG per caption, sample "
                       "and stage, a manifest.jsonl (caption, index, stage, resolution, file, seed) and "
                       "contact_sheet.png with the caption beside each row and one column per stage (its first "
                       "100 rows; every image is in the PNGs and the manifest). Images are drawn 64 at a time.")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT", help="a run folder (uses checkpoints/last.pt) or a .pt file")
    p.add_argument("--text", action="append", default=[], help="a sentence to draw (repeatable)")
    p.add_argument("--captions", help="a text file with one caption per line")
    p.add_argument("--embeddings", help="a .npy file (captions x dim) for encoders that cannot read text (precomputed)")
    p.add_argument("--n", type=int, default=1, help="images per caption (sample i uses seed SEED+i)")
    p.add_argument("--seed", type=_seed, default=0, help="noise seed (0 to 4294967295)")
    p.add_argument("--stage", choices=["all", "last"], default="all", help="write every stage or only the last")
    p.add_argument("--out", help="output folder (default RUN_DIR/samples-cli)")
    p.add_argument("--ca-variations", type=int, metavar="K",
                   help="fixed noise and text, K Conditioning Augmentation samples of the first --text")
    p.add_argument("--interpolate", nargs=2, metavar=("TEXT_A", "TEXT_B"),
                   help="interpolate the condition between two sentences, noise fixed")
    p.add_argument("--steps", type=int, default=8, help="interpolation steps (with --interpolate)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1",
                   help="where to draw, for a run whose stack takes a box (GAWWN): fractions of the image side, "
                   "origin top left, for every caption; outlined on the contact sheet and kept in the manifest")
    p.add_argument("--keypoints", metavar="FILE.json",
                   help="part locations, for a run whose stack takes keypoints: a JSON list of [x, y, visible] "
                   "triples (fractions, origin top left), one per part, or {\"keypoints\": [...]}; each visible part "
                   "a dot on the contact sheet, all kept in the manifest")
    _add_device(p)
    p.add_argument("--no-ema", action="store_true", help="use the trained weights even where the run kept an EMA")

    from ganstack.evaluate.protocols import PROTOCOLS

    p = sub.add_parser("eval", help="score a trained run with metric plugins",
                       description="Score a run folder or checkpoint with metrics (default: the recipe's "
                       "evaluation.metrics, or the --protocol's). Prints a table and writes eval.json beside the "
                       "checkpoint (or to --out), each score with the network and weights hash that gave it. "
                       "Nothing downloads: Inception weights are a file you pass.")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder or a .pt checkpoint")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="a registered metric (repeatable): inception-score, fid, shapes-alignment, r-precision, ...")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS),
                   help="score as the literature does (docs/metrics.md): " + "; ".join(
                       f"{name}: {proto.summary}" for name, proto in sorted(PROTOCOLS.items()))
                   + ". Sets each metric's network, split, captions, splits and number of images; without "
                   "--metric, runs all of its metrics")
    p.add_argument("--n", type=int, help="images per metric (default: the protocol's, else the recipe's "
                   "evaluation.n)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="the Inception state dict for inception-score and fid (both); give one metric its own "
                   "file with --option fid.weights=PATH")
    p.add_argument("--option", action="append", default=[], metavar="[METRIC.]KEY=VALUE",
                   help="set an option on every chosen metric that has it (--option split=holdout), or on one "
                   "(--option fid.network=pytorch-fid)")
    p.add_argument("--out", help="where to write eval.json (default: beside the checkpoint)")
    _add_device(p)

    p = sub.add_parser("pretrain-encoder", help="pretrain a recipe's text encoder against images",
                       description="Train the recipe's text encoder (char-cnn-rnn, word-gru or bow) with the symmetric "
                       "joint-embedding loss of Reed et al. against a small image encoder, on the recipe's "
                       "training data, and save it. Start a run from it with `text_encoder_init: FILE`; "
                       "score generated images with the r-precision metric (encoder_checkpoint: FILE).")
    p.add_argument("recipe", help="recipe YAML file or shipped recipe name")
    _add_set(p)
    p.add_argument("--out", required=True, help="file to write (.pt)")
    p.add_argument("--steps", type=int, default=2000, help="training steps")
    p.add_argument("--batch-size", type=int, default=40, help="pairs per step")
    p.add_argument("--lr", type=float, default=7e-4, help="Adam learning rate")
    _add_device(p)

    p = sub.add_parser("import", help="turn files made by other code (official checkpoints, encoders) into ganstack's",
                       description="Run an importer plugin: `ganstack import` lists them, "
                       "`ganstack import KIND --help` shows a kind's flags.", add_help=False)
    p.add_argument("kind", nargs="?", metavar="KIND", help="the importer, e.g. stackgan-pytorch")
    p.add_argument("import_args", nargs=argparse.REMAINDER, metavar="...", help="the importer's own flags")

    p = sub.add_parser("data", help="look at a recipe's data as the stack sees it")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    d = data_sub.add_parser("preview", help="write real examples as PNGs with a manifest.jsonl",
                            description="Write real examples of a recipe's dataset at every stage "
                            "resolution: one PNG per example and stage, plus manifest.jsonl (with each "
                            "example's box and keypoints where the dataset yields them).")
    d.add_argument("recipe", help="recipe YAML file or shipped recipe name")
    _add_set(d)
    d.add_argument("--split", default="train", help="train, test or holdout (shapes)")
    d.add_argument("--n", type=int, default=16, help="number of examples")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--draw", action="store_true",
                   help="draw each example's location fields over its PNGs, where the dataset yields them: the "
                   "box as a magenta outline, each visible keypoint as a dot of its own hue (part 1 red, then "
                   "round the colour wheel in part order); the manifest records them either way")
    return parser


# ---------------------------------------------------------------------------------------- commands
def _find_components(registry: Any, name: str) -> list[Any]:
    """Entries named ``NAME``, ``KIND:NAME`` or ``PLUGIN:NAME``, or a PluginError saying what exists."""
    from ganstack.components.registry import KINDS
    from ganstack.errors import PluginError, did_you_mean

    prefix, _, short = name.rpartition(":")
    found = [e for e in registry.entries() if e.name == short
             and (not prefix or prefix in (e.kind, e.plugin))]
    if not found:
        names = sorted({e.name for e in registry.entries()})
        raise PluginError(f"no component '{name}' is registered{did_you_mean(short, names)}", path="NAME",
                          fix="`ganstack plugins` lists every component; write NAME, KIND:NAME (kinds: "
                          f"{', '.join(KINDS)}) or PLUGIN:NAME")
    return found


def _show_components(args: argparse.Namespace, registry: Any) -> int:
    from ganstack.components.describe import options_of

    entries = _find_components(registry, args.name)
    described = [{"kind": e.kind, "name": e.name, "plugin": e.plugin, "qualified_name": e.qualified_name,
                  "distribution": e.distribution, "version": e.version, "summary": e.summary,
                  "options": [{"name": o.name, "type": o.type, "default": o.default, "checks": list(o.checks),
                               "doc": o.doc} for o in options_of(e.options)]} for e in entries]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    lines: list[str] = []
    for d in described:
        dist = f"{d['distribution']} {d['version'] or ''}".strip() if d["distribution"] else "- (not installed)"
        lines += [f"{d['kind']} '{d['name']}'", f"  summary:       {d['summary'] or '-'}",
                  f"  plugin:        {d['plugin']}", f"  distribution:  {dist}",
                  f"  in a recipe:   {{type: {d['name']}, ...options}} (or {{type: {d['qualified_name']}}} to "
                  "choose this plugin's)", "  options:" if d["options"] else "  options:       none"]
        for o in d["options"]:
            lines += [f"    {o['name']}", f"      type:     {o['type']}", f"      default:  {o['default']}"]
            if o["checks"]:
                lines.append(f"      checks:   {', '.join(o['checks'])}")
            lines.append(f"      doc:      {o['doc'] or '(undocumented)'}")
        lines.append("")
    print("\n".join(lines).rstrip())
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from ganstack.components.loader import load_plugins
    from ganstack.components.registry import KINDS

    state = load_plugins()
    if args.plugins_command == "show":
        return _show_components(args, state.registry)
    entries = state.registry.entries()
    if args.json:
        data = {
            "components": [{"kind": e.kind, "name": e.name, "plugin": e.plugin,
                            "distribution": e.distribution, "version": e.version, "summary": e.summary}
                           for e in entries],
            "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version,
                         "error": p.error, "disabled": p.disabled} for p in state.plugins.values()],
        }
        print(json.dumps(data, indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    for kind in KINDS:
        table = Table(title=kind, title_justify="left", show_lines=False, expand=False)
        for col in ("name", "plugin", "distribution", "summary"):
            table.add_column(col, overflow="fold")
        for e in state.registry.entries(kind):
            dist = f"{e.distribution} {e.version}" if e.distribution else "-"
            table.add_row(*(escape(text) for text in (e.name, e.plugin, dist, e.summary)))  # keep [brackets]
        console.print(table)
    for p in state.plugins.values():
        if p.error:
            console.print(f"[red]failed[/red] plugin '{escape(p.name)}' ({escape(str(p.distribution))}): "
                          f"{escape(p.error)}")
        elif p.disabled:
            console.print(f"[yellow]disabled[/yellow] plugin '{escape(p.name)}' (GANSTACK_DISABLE_PLUGINS)")
    console.print("`ganstack plugins show NAME` prints a component's options.", markup=False)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from ganstack.recipe.paths import recipe_summary, shipped_recipes, shipped_recipes_dir

    recipes = {name: recipe_summary(path) for name, path in shipped_recipes().items()}
    if args.json:
        print(json.dumps([{"name": name, "description": text} for name, text in recipes.items()], indent=2))
        return 0
    if not recipes:
        raise UserError(f"no shipped recipes found in {shipped_recipes_dir()}",
                        fix="reinstall ganstack; its wheel carries the recipes as package data")
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="shipped recipes (ganstack run NAME, or base: NAME.yaml)", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("description", overflow="fold")
    for name, text in recipes.items():
        table.add_row(escape(name), escape(text))
    _console().print(table)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import yaml

    from ganstack.build.stack import build_stack, check_size, describe_stack
    from ganstack.recipe.resolve import load_recipe, to_data

    resolved = load_recipe(args.recipe, args.overrides)
    if not args.params:
        check_size(resolved)  # a width that cannot fit is refused here, not half-way through `run`
        data = to_data(resolved.recipe, providers=False)
        print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    rows = describe_stack(build_stack(resolved), resolved)
    if args.json:
        print(json.dumps([{"stage": r.stage, "role": r.role, "type": r.type, "params": r.params,
                           "output_shape": list(r.output_shape)} for r in rows], indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"{resolved.recipe.name}: modules", title_justify="left")
    for col, justify in (("stage", "left"), ("module", "left"), ("type", "left"), ("parameters", "right"),
                         ("output shape", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.stage, r.role, r.type, f"{r.params:,}", str(list(r.output_shape)))
    _console().print(table)
    return 0


def _default_out(name: str) -> Path:
    import time

    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _positive_budget(args: argparse.Namespace) -> None:
    """``--max-steps 0`` would train the whole recipe and a negative one a single step: refuse both."""
    for flag, value in (("--max-steps", args.max_steps), ("--max-minutes", args.max_minutes)):
        if value is not None and not value > 0:
            raise UserError(f"{flag} must be positive, got {value}", path=flag,
                            fix=f"give {flag} a number above 0, or leave it out to train the recipe's whole schedule")


def _resume_folder(args: argparse.Namespace) -> Path:
    """The run folder ``--resume`` names: a folder, or a checkpoint file inside its ``checkpoints/``."""
    from ganstack.train.trainer import run_folder_of

    target = Path(args.out) if args.resume is True and args.out else (
        Path(args.resume) if isinstance(args.resume, str) else None)
    if target is None:
        raise UserError("--resume needs the run folder", fix="write --resume RUN_DIR (or --out RUN_DIR --resume)")
    return target if not target.is_file() else run_folder_of(target)


def cmd_run(args: argparse.Namespace) -> int:
    from ganstack.recipe.resolve import load_recipe
    from ganstack.run_folder.lock import lock_run_folder
    from ganstack.train.progress import Progress
    from ganstack.train.trainer import Trainer, trainer_from_checkpoint

    _positive_budget(args)
    console = _console()
    progress = Progress(console)
    kwargs = {"max_steps": args.max_steps, "max_minutes": args.max_minutes, "report": console.print,
              "progress": progress}
    lock = None
    try:
        if args.resume is not None:
            run_dir = _resume_folder(args)
            if args.overrides:
                raise UserError("--set cannot change a run that is being resumed",
                                fix="resume without --set, or start a new run with --out")
            target = Path(args.resume) if isinstance(args.resume, str) else run_dir
            if _main_process() and run_dir.is_dir():
                lock = lock_run_folder(run_dir, flag="--resume")
            trainer = trainer_from_checkpoint(target, **kwargs)
            console.print(f"Resuming {trainer.out_dir} at step {trainer.position.step}.")
        else:
            if not args.recipe:
                raise UserError("no recipe given", fix="write `ganstack run recipes/shapes_quickstart.yaml`, "
                                "or `ganstack run --resume RUN_DIR` to continue a run")
            resolved = load_recipe(args.recipe, args.overrides)
            out = Path(args.out) if args.out else Path(resolved.recipe.output.dir or _default_out(resolved.recipe.name))
            if _main_process():
                _prepare_out(out)
                lock = lock_run_folder(out)  # before the check: two runs started at once cannot both pass it
            if (out / "checkpoints" / "last.pt").exists():
                raise UserError(f"{out} already holds a run", path="--out",
                                fix=f"continue it with `ganstack run --resume {out}`, or choose another --out")
            console.print(f"Building {resolved.recipe.name} and preparing its data (generated or cached on first "
                          "use)...")
            trainer = Trainer(resolved, out, **kwargs)
            if _main_process():
                import yaml

                from ganstack.atomic import write_text_atomic
                from ganstack.recipe.resolve import to_data

                write_text_atomic(out / "recipe.yaml", yaml.safe_dump(to_data(resolved.recipe), sort_keys=False))
            console.print(f"Training [bold]{resolved.recipe.name}[/bold]: {len(trainer.stack.stages)} stage(s) "
                          f"at {list(trainer.stack.resolutions)} px on {trainer.device}, writing to {out}")
        result = trainer.run()
    finally:
        if lock is not None:
            lock.release()
    out_dir = Path(result["out_dir"])
    samples = sorted((out_dir / "samples").glob("*.png"))
    console.print(f"Run {result['ended']} at step {result['step']}. Samples: "
                  f"{samples[-1] if samples else out_dir / 'samples'}; checkpoint: {result['checkpoint']}")
    if result["ended"] != "finished":
        console.print(f"Continue with: ganstack run --resume {out_dir}")
    console.print(f'Draw from your own sentence: ganstack sample {out_dir} --text "..." (see `ganstack sample --help`)')
    if result["world_size"] > 1:
        console.print(f"{result['world_size']} processes; replicas in sync: {result['replicas_in_sync']}")
    return 0


def _prepare_out(out: Path) -> None:
    """Fail early, with a clear message, when the output folder cannot be written. The probe file has
    a name of its own (two runs started at once into one folder must not delete each other's)."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write to the output folder {out}: {exc.strerror or exc}", path="--out",
                        fix="choose a writable folder with --out") from None


def cmd_sample(args: argparse.Namespace) -> int:
    from ganstack.interfaces import BOX, KEYPOINTS
    from ganstack.sample.draw import FIELD_FLAGS, load, read_captions, read_embeddings, write_samples
    from ganstack.sample.fields import parse_box, read_keypoints

    if args.n < 1 or (args.ca_variations is not None and args.ca_variations < 1) or args.steps < 2:
        raise UserError("--n and --ca-variations must be at least 1 and --steps at least 2",
                        fix="give positive counts")
    box = parse_box(args.box) if args.box is not None else None  # a bad value fails before the run loads
    model = load(args.run, device=args.device, ema=not args.no_ema)
    given: dict[str, Any] = {}
    if box is not None:
        given[BOX] = box
    if args.keypoints is not None:
        given[KEYPOINTS] = read_keypoints(Path(args.keypoints), model.keypoint_count())
    for name, flag in FIELD_FLAGS.items():
        if name in given and name not in model.needed_fields():
            takes = ", ".join(sorted(model.needed_fields())) or "no conditioning fields"
            raise UserError(f"{flag} was given, but this run's stack does not take a {name} (it takes {takes})",
                            path=flag, fix=f"leave out {flag}, or sample a run trained with a stack that takes a {name}")
    texts = list(args.text) + (read_captions(Path(args.captions)) if args.captions else [])

    def fields(rows: int) -> dict[str, Any]:  # the one box / set of keypoints, for every caption
        return {name: value.expand(rows, *value.shape) for name, value in given.items()}

    if args.interpolate:
        samples = model.interpolate(*args.interpolate, args.steps, seed=args.seed, fields=fields(1))
    elif args.ca_variations:
        if not texts:
            raise UserError("--ca-variations needs a sentence", fix='add --text "a sentence"')
        samples = model.ca_variations(texts[0], args.ca_variations, seed=args.seed, fields=fields(1))
    else:
        embeddings = read_embeddings(Path(args.embeddings)) if args.embeddings else None
        if embeddings is not None and texts and len(texts) != len(embeddings):
            raise UserError(f"{len(texts)} captions but {len(embeddings)} embedding rows", file=args.embeddings,
                            fix="give one embedding row per caption, or no captions")
        count = len(embeddings) if embeddings is not None else len(texts)
        samples = model.generate(texts, n=args.n, seed=args.seed, embeddings=embeddings, fields=fields(count))
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else run_dir / "samples-cli"
    result = write_samples(samples, out, stages=args.stage, resolutions=model.resolutions)
    _console().print(f"Wrote {result['images']} images from step {model.step}: {result['contact_sheet']} "
                     f"(manifest: {result['manifest']})")
    return 0


def _metric_options(assignments: Sequence[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``--option`` values: those for every metric, and those for one (``METRIC.KEY=VALUE``)."""
    from ganstack.recipe.files import parse_yaml

    common: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option '{assignment}' is not KEY=VALUE", path="--option",
                            fix="write e.g. --option split=holdout or --option fid.weights=FILE")
        metric, dot, name = key.strip().rpartition(".")
        try:
            value = parse_yaml(raw, file=None, what="value")
        except UserError as exc:
            raise UserError(f"--option '{assignment}': {exc.message}", path="--option", fix=exc.fix) from None
        (scoped.setdefault(metric, {}) if dot else common)[name] = value
    return common, scoped


def _eval_plan(args: argparse.Namespace, resolved: Any) -> tuple[list[Any], dict[str, dict[str, Any]], Any]:
    """The metric components to build, the options each gets on top of its own, and the protocol."""
    from ganstack.evaluate.protocols import PROTOCOLS
    from ganstack.recipe.schema import Component

    common, scoped = _metric_options(args.option)
    if args.inception_weights:
        common["weights"] = args.inception_weights
    protocol = PROTOCOLS[args.protocol] if args.protocol else None
    in_recipe = {c.type: c for c in resolved.recipe.evaluation.metrics}
    if protocol is not None:
        names = list(dict.fromkeys(args.metric)) or list(protocol.metrics)
        outside = [m for m in names if m not in protocol.metrics]
        if outside:
            raise UserError(f"the {protocol.name} protocol does not define '{outside[0]}' (it scores "
                            f"{', '.join(protocol.metrics)})", path="--metric",
                            fix=f"drop --metric {outside[0]}, or score it in a run without --protocol")
        chosen = [in_recipe.get(name, Component(name, {})) for name in names]
    else:
        chosen = [Component(name, {}) for name in args.metric] or list(resolved.recipe.evaluation.metrics)
    if not chosen:
        raise UserError("no metric to run", fix="name one with --metric (`ganstack plugins` lists them), add "
                        "evaluation.metrics to the recipe, or score by a --protocol")
    unknown = sorted(set(scoped) - {c.type for c in chosen})
    if unknown:
        raise UserError(f"--option {unknown[0]}.KEY names no chosen metric (chosen: "
                        f"{', '.join(c.type for c in chosen)})", path="--option",
                        fix="prefix the key with a metric being run, or choose that metric with --metric")
    overrides: dict[str, dict[str, Any]] = {}
    for comp in chosen:
        given = {**common, **scoped.get(comp.type, {})}
        if protocol is not None:
            fixed = protocol.metrics[comp.type]
            for key, value in given.items():
                if key in fixed and value != fixed[key]:
                    raise UserError(f"--option {key}={value} changes what the {protocol.name} protocol fixes for "
                                    f"{comp.type} ({key}={fixed[key]})", path="--option",
                                    fix="drop that option to score by the protocol, or drop --protocol to score "
                                    "with other settings")
            given = {**given, **fixed}
            own = comp.options if isinstance(comp.options, dict) else {}
            if "weights" not in given and "weights" not in own and not hasattr(comp.options, "weights"):
                raise UserError(f"the {protocol.name} protocol's {comp.type} needs its weights file: "
                                f"{protocol.weights[comp.type]}", path="--option",
                                fix=f"pass it with --option {comp.type}.weights=PATH (nothing is downloaded; "
                                "docs/metrics.md says where each file comes from)")
        overrides[comp.type] = given
    return chosen, overrides, protocol


def cmd_eval(args: argparse.Namespace) -> int:
    from ganstack.evaluate.scoring import build_metric, evaluate, prepare_metrics
    from ganstack.run_folder.record import write_json
    from ganstack.sample.draw import load

    model = load(args.run, device=args.device)
    resolved = model.resolved
    chosen, overrides, protocol = _eval_plan(args, resolved)
    metrics = [(comp.type, build_metric(comp, device=str(model.device), path=f"metrics[{j}]", file=str(args.run),
                                        overrides=overrides[comp.type], recipe_dir=resolved.base_dir,
                                        registry=resolved.registry))
               for j, comp in enumerate(chosen)]
    counts = {name: args.n or (protocol.n[name] if protocol is not None else resolved.recipe.evaluation.n)
              for name, _ in metrics}
    prepare_metrics(metrics)  # every weights file is checked before the first metric generates
    results: dict[str, Any] = {}
    for count in dict.fromkeys(counts.values()):  # a protocol may score its metrics on different numbers
        results.update(evaluate(model, resolved, [m for m in metrics if counts[m[0]] == count], count))
    n: int | dict[str, int] = counts[metrics[0][0]] if len(set(counts.values())) == 1 else counts
    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "eval.json"
    record: dict[str, Any] = {"checkpoint": str(args.run), "step": model.step, "n": n, "results": results}
    console = _console()
    if protocol is not None:
        record["protocol"] = protocol.settings()
        changed = {name: count for name, count in counts.items() if count != protocol.n[name]}
        if changed:
            record["protocol"]["note"] = (
                "n=" + ", ".join(f"{count} for {name} (the protocol: {protocol.n[name]})"
                                 for name, count in changed.items()) + ": not comparable with published scores")
            console.print(f"Note: {record['protocol']['note']}", markup=False)
    write_json(out, record)
    from rich.table import Table

    images = n if isinstance(n, int) else " / ".join(f"{c} for {name}" for name, c in n.items())
    title = f"evaluation at step {model.step} ({images} images{', ' + protocol.name + ' protocol' if protocol else ''})"
    table = Table(title=title, title_justify="left")
    table.add_column("value")
    table.add_column("result", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"Wrote {out}")
    return 0


def cmd_pretrain_encoder(args: argparse.Namespace) -> int:
    from ganstack.build.dataset import build_dataset
    from ganstack.build.devices import resolve_device
    from ganstack.build.stack import build_stack, build_text_encoder
    from ganstack.recipe.resolve import load_recipe, structure
    from ganstack.train.encoder_pretraining import PretrainOptions, pretrain_and_save

    resolved = load_recipe(args.recipe, args.overrides)
    encoder = build_text_encoder(resolved)
    if not any(p.requires_grad for p in encoder.parameters()):
        raise UserError(f"the text encoder '{resolved.recipe.text_encoder.type}' has nothing to train",
                        file=args.recipe, path="text_encoder.type", fix="use char-cnn-rnn, word-gru or bow (with trainable: true)")
    resolutions = build_stack(resolved).resolutions
    dataset = build_dataset(resolved, "train", resolutions)
    options = structure({"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                         "seed": resolved.recipe.training.seed}, PretrainOptions, file=None, path="--")
    console = _console()

    def log(step: int, metrics: dict[str, float]) -> None:
        console.print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    device = resolve_device(args.device)
    result = pretrain_and_save(encoder.to(device), dataset, args.out, options, device=device, log=log)
    console.print(f"Wrote {args.out}: retrieval accuracy {result['retrieval_accuracy']:.3f} "
                  f"(chance {result['chance']:.3f}). Use it with text_encoder_init: {args.out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command != "preview":
        raise UserError("missing action", fix="use `ganstack data preview RECIPE --out DIR`")
    from ganstack.build.dataset import build_dataset
    from ganstack.build.stack import build_stack
    from ganstack.interfaces import LOCATION_FIELDS, fields_of
    from ganstack.recipe.resolve import load_recipe
    from ganstack.sample.preview import write_preview

    resolved = load_recipe(args.recipe, args.overrides)
    stack = build_stack(resolved)
    dataset = build_dataset(resolved, args.split, stack.resolutions)
    manifest = write_preview(dataset, stack.resolutions, Path(args.out), args.n, args.split, draw=args.draw)
    _console().print(f"Wrote {args.n} examples x {len(stack.resolutions)} resolutions; manifest: {manifest}")
    if args.draw and not set(LOCATION_FIELDS) & fields_of(dataset):
        _console().print(f"Nothing drawn: {resolved.recipe.dataset.type} gives no box or keypoints here "
                         "(docs/datasets.md#boxes-and-keypoints says which datasets do)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ganstack.cli.importing import run_import

    console = _console()
    return run_import(args.kind, args.import_args, report=lambda line: console.print(line, markup=False))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "check": cmd_check, "plugins": cmd_plugins, "recipes": cmd_recipes, "data": cmd_data, "sample": cmd_sample,
    "eval": cmd_eval, "pretrain-encoder": cmd_pretrain_encoder, "import": cmd_import,
}


def _show_user_error(exc: UserError) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]Error:[/bold red] {escape(str(exc))}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    warnings.formatwarning = lambda message, category, *_a, **_k: f"Warning: {message}\n"
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        _show_user_error(exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _console(stderr=True).print("Interrupted.")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
