"""Speed of ganstack's training step, sampling and data loading, next to what this machine attains.

    python benchmarks/speed.py                 # the paper's steps, cost growth, loader (minutes on a CPU)
    python benchmarks/speed.py --threads 1     # steadier on a machine shared with other processes
    python benchmarks/speed.py --quick         # tiny sizes, one iteration: a smoke test
    python benchmarks/speed.py --device cuda --amp bf16

Training cases build a real :class:`ganstack.train.trainer.Trainer` from a recipe, with a synthetic
dataset standing in for the data (the paper recipes need none), and time its ``step``: the
code ``ganstack run`` runs. Each case runs in a fresh process, so its peak memory is its own
(``ru_maxrss`` cannot be reset within a process). The loader case reads the real shapes data
(rendered into ``.ganstack-cache`` under the working folder on first use, as ``ganstack run`` does).

The machine's attainable conv throughput is measured at the start, in each step case's process
right after its steps, and at the end; the best of these is the figure steps are compared with,
so a moment of contention during one measurement cannot inflate a step's fraction.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from flops import conv_gflops, count_flops, matmul_gflops, synchronize
from rich.console import Console
from rich.table import Table
from torch.utils.data import Dataset, default_collate

from ganstack.build.devices import amp_dtype, resolve_device, retain_freed_memory
from ganstack.build.stack import text_and_fields
from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack.interfaces import DataContext
from ganstack.recipe.resolve import load_recipe
from ganstack.testing import registered_plugin
from ganstack.train.trainer import Trainer

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PAPER = "stackgan_cub.yaml"
QUICKSTART = "shapes_quickstart.yaml"
BY_STAGES = ("shapes_one_stage.yaml", QUICKSTART, "shapes_three_stages.yaml")
SYNTHETIC = "speed-synthetic"
EMBEDDING_DIM = 1024  # Reed's char-CNN-RNN embeddings, which the paper recipes read
STAGE1_TARGET = 0.70  # of the machine's measured conv throughput
LOADER_TARGET = 5.0  # loader examples/s over training examples/s


# ------------------------------------------------------------------------------ synthetic data
@attrs.define(frozen=True, kw_only=True)
class SyntheticOptions:
    """``size``: examples; ``embedding_dim``: size of the stored text embedding of each example."""

    size: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    embedding_dim: int = attrs.field(default=EMBEDDING_DIM, validator=attrs.validators.ge(1))


class SyntheticDataset(Dataset):
    """Random images at the stack's resolutions, embeddings and made-up captions: timing without data."""

    _WORDS = (("small", "large"), ("red", "green", "blue", "white"), ("circle", "square", "triangle"))

    def __init__(self, options: SyntheticOptions, ctx: DataContext) -> None:
        self.size = options.size
        self.embedding_dim = options.embedding_dim
        self.resolutions = ctx.resolutions
        self.want_wrong = ctx.want_wrong

    def __len__(self) -> int:
        return self.size

    def _caption(self, i: int) -> str:
        size, colour, shape = (words[i % len(words)] for words in self._WORDS)
        return f"a {size} {colour} {shape} on a black background"

    def _images(self, gen: torch.Generator) -> list[torch.Tensor]:
        return [torch.rand(3, r, r, generator=gen) * 2 - 1 for r in self.resolutions]

    def __getitem__(self, i: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(i)
        item = {"images": self._images(gen), "caption": self._caption(i), "class_id": i % 24, "index": i,
                "embedding": torch.randn(self.embedding_dim, generator=gen)}
        if self.want_wrong:
            item["wrong_images"] = self._images(gen)
        return item

    def captions(self) -> list[str]:
        return [self._caption(i) for i in range(self.size)]

    def sample_captions(self, k: int) -> list[str]:
        return [self._caption(i) for i in range(k)]


class SyntheticPlugin:
    """Registers the synthetic dataset while a trainer is built."""

    @hookimpl
    def register_components(self, register: Register) -> None:
        register("dataset", SYNTHETIC, SyntheticDataset, options=SyntheticOptions,
                 summary="random images and embeddings at the stack's resolutions (speed benchmark)")


# ----------------------------------------------------------------------------------- cases
@attrs.frozen
class Probe:
    """Sizes of the machine measurements: a square matmul and a padded 3x3 conv."""

    matmul_n: int
    conv_shape: tuple[int, int, int, int]
    conv_out: int
    repeats: int


@attrs.frozen
class Settings:
    """What every case shares: device, precision, threads, iterations, machine probe, recipe overrides."""

    device: str
    amp: str | None
    threads: int | None
    warmup: int
    iterations: int
    probe: Probe
    overrides: tuple[str, ...] = ()
    retain_memory: bool = True  # the recipes' training.retain_memory: the probes run as the steps do


@attrs.frozen
class StepCase:
    """A training step to time: a recipe at a batch size, and which block of stages trains.

    ``block`` indexes ``Trainer.blocks``: in the paper's stagewise schedule block 1 is Stage-II with
    Stage-I frozen; joint recipes have one block, every stage.
    """

    recipe: str
    batch: int
    block: int = 0
    overrides: tuple[str, ...] = ()


@attrs.frozen
class GenerationCase:
    recipe: str
    batch: int
    overrides: tuple[str, ...] = ()


@attrs.frozen
class LoaderCase:
    """The recipe's own DataLoader (its dataset, workers and batch size) over ``batches`` batches."""

    recipe: str
    batch: int
    batches: int
    overrides: tuple[str, ...] = ()


@attrs.frozen
class Plan:
    """Sizes of one benchmark run: the paper's, or tiny ones for ``--quick``."""

    stage1_batch: int
    stage2_batch: int
    gen_batch: int
    growth_batch: int
    batches: tuple[int, ...]
    loader_batches: int
    paper_overrides: tuple[str, ...]
    shapes_overrides: tuple[str, ...]
    probe: Probe


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        tiny_paper = ("stages.0.generator.ngf=8", "stages.0.discriminator.ndf=4", "stages.1.generator.ngf=8",
                      "stages.1.generator.residual_blocks=1", "stages.1.discriminator.ndf=4")
        return Plan(stage1_batch=2, stage2_batch=2, gen_batch=2, growth_batch=4, batches=(2, 4),
                    loader_batches=4, paper_overrides=tiny_paper,
                    shapes_overrides=("stages.0.generator.ngf=8", "dataset.train_size=64"),
                    probe=Probe(matmul_n=256, conv_shape=(4, 64, 16, 16), conv_out=64, repeats=2))
    return Plan(stage1_batch=64, stage2_batch=args.stage2_batch, gen_batch=args.gen_batch, growth_batch=32,
                batches=(8, 16, 32, 64), loader_batches=args.loader_batches, paper_overrides=(),
                shapes_overrides=(),
                probe=Probe(matmul_n=2048, conv_shape=(64, 256, 32, 32), conv_out=128, repeats=3))


# ------------------------------------------------------------------------------------ machine
def measure_conv(probe: Probe, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """The probe conv's GFLOP/s in both memory layouts."""
    return {layout: conv_gflops(device, dtype, probe.conv_shape, probe.conv_out, layout == "channels_last",
                                probe.repeats) for layout in ("channels_last", "contiguous")}


def measure_machine(settings: Settings) -> dict[str, Any]:
    """Matmul and conv GFLOP/s in the dtype the steps compute in (the autocast dtype under ``--amp``)."""
    device, _ = _start(settings)
    dtype = amp_dtype(settings.amp or "off", device) or torch.float32
    return {"dtype": str(dtype).removeprefix("torch."),
            "matmul_gflops": matmul_gflops(device, dtype, settings.probe.matmul_n, settings.probe.repeats),
            "conv_gflops": measure_conv(settings.probe, device, dtype)}


# ------------------------------------------------------------------------- inside a case's process
def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def _start(settings: Settings) -> tuple[torch.device, int]:
    """Apply the thread and host-memory settings as a training run would; return the device and the
    memory baseline the case's peak is counted from."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    if device.type == "cpu" and settings.retain_memory:
        retain_freed_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return device, _max_rss_bytes()


def _peak_mb(device: torch.device, baseline: int) -> float:
    """CUDA: the peak of allocated tensors; CPU: how far the process's peak resident set rose."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return (_max_rss_bytes() - baseline) / 2**20


def build_trainer(settings: Settings, recipe: str, batch: int, overrides: tuple[str, ...], *,
                  synthetic: bool) -> Trainer:
    """The trainer ``ganstack run`` would build, with the synthetic dataset swapped in if asked."""
    sets = [f"training.device={settings.device}", f"training.batch_size={batch}", *overrides,
            *settings.overrides]
    if settings.amp:
        sets.append(f"training.amp={settings.amp}")
    if synthetic:
        sets.append(f"dataset={{type: {SYNTHETIC}, size: {batch}}}")
    with registered_plugin(SyntheticPlugin(), "speed-benchmark"):
        resolved = load_recipe(RECIPES / recipe, sets)
        return Trainer(resolved, Path(tempfile.gettempdir()) / "ganstack-speed", report=lambda _m: None)


def _device_batch(trainer: Trainer, size: int) -> dict[str, Any]:
    batch = default_collate([trainer.dataset[i] for i in range(size)])
    return trainer.to_device(batch)


def _timed(fn: Callable[[], object], device: torch.device, settings: Settings) -> list[float]:
    """Seconds of each call after the warm-up calls."""
    seconds = []
    for i in range(settings.warmup + settings.iterations):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= settings.warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def measure_step(case: StepCase, settings: Settings) -> dict[str, Any]:
    """Median seconds, peak memory and FLOPs of the trainer's step on one fixed batch, and the
    machine's conv throughput measured in the same process right after."""
    device, baseline = _start(settings)
    trainer = build_trainer(settings, case.recipe, case.batch, case.overrides, synthetic=True)
    active = trainer.blocks[case.block]
    for k, stage in enumerate(trainer.stack.stages):
        stage.train(k >= min(active))  # as Trainer.run: finished stages run in inference mode
    batch = _device_batch(trainer, case.batch)
    seconds = _timed(lambda: trainer.step(batch, active), device, settings)
    peak = _peak_mb(device, baseline)  # before the probe below, whose buffers are no part of the step
    conv_here = max(measure_conv(settings.probe, device, trainer.amp or torch.float32).values())
    by_op = count_flops(lambda: trainer.step(batch, active))
    flops = sum(by_op.values())
    median = statistics.median(seconds)
    return {"recipe": case.recipe, "stages": len(trainer.stack.stages),
            "active_stages": [k + 1 for k in active], "batch": case.batch,
            "resolution": trainer.stack.resolutions[max(active)],
            "seconds_per_step": median, "seconds": seconds, "images_per_s": case.batch / median,
            "peak_memory_mb": peak, "flops_per_step": flops, "flops_by_op": by_op,
            "achieved_gflops": flops / median / 1e9, "conv_gflops_same_process": conv_here,
            "loadavg_1min": os.getloadavg()[0]}


def measure_generation(case: GenerationCase, settings: Settings) -> dict[str, Any]:
    """Images/s of drawing with the first stage only and with the whole stack, in eval and no_grad."""
    device, _ = _start(settings)
    trainer = build_trainer(settings, case.recipe, case.batch, case.overrides, synthetic=True)
    stack = trainer.stack.eval()
    batch = _device_batch(trainer, case.batch)
    with torch.no_grad():
        text, fields = text_and_fields(stack.text_encoder(batch), batch, stack.requested_fields())
    z = torch.randn(case.batch, stack.noise_dim, device=device)
    results = {}
    for name, upto in (("stage1", 0), ("full", len(stack.stages) - 1)):
        @torch.no_grad()
        def draw(upto: int = upto) -> torch.Tensor:
            return stack.generate(text, z, upto=upto, fields=fields)[-1][1].image.float().cpu()

        median = statistics.median(_timed(draw, device, settings))
        results[name] = {"stages": upto + 1, "resolution": stack.resolutions[upto], "batch": case.batch,
                         "seconds_per_batch": median, "images_per_s": case.batch / median}
    return results


def measure_loader(case: LoaderCase, settings: Settings) -> dict[str, Any]:
    """Examples/s out of the trainer's own loader (and onto the device), after its first batch."""
    device, _ = _start(settings)
    trainer = build_trainer(settings, case.recipe, case.batch, case.overrides, synthetic=False)
    batches = iter(trainer.loader(0, 0, 0))
    trainer.to_device(next(batches))  # worker start-up is a once-per-epoch cost
    start = time.perf_counter()
    count = 0
    for batch in itertools.islice(batches, case.batches):
        trainer.to_device(batch)
        count += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    return {"recipe": case.recipe, "batch": case.batch, "num_workers": trainer.train_spec.num_workers,
            "dataset_size": len(trainer.dataset), "batches": count,
            "examples_per_s": count * case.batch / elapsed}


def _child(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send((True, fn(*args)))
    except BaseException:  # noqa: BLE001 - handed to the parent, which raises it
        conn.send((False, traceback.format_exc()))
    finally:
        conn.close()


class Isolated:
    """Runs each case once, in a fresh process; a case asked for again (same sizes) is answered again.

    Processes fork from a server that has imported torch once (``forkserver``), so a case costs
    its own work, not an interpreter start. Not daemonic: a case's DataLoader may start workers.
    """

    def __init__(self, console: Console) -> None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(method)
        if method == "forkserver":  # torch.optim.Adam imports dynamo on first use: 2 s a case
            self._ctx.set_forkserver_preload(["__main__", "torch._dynamo"])
        self._done: dict[Any, Any] = {}
        self.console = console

    def __call__(self, fn: Callable[[Any, Settings], Any], case: Any, settings: Settings, label: str) -> Any:
        key = (fn.__name__, case)
        if key not in self._done:
            self.console.log(f"{label} ...")
            receive, send = self._ctx.Pipe(duplex=False)
            proc = self._ctx.Process(target=_child, args=(send, fn, (case, settings)))
            proc.start()
            send.close()
            try:
                ok, value = receive.recv()
            except EOFError:
                proc.join()
                raise RuntimeError(f"{label}: the measuring process died (exit code {proc.exitcode}); "
                                   "out of memory? try a smaller --stage2-batch") from None
            proc.join()
            if not ok:
                raise RuntimeError(f"{label} failed in its process:\n{value}")
            self._done[key] = value
        return self._done[key]


# ----------------------------------------------------------------------------------- the run
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_summary(probe: Probe, start: dict[str, Any], end: dict[str, Any],
                     steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Best of the start and end measurements; attainable conv is the best conv figure seen anywhere."""
    conv = {layout: max(value, end["conv_gflops"][layout]) for layout, value in start["conv_gflops"].items()}
    samples = [max(start["conv_gflops"].values()), *(s["conv_gflops_same_process"] for s in steps),
               max(end["conv_gflops"].values())]
    return {"dtype": start["dtype"], "matmul_n": probe.matmul_n,
            "matmul_gflops": max(start["matmul_gflops"], end["matmul_gflops"]),
            "conv_shape": [*probe.conv_shape], "conv_out_channels": probe.conv_out, "conv_gflops": conv,
            "conv_gflops_samples": samples, "conv_attainable_gflops": max(samples)}


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    plan = make_plan(args)
    retain = load_recipe(RECIPES / PAPER, list(args.set)).recipe.training.retain_memory
    settings = Settings(device=args.device, amp=args.amp, threads=args.threads, warmup=args.warmup,
                        iterations=1 if args.quick else args.iterations, probe=plan.probe,
                        overrides=tuple(args.set), retain_memory=retain)
    device = resolve_device(args.device)
    loadavg_start = os.getloadavg()
    isolated = Isolated(console)
    console.log("machine throughput ...")
    machine_start = measure_machine(settings)

    def step(case: StepCase, label: str) -> dict[str, Any]:
        return isolated(measure_step, case, settings, label)

    training = {"paper_stage1": step(StepCase(PAPER, plan.stage1_batch, 0, plan.paper_overrides),
                                     "paper Stage-I step"),
                "paper_stage2": step(StepCase(PAPER, plan.stage2_batch, 1, plan.paper_overrides),
                                     "paper Stage-II step")}
    generation = isolated(measure_generation, GenerationCase(PAPER, plan.gen_batch, plan.paper_overrides),
                          settings, "generation")
    by_stages = [step(StepCase(recipe, plan.growth_batch, 0, plan.shapes_overrides), f"{n} stage(s)")
                 for n, recipe in enumerate(BY_STAGES, 1)]
    by_batch = [step(StepCase(QUICKSTART, b, 0, plan.shapes_overrides), f"quickstart, batch {b}")
                for b in plan.batches]
    loader = isolated(measure_loader, LoaderCase(QUICKSTART, plan.growth_batch, plan.loader_batches,
                                                 plan.shapes_overrides), settings, "data loader")
    console.log("machine throughput again ...")
    steps = [*training.values(), *by_stages, *by_batch]
    machine = _machine_summary(plan.probe, machine_start, measure_machine(settings), steps)
    for result in steps:
        result["fraction_of_conv"] = result["achieved_gflops"] / machine["conv_attainable_gflops"]
    quickstart = by_stages[1]
    loader["step_examples_per_s"] = quickstart["images_per_s"]
    loader["ratio"] = loader["examples_per_s"] / quickstart["images_per_s"]
    stage1_fraction = training["paper_stage1"]["fraction_of_conv"]
    threads = settings.threads or torch.get_num_threads()
    return {
        "benchmark": "speed", "quick": args.quick, "command": " ".join(["python", *sys.argv]),
        "environment": {
            "device": device.type, "device_name": _device_name(device), "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "threads": threads, "amp": args.amp or "recipe",
            "retain_memory": settings.retain_memory and device.type == "cpu",
            "loadavg_start": list(loadavg_start), "loadavg_end": list(os.getloadavg()),
            # other processes were running on the cores the benchmark's threads need
            "busy_at_start": loadavg_start[0] > (os.cpu_count() or 1) - threads + 0.75,
        },
        "settings": {"warmup": settings.warmup, "iterations": settings.iterations,
                     "overrides": list(args.set),
                     "memory": "cuda.max_memory_allocated" if device.type == "cuda" else "ru_maxrss rise"},
        "machine": machine,
        "training": training,
        "generation": generation,
        "growth": {"by_stages": by_stages, "by_batch": by_batch},
        "loader": loader,
        "targets": {
            "stage1_fraction_of_conv": {"target": STAGE1_TARGET, "value": stage1_fraction,
                                        "met": stage1_fraction >= STAGE1_TARGET},
            "loader_ratio": {"target": LOADER_TARGET, "value": loader["ratio"],
                             "met": loader["ratio"] >= LOADER_TARGET},
        },
    }


# ----------------------------------------------------------------------------------- output
def _step_row(table: Table, label: str, r: dict[str, Any]) -> None:
    table.add_row(label, str(r["batch"]), str(r["resolution"]), f"{r['seconds_per_step']:.3f}",
                  f"{r['images_per_s']:.1f}", f"{r['peak_memory_mb']:.0f}",
                  f"{r['flops_per_step'] / 1e9:.1f}", f"{r['achieved_gflops']:.1f}",
                  f"{100 * r['fraction_of_conv']:.0f}%",
                  f"{100 * r['achieved_gflops'] / r['conv_gflops_same_process']:.0f}%")


def print_report(report: dict[str, Any], console: Console) -> None:
    env, machine = report["environment"], report["machine"]
    console.print(f"[bold]{env['device']}[/] {env['device_name']}, torch {env['torch']}, "
                  f"{env['threads']} threads of {env['cpu_count']} CPUs, load average "
                  f"{env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}"
                  + (", freed host memory retained (training.retain_memory)" if env["retain_memory"] else ""))
    if env["busy_at_start"]:
        console.print("[yellow]warning:[/] other processes were busy when the run started (load average "
                      f"{env['loadavg_start'][0]:.2f}); the figures below may be low and noisy. Rerun on a "
                      "quiet machine, or with --threads set to the idle cores.")
    conv = machine["conv_gflops"]
    samples = ", ".join(f"{s:.0f}" for s in machine["conv_gflops_samples"])
    console.print(f"machine ({machine['dtype']}): matmul {machine['matmul_n']}^2 "
                  f"{machine['matmul_gflops']:.1f} GFLOP/s; 3x3 conv {conv['channels_last']:.1f} "
                  f"(channels_last) / {conv['contiguous']:.1f} (contiguous) GFLOP/s; attainable conv "
                  f"{machine['conv_attainable_gflops']:.1f} GFLOP/s (best of {samples})")
    table = Table(title="training step (median)")
    for column in ("case", "batch", "px", "s/step", "img/s", "peak MB", "GFLOP/step", "GFLOP/s", "of conv",
                   "of conv (same process)"):
        table.add_column(column, justify="left" if column == "case" else "right")
    _step_row(table, "paper Stage-I", report["training"]["paper_stage1"])
    _step_row(table, "paper Stage-II (Stage-I frozen)", report["training"]["paper_stage2"])
    for r in report["growth"]["by_stages"]:
        _step_row(table, f"shapes, {r['stages']} stage(s)", r)
    for r in report["growth"]["by_batch"]:
        _step_row(table, "shapes quickstart", r)
    console.print(table)
    gen = Table(title="generation (eval, no_grad)")
    for column in ("stages", "px", "batch", "s/batch", "img/s"):
        gen.add_column(column, justify="right")
    for r in report["generation"].values():
        gen.add_row(str(r["stages"]), str(r["resolution"]), str(r["batch"]), f"{r['seconds_per_batch']:.3f}",
                    f"{r['images_per_s']:.1f}")
    console.print(gen)
    loader = report["loader"]
    console.print(f"loader ({loader['num_workers']} workers, batch {loader['batch']}): "
                  f"{loader['examples_per_s']:.0f} examples/s = {loader['ratio']:.1f}x the quickstart step's "
                  f"{loader['step_examples_per_s']:.1f} images/s")
    for name, t in report["targets"].items():
        verdict = "met" if t["met"] else "NOT met"
        console.print(f"target {name}: {t['value']:.2f} vs {t['target']} -> {verdict}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one iteration (a smoke test)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--amp", choices=["off", "auto", "bf16", "fp16"],
                        help="mixed precision: bf16 (CUDA, or a CPU with AVX512-BF16/AMX) or fp16 (CUDA); "
                        "default: the recipe's")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--iterations", type=int, default=3, help="timed steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--stage2-batch", type=int, default=8, help="batch of the paper's Stage-II step")
    parser.add_argument("--gen-batch", type=int, default=16, help="batch of the generation cases")
    parser.add_argument("--loader-batches", type=int, default=50, help="batches timed through the loader")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every case, e.g. training.channels_last=false")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/speed-<device>.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    report = run(args, console)
    print_report(report, Console(width=None if sys.stdout.isatty() else 130))
    device = report["environment"]["device"]
    path = args.json or Path(__file__).resolve().parent / "results" / f"speed-{device}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
