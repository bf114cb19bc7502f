"""GAWWN benchmark: does the box decide where the shape goes, in 10 CPU minutes?

Trains ``recipes/shapes_gawwn.yaml`` for ``--minutes`` (its own budget is 10) or ``--steps`` (or takes a run
you trained with it, ``--run DIR``), then scores its last checkpoint with the ``shapes-box`` metric: for
``test`` and ``holdout`` scenes, each given its true box and a caption that names neither size nor
position, how often the drawn shape's centre lies in the box, and the shapes judge's reading of
background, colour and shape. Writes:

- ``gawwn.json``: the run's steps and time, the load average, every ``shapes-box`` value, the targets
  and, with ``--quickstart``, the quickstart's colour and shape figures beside these: given a run
  folder, scored with ``shapes-box`` on the same scenes, captions and noise (the quickstart ignores
  the box, so only its colours and shapes compare); given its ``quality.json``, ``shapes-alignment``'s
  figures, whose captions differ;
- ``samples.png``: the run's last sample sheet (each row outlines the box it was drawn in);
- a table on stdout.

The issue's target: ``test/centre_in_box`` >= 90%, colour and shape as good as the quickstart's
(``--quickstart RUN``: a quickstart run, as ``benchmarks/quality_shapes.py`` leaves it in ``OUT/run``).

Usage::

    python benchmarks/gawwn_shapes.py --out benchmarks/results/gawwn [--minutes 10] [--n 500]
    python benchmarks/gawwn_shapes.py --out /tmp/g --steps 20 --n 16         # a smoke run
    python benchmarks/gawwn_shapes.py --run runs/shapes_gawwn-TIMESTAMP --out DIR   # score only
    python benchmarks/gawwn_shapes.py --recipe my_variant.yaml --out DIR --steps 700   # a variant
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "shapes_gawwn.yaml"
TARGETS = {"test/centre_in_box": 0.90}
COMPARED = ("test/background", "test/color", "test/shape", "holdout/color", "holdout/shape")  # with the quickstart
SHOWN = ("test/centre_in_box", "holdout/centre_in_box", "test/no_shape", *COMPARED, "test/size", "test/position",
         "test/all", "holdout/all", "real_test/centre_in_box", "real_test/all")


def train(recipe: Path, out: Path, minutes: float | None, steps: int | None, extra: list[str]) -> None:
    from ganstack.cli.main import main

    args = ["run", str(recipe), "--out", str(out)]
    if minutes is not None:
        args += ["--max-minutes", str(minutes)]
    if steps is not None:  # instead of the minutes: the recipe's own max_minutes would stop it first
        args += ["--max-steps", str(steps), "--set", "training.max_minutes=null"]
    for assignment in extra:
        args += ["--set", assignment]
    if main(args) != 0:
        raise SystemExit("training failed")


def training_time(run: Path) -> tuple[int, float]:
    """The last logged step and its training time in seconds."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = [line for line in lines if "time_s" in line]
    return (timed[-1]["step"], timed[-1]["time_s"]) if timed else (0, 0.0)


def score(run: Path, n: int, batch_size: int, judge: dict[str, int]) -> dict[str, float]:
    from ganstack.evaluate.scoring import build_metric, evaluate
    from ganstack.recipe.schema import Component
    from ganstack.sample.draw import load

    model = load(run / "checkpoints" / "last.pt", device="cpu")
    metric = build_metric(Component("shapes-box", {"batch_size": batch_size, **judge}), device="cpu", path="metric")
    values = evaluate(model, model.resolved, [("box", metric)], n)
    return {k.split("/", 1)[1]: v for k, v in values.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/gawwn", help="output folder")
    parser.add_argument("--recipe", default=str(RECIPE), help="a variant of shapes_gawwn.yaml to train instead")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None, help="training budget (default: the recipe's 10)")
    budget.add_argument("--steps", type=int, default=None, help="train this many steps instead")
    parser.add_argument("--n", type=int, default=500, help="scenes per split")
    parser.add_argument("--batch-size", type=int, default=64, help="images generated and judged at a time")
    parser.add_argument("--judge-steps", type=int, help="train the shapes judge this many steps (default: its own)")
    parser.add_argument("--judge-scenes", type=int, help="scenes the shapes judge learns from (default: its own)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe overrides")
    parser.add_argument("--run", help="score this existing shapes_gawwn run instead of training one")
    parser.add_argument("--quickstart", help="a quickstart run folder, scored with shapes-box on the same scenes and "
                        "captions (its stack ignores the box), or its quality.json (shapes-alignment's figures), "
                        "to compare colour and shape")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else out / "run"
    started = time.monotonic()
    if not args.run:
        if run.exists():
            shutil.rmtree(run)
        train(Path(args.recipe), run, args.minutes, args.steps, args.overrides)
    wall = time.monotonic() - started
    step, seconds = training_time(run)
    judge = {k: v for k, v in (("judge_steps", args.judge_steps), ("judge_train_scenes", args.judge_scenes))
             if v is not None}
    values = score(run, args.n, args.batch_size, judge)
    quickstart, quickstart_metric = None, None
    if args.quickstart:
        if Path(args.quickstart).is_dir():  # like for like: the same metric, scenes and captions
            theirs, quickstart_metric = score(Path(args.quickstart), args.n, args.batch_size, judge), "shapes-box"
        else:
            theirs, quickstart_metric = json.loads(Path(args.quickstart).read_text())["final"], "shapes-alignment"
        quickstart = {k: theirs[k] for k in COMPARED if k in theirs}
    report = {"recipe": args.recipe if args.recipe != str(RECIPE) else "recipes/shapes_gawwn.yaml", "minutes": args.minutes, "steps": args.steps,
              "overrides": args.overrides, "trained_steps": step, "train_seconds": seconds,
              "wall_seconds": round(wall, 1), "n": args.n, "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg(), "final": values, "targets": TARGETS, "quickstart": quickstart,
              "quickstart_metric": quickstart_metric,
              "met": {k: values[k] >= v for k, v in TARGETS.items()}}
    (out / "gawwn.json").write_text(json.dumps(report, indent=2) + "\n")
    sheets = sorted((run / "samples").glob("*.png"))
    if sheets:
        shutil.copy(sheets[-1], out / "samples.png")
    print(f"\n{step} steps in {seconds / 60:.1f} min, n = {args.n} scenes per split\n")
    print("| value | shapes_gawwn | target | quickstart |\n| --- | --- | --- | --- |")
    for key in SHOWN:
        target = f">= {TARGETS[key]:.0%}" if key in TARGETS else ""
        theirs = f"{quickstart[key]:.1%}" if quickstart and key in quickstart else ""
        print(f"| {key} | {values[key]:.1%} | {target} | {theirs} |")
    print(f"\nWrote {out / 'gawwn.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
