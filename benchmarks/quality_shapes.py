"""Quality benchmark: does the quickstart learn to draw what the caption says, in 10 CPU minutes?

Trains ``recipes/shapes_quickstart.yaml`` for its time budget (it keeps a weights-only snapshot every 300
steps), or takes a run you already trained with it (``--run DIR``), then scores every kept checkpoint with the ``shapes-alignment`` metric on the
``test`` and ``holdout`` splits, and writes:

- ``quality.json``: per checkpoint, the training time and every alignment value;
- ``alignment.png``: alignment against training time;
- ``samples.png``: the last sample sheet of the run;
- a table on stdout, with the issue's targets beside the final values, then the same values for
  captions in held-out sentence shapes (``.../unseen_wording``).

Usage::

    python benchmarks/quality_shapes.py --out benchmarks/results/quality [--minutes 10] [--n 500]
    python benchmarks/quality_shapes.py --run runs/shapes_quickstart-TIMESTAMP --out DIR   # score only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {  # from the quality issue: 2 CPU cores, 10 minutes
    "test/background": 0.95, "test/color": 0.90, "test/shape": 0.80, "test/position": 0.80,
    "holdout/color": 0.70,
}
PLOTTED = ["test/background", "test/color", "test/shape", "test/size", "test/position", "test/all",
           "holdout/color", "holdout/all"]
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (0, 0, 0),
           (227, 119, 194), (127, 127, 127)]


def train(out: Path, minutes: float, extra: list[str]) -> None:
    from ganstack.cli.main import main

    args = ["run", str(ROOT / "recipes" / "shapes_quickstart.yaml"), "--out", str(out),
            "--max-minutes", str(minutes)]
    for assignment in extra:
        args += ["--set", assignment]
    if main(args) != 0:
        raise SystemExit("training failed")


def times_by_step(run: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line["time_s"] for line in lines if "time_s" in line}


def score(run: Path, n: int) -> list[dict]:
    from ganstack.evaluate.scoring import build_metric, evaluate
    from ganstack.recipe.schema import Component
    from ganstack.sample.draw import load

    times = times_by_step(run)
    rows = []
    checkpoints = sorted((run / "checkpoints").glob("step_*.pt")) + [run / "checkpoints" / "last.pt"]
    metric = None
    for ckpt in checkpoints:
        model = load(ckpt, device="cpu")
        if metric is None:
            metric = build_metric(Component("shapes-alignment", {}), device="cpu", path="metric")
        started = time.monotonic()
        values = evaluate(model, model.resolved, [("a", metric)], n)
        step = model.step
        nearest = min(times, key=lambda s: abs(s - step)) if times else step
        rows.append({"checkpoint": ckpt.name, "step": step, "train_minutes": round(times.get(nearest, 0) / 60, 3),
                     "eval_seconds": round(time.monotonic() - started, 1),
                     **{k.split("/", 1)[1]: v for k, v in values.items()}})
        print(f"{ckpt.name}: step {step}, {rows[-1]['train_minutes']:.2f} min, "
              f"test/all {rows[-1]['test/all']:.3f}, holdout/color {rows[-1]['holdout/color']:.3f}", flush=True)
    return [r for i, r in enumerate(rows) if i == 0 or r["step"] != rows[i - 1]["step"]]


def plot(rows: list[dict], path: Path) -> None:
    """A small line chart of alignment against training minutes (PIL only: no plotting dependency)."""
    width, height, left, right, top, bottom = 900, 520, 70, 230, 40, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    max_x = max(r["train_minutes"] for r in rows) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(minutes: float, value: float) -> tuple[float, float]:
        return left + plot_w * minutes / max_x, top + plot_h * (1 - value)

    for tick in range(0, 11):
        y = top + plot_h * (1 - tick / 10)
        draw.line([(left, y), (left + plot_w, y)], fill=(230, 230, 230))
        draw.text((left - 35, y - 6), f"{tick * 10}%", fill="black", font=font)
    for tick in range(0, int(max_x) + 1):
        x = left + plot_w * tick / max_x
        draw.line([(x, top + plot_h), (x, top + plot_h + 5)], fill="black")
        draw.text((x - 4, top + plot_h + 8), str(tick), fill="black", font=font)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    draw.text((left + plot_w / 2 - 60, height - 25), "training time (minutes)", fill="black", font=font)
    draw.text((left, 12), "shapes-alignment of generated images (accuracy against the caption)", fill="black",
              font=font)
    for key, colour in zip(PLOTTED, COLOURS, strict=True):
        points = [xy(r["train_minutes"], r[key]) for r in rows]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        ly = top + 10 + PLOTTED.index(key) * 18
        draw.line([(width - right + 15, ly + 6), (width - right + 35, ly + 6)], fill=colour, width=3)
        draw.text((width - right + 40, ly), key, fill="black", font=font)
    image.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/quality", help="output folder")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (the recipe's is 10)")
    parser.add_argument("--n", type=int, default=500, help="images per split and checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe overrides")
    parser.add_argument("--run", help="score this existing quickstart run instead of training one")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else out / "run"
    if not args.run:
        if run.exists():
            shutil.rmtree(run)
        train(run, args.minutes, args.overrides)
    rows = score(run, args.n)
    final = rows[-1]
    report = {"recipe": "recipes/shapes_quickstart.yaml", "minutes": args.minutes, "n": args.n,
              "overrides": args.overrides, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
              "checkpoints": rows, "targets": TARGETS,
              "final": {k: final[k] for k in final if "/" in k},
              "met": {k: final[k] >= v for k, v in TARGETS.items()}}
    (out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, out / "alignment.png")
    sheets = sorted((run / "samples").glob("*.png"))
    if sheets:
        shutil.copy(sheets[-1], out / "samples.png")
    print("\n| value | final | target |\n| --- | --- | --- |")
    unseen = [f"{k}/unseen_wording" for k in ("test/background", "test/color", "test/shape", "test/position",
                                               "test/all", "holdout/color")]
    for key in PLOTTED + ["holdout/background", "holdout/shape", "holdout/position", "real_test/all"] + unseen:
        target = f">= {TARGETS[key]:.0%}" if key in TARGETS else ""
        print(f"| {key} | {final[key]:.1%} | {target} |")
    print(f"\nWrote {out / 'quality.json'}, {out / 'alignment.png'}, {out / 'samples.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
