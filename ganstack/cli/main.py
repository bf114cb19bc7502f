"""The ``ganstack`` command line. Heavy imports (torch) happen inside commands, not at start-up."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ganstack import __version__
from ganstack.errors import EXIT_USER_ERROR, UserError

DESCRIPTION = """\
ganstack: stacked text-to-image GANs (StackGAN and friends) assembled from YAML recipes.

Start with:  ganstack run recipes/shapes_quickstart.yaml
Recipes name a text encoder, a dataset and a list of stages; `ganstack plugins` lists every
component a recipe can use, `ganstack check RECIPE` prints a recipe with every default filled in.
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
                   "replaces the component, so give its options after it)")


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
                       "Ctrl-C or SIGTERM finishes the step, writes a checkpoint and exits 0; "
                       "`ganstack run --resume RUN_DIR` continues exactly where it stopped.")
    p.add_argument("recipe", nargs="?", help="recipe YAML file (not needed with --resume RUN_DIR)")
    _add_set(p)
    p.add_argument("--out", help="output folder (default runs/<recipe-name>-<timestamp>)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in --out) from its last checkpoint")
    p.add_argument("--max-steps", type=int, help="stop cleanly (with a checkpoint) after this many steps")
    p.add_argument("--max-minutes", type=float, help="stop cleanly (with a checkpoint) after this long")

    p = sub.add_parser("check", help="validate a recipe and print it resolved",
                       description="Validate a recipe and print it fully resolved (after base: and --set) "
                       "with every default filled in, as YAML.")
    p.add_argument("recipe", help="recipe YAML file")
    _add_set(p)
    p.add_argument("--params", action="store_true",
                   help="build the stack and print each module's parameter count and output shape")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML / a table")

    p = sub.add_parser("plugins", help="list installed plugins and what they register",
                       description="List every registered component by kind, with the plugin and "
                       "distribution that provides it, and plugins that failed to load.")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("sample", help="draw images for your own sentences from a trained run",
                       description="Draw images from a run folder or checkpoint: one PNG per caption, sample "
                       "and stage, a manifest.jsonl (caption, index, stage, resolution, file, seed) and "
                       "contact_sheet.png with the caption beside each row and one column per stage.")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT", help="a run folder (uses checkpoints/last.pt) or a .pt file")
    p.add_argument("--text", action="append", default=[], help="a sentence to draw (repeatable)")
    p.add_argument("--captions", help="a text file with one caption per line")
    p.add_argument("--embeddings", help="a .npy file (captions x dim) for encoders that cannot read text (precomputed)")
    p.add_argument("--n", type=int, default=1, help="images per caption (sample i uses seed SEED+i)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--stage", choices=["all", "last"], default="all", help="write every stage or only the last")
    p.add_argument("--out", help="output folder (default RUN_DIR/samples-cli)")
    p.add_argument("--ca-variations", type=int, metavar="K",
                   help="fixed noise and text, K Conditioning Augmentation samples of the first --text")
    p.add_argument("--interpolate", nargs=2, metavar=("TEXT_A", "TEXT_B"),
                   help="interpolate the condition between two sentences, noise fixed")
    p.add_argument("--steps", type=int, default=8, help="interpolation steps (with --interpolate)")
    _add_device(p)
    p.add_argument("--no-ema", action="store_true", help="use the trained weights even where the run kept an EMA")

    p = sub.add_parser("eval", help="score a trained run with metric plugins",
                       description="Score a run folder or checkpoint with metrics (default: the recipe's "
                       "evaluation.metrics). Prints a table and writes eval.json beside the checkpoint "
                       "(or to --out). Nothing downloads: Inception weights are a file you pass.")
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run folder or a .pt checkpoint")
    p.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="a registered metric (repeatable): inception-score, fid, shapes-alignment, r-precision, ...")
    p.add_argument("--n", type=int, help="images per metric (default: the recipe's evaluation.n)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="torchvision Inception-v3 state dict (or a fine-tuned one) for inception-score and fid")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="set an option on every chosen metric that has it, e.g. --option split=holdout")
    p.add_argument("--out", help="where to write eval.json (default: beside the checkpoint)")
    _add_device(p)

    p = sub.add_parser("pretrain-encoder", help="pretrain a recipe's text encoder against images",
                       description="Train the recipe's text encoder (char-cnn-rnn, word-gru or bow) with the symmetric "
                       "joint-embedding loss of Reed et al. against a small image encoder, on the recipe's "
                       "training data, and save it. Start a run from it with `text_encoder_init: FILE`; "
                       "score generated images with the r-precision metric (encoder_checkpoint: FILE).")
    p.add_argument("recipe", help="recipe YAML file")
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
                            "resolution: one PNG per example and stage, plus manifest.jsonl.")
    d.add_argument("recipe", help="recipe YAML file")
    _add_set(d)
    d.add_argument("--split", default="train", help="train, test or holdout (shapes)")
    d.add_argument("--n", type=int, default=16, help="number of examples")
    d.add_argument("--out", required=True, help="output folder")
    return parser


# ---------------------------------------------------------------------------------------- commands
def cmd_plugins(args: argparse.Namespace) -> int:
    from ganstack.components.loader import load_plugins
    from ganstack.components.registry import KINDS

    state = load_plugins()
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
    from rich.table import Table

    console = _console()
    for kind in KINDS:
        table = Table(title=kind, title_justify="left", show_lines=False, expand=False)
        for col in ("name", "plugin", "distribution", "summary"):
            table.add_column(col, overflow="fold")
        for e in state.registry.entries(kind):
            dist = f"{e.distribution} {e.version}" if e.distribution else "-"
            table.add_row(e.name, e.plugin, dist, e.summary)
        console.print(table)
    for p in state.plugins.values():
        if p.error:
            console.print(f"[red]failed[/red] plugin '{p.name}' ({p.distribution}): {p.error}")
        elif p.disabled:
            console.print(f"[yellow]disabled[/yellow] plugin '{p.name}' (GANSTACK_DISABLE_PLUGINS)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import yaml

    from ganstack.recipe.resolve import load_recipe, to_data

    resolved = load_recipe(args.recipe, args.overrides)
    if not args.params:
        data = to_data(resolved.recipe)
        print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    from ganstack.build.stack import build_stack, describe_stack

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


def cmd_run(args: argparse.Namespace) -> int:
    from ganstack.recipe.resolve import load_recipe
    from ganstack.train.progress import Progress
    from ganstack.train.trainer import Trainer, trainer_from_checkpoint

    console = _console()
    progress = Progress(console)
    kwargs = {"max_steps": args.max_steps, "max_minutes": args.max_minutes, "report": console.print,
              "progress": progress}
    if args.resume is not None:
        run_dir = Path(args.out) if args.resume is True and args.out else (
            Path(args.resume) if isinstance(args.resume, str) else None)
        if run_dir is None:
            raise UserError("--resume needs the run folder", fix="write --resume RUN_DIR (or --out RUN_DIR --resume)")
        if args.overrides:
            raise UserError("--set cannot change a run that is being resumed",
                            fix="resume without --set, or start a new run with --out")
        trainer = trainer_from_checkpoint(run_dir, **kwargs)
        console.print(f"Resuming {run_dir} at step {trainer.position.step}.")
    else:
        if not args.recipe:
            raise UserError("no recipe given", fix="write `ganstack run recipes/shapes_quickstart.yaml`, "
                            "or `ganstack run --resume RUN_DIR` to continue a run")
        resolved = load_recipe(args.recipe, args.overrides)
        out = Path(args.out) if args.out else Path(resolved.recipe.output.dir or _default_out(resolved.recipe.name))
        if (out / "checkpoints" / "last.pt").exists():
            raise UserError(f"{out} already holds a run", path="--out",
                            fix=f"continue it with `ganstack run --resume {out}`, or choose another --out")
        if _main_process():
            _prepare_out(out)
        console.print(f"Building {resolved.recipe.name} and preparing its data (generated or cached on first "
                      "use)...")
        trainer = Trainer(resolved, out, **kwargs)
        if _main_process():
            import yaml

            from ganstack.recipe.resolve import to_data

            (out / "recipe.yaml").write_text(yaml.safe_dump(to_data(resolved.recipe), sort_keys=False),
                                             encoding="utf-8")
        console.print(f"Training [bold]{resolved.recipe.name}[/bold]: {len(trainer.stack.stages)} stage(s) "
                      f"at {list(trainer.stack.resolutions)} px on {trainer.device}, writing to {out}")
    result = trainer.run()
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
    """Fail early, with a clear message, when the output folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to the output folder {out}: {exc.strerror or exc}", path="--out",
                        fix="choose a writable folder with --out") from None


def cmd_sample(args: argparse.Namespace) -> int:
    from ganstack.sample.draw import load, read_captions, read_embeddings, write_samples

    if args.n < 1 or (args.ca_variations is not None and args.ca_variations < 1) or args.steps < 2:
        raise UserError("--n and --ca-variations must be at least 1 and --steps at least 2",
                        fix="give positive counts")
    model = load(args.run, device=args.device, ema=not args.no_ema)
    texts = list(args.text) + (read_captions(Path(args.captions)) if args.captions else [])
    if args.interpolate:
        samples = model.interpolate(*args.interpolate, args.steps, seed=args.seed)
    elif args.ca_variations:
        if not texts:
            raise UserError("--ca-variations needs a sentence", fix='add --text "a sentence"')
        samples = model.ca_variations(texts[0], args.ca_variations, seed=args.seed)
    else:
        embeddings = read_embeddings(Path(args.embeddings)) if args.embeddings else None
        if embeddings is not None and texts and len(texts) != len(embeddings):
            raise UserError(f"{len(texts)} captions but {len(embeddings)} embedding rows", file=args.embeddings,
                            fix="give one embedding row per caption, or no captions")
        samples = model.generate(texts, n=args.n, seed=args.seed, embeddings=embeddings)
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else run_dir / "samples-cli"
    result = write_samples(samples, out, stages=args.stage, resolutions=model.resolutions)
    _console().print(f"Wrote {result['images']} images from step {model.step}: {result['contact_sheet']} "
                     f"(manifest: {result['manifest']})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import yaml

    from ganstack.evaluate.scoring import build_metric, evaluate
    from ganstack.recipe.schema import Component
    from ganstack.run_folder.record import write_json
    from ganstack.sample.draw import load

    model = load(args.run, device=args.device)
    resolved = model.resolved
    extra: dict[str, Any] = {}
    for assignment in args.option:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise UserError(f"--option '{assignment}' is not KEY=VALUE", fix="write e.g. --option split=holdout")
        extra[key.strip()] = yaml.safe_load(raw)
    if args.inception_weights:
        extra["weights"] = args.inception_weights
    chosen = [Component(name, {}) for name in args.metric] or list(resolved.recipe.evaluation.metrics)
    if not chosen:
        raise UserError("no metric to run", fix="name one with --metric (`ganstack plugins` lists them), or add "
                        "evaluation.metrics to the recipe")
    metrics = [(comp.type, build_metric(comp, device=str(model.device), path=f"metrics[{j}]", file=str(args.run),
                                        overrides=extra, recipe_dir=resolved.base_dir))
               for j, comp in enumerate(chosen)]
    n = args.n or resolved.recipe.evaluation.n
    results = evaluate(model, resolved, metrics, n)
    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "eval.json"
    write_json(out, {"checkpoint": str(args.run), "step": model.step, "n": n, "results": results})
    from rich.table import Table

    table = Table(title=f"evaluation at step {model.step} ({n} images)", title_justify="left")
    table.add_column("value")
    table.add_column("result", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console = _console()
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
    from ganstack.recipe.resolve import load_recipe
    from ganstack.sample.preview import write_preview

    resolved = load_recipe(args.recipe, args.overrides)
    stack = build_stack(resolved)
    dataset = build_dataset(resolved, args.split, stack.resolutions)
    manifest = write_preview(dataset, stack.resolutions, Path(args.out), args.n, args.split)
    _console().print(f"Wrote {args.n} examples x {len(stack.resolutions)} resolutions; manifest: {manifest}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ganstack.cli.importing import run_import

    console = _console()
    return run_import(args.kind, args.import_args, report=lambda line: console.print(line, markup=False))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "check": cmd_check, "plugins": cmd_plugins, "data": cmd_data, "sample": cmd_sample,
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
