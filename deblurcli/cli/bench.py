"""`deblurcli bench quality|speed`: score methods on datasets, time them on synthetic images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deblurcli import methods as table
from deblurcli.cli._console import err_console, info, print_json
from deblurcli.cli._options import (
    KERNEL_CONVENTION_HELP,
    ConfigArg,
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    SetOpt,
    read_kernel_file,
)
from deblurcli.errors import UsageError

app = typer.Typer(no_args_is_help=True, help=(
    "Benchmark restoration quality and speed.\n\nExamples:\n\n"
    "  deblurcli bench quality --preset levin --data ../shared/data --method identity\n\n"
    "  deblurcli bench speed --method wiener --sizes 512,1024"))

Opt = typer.Option
MethodsOpt = Annotated[list[str], Opt("--method", metavar="NAME", help=(
    "Method (repeatable). Networks: " + ", ".join(table.names("network"))
    + " (the default checkpoint, or --model). Known kernel: " + ", ".join(table.names("non-blind"))
    + ". Blind (a true kernel only sets the kernel size; --param preset=paper): "
    + ", ".join(table.names("blind")) + ". Reference-based (need a reference photo per image, "
    "which the bench sets lack: scripts/eval_ref.py measures them): "
    + ", ".join(table.names("reference")) + ". Baseline: " + ", ".join(table.names("baseline"))
    + ". Details: deblurcli models list."))]
ModelOpt = Annotated[Optional[str], Opt("--model", metavar="NAME@TAG|FILE", help=(
    "Exact checkpoint for the network method (default: its shipped checkpoint)."))]
ParamOpt = Annotated[Optional[list[str]], Opt("--param", metavar="KEY=VALUE", help=(
    "Method option (repeatable), e.g. weight=2e-4, iterations=50, preset=paper."))]
KernelOpt = Annotated[Optional[Path], Opt(exists=True, dir_okay=False, metavar="FILE",
                                          help="One kernel file for every image.")]
ConventionOpt = Annotated[str, Opt("--kernel-convention", metavar="convolve|correlate",
                                   help=KERNEL_CONVENTION_HELP)]
DataOpt = Annotated[Optional[Path], Opt("--data", metavar="DIR", file_okay=False, help=(
    "Folder holding the preset data (levin09/, sharp_val/, gopro_dev/, real_pairs/); default: "
    "$DEBLURCLI_DATA, else "
    "../shared/data beside the checkout."))]
PrecisionOpt = Annotated[str, Opt(metavar="auto|fp32|fp64|bf16|fp16",
                                   help="auto, fp32, fp64 (deconvolution), bf16, fp16.")]
CsvOpt = Annotated[Optional[Path], Opt("--csv", metavar="FILE",
                                       help="Also write the rows to this CSV file.")]
PlotOpt = Annotated[Optional[Path], Opt("--plot", metavar="FILE.png",
                                        help="Also draw a figure (.png).")]
DirOpt = Annotated[Optional[Path], Opt(file_okay=False, metavar="DIR",
                                       help="Folder (names match across).")]


@app.command("quality")
def quality(
    method: MethodsOpt,
    preset: Annotated[Optional[list[str]], Opt(metavar="NAME", help=(
        "levin (blind/non-blind, Levin et al.), shake (sharp_val under seeded 15-51 px camera "
        "shake + noise 0.01: the validation set of learned models), gopro_dev (real motion "
        "blur, a mean per sequence), city100 (real lens blur); these read --data or "
        "$DEBLURCLI_DATA. synthetic: your --sharp folder, seeded blur. One per run."))] = None,
    data: DataOpt = None,
    blurred: DirOpt = None,
    sharp: DirOpt = None,
    kernels: DirOpt = None,
    ground_truth_kernel: Annotated[bool, Opt("--ground-truth-kernel", help=(
        "Give deconvolvers the true kernels."))] = False,
    kernel: KernelOpt = None,
    kernel_convention: ConventionOpt = "convolve",
    model: ModelOpt = None,
    param: ParamOpt = None,
    seed: Annotated[int, Opt(metavar="N", help="synthetic: seed of kernels and noise.")] = 0,
    noise: Annotated[float, Opt(min=0.0, metavar="SIGMA", help="synthetic: noise σ.")] = 0.01,
    crop: Annotated[int, Opt(min=0, metavar="PX", help="Border excluded from scoring.")] = 0,
    shift_tolerant: Annotated[bool, Opt("--shift-tolerant", help=(
        "Folder pairs: Levin's shift protocol."))] = False,
    limit: Annotated[Optional[int], Opt(min=1, metavar="N",
                                        help="Only the first N images.")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Score methods on a dataset: PSNR/SSIM per image (and Levin's error ratio).

    Examples:

      deblurcli bench quality --preset levin --data ../shared/data --method identity

      deblurcli bench quality --preset levin --ground-truth-kernel --method hyperlaplacian

      deblurcli bench quality --preset shake --method identity --method resunet

      deblurcli bench quality --blurred in/ --sharp gt/ --method identity --method resunet

      deblurcli bench quality --preset levin --method dip --param preset=paper --limit 1
    """
    if preset and len(preset) > 1:
        raise UsageError(f"bench quality scores one --preset per run (got {', '.join(preset)}); "
                         "run it once for each")
    preset_name = preset[0] if preset else None
    if ground_truth_kernel and kernel is not None:
        raise UsageError("give either --ground-truth-kernel or --kernel FILE, not both")
    _check_outputs(csv_path, plot)
    from deblurcli.bench import datasets, methods, report
    from deblurcli.bench import plot as plots
    from deblurcli.bench import quality as q

    for name in method:
        table.get(name)
    dataset = datasets.open_dataset(
        preset=preset_name, blurred=blurred, sharp=sharp, kernels=kernels, seed=seed, noise=noise,
        crop=crop, shift_tolerant=shift_tolerant, data=data,
        kernel_convention=kernel_convention).head(limit)
    config = methods.MethodConfig(device, precision, model, methods.parse_params(param))
    k = "ground-truth" if ground_truth_kernel else (
        read_kernel_file(kernel, kernel_convention) if kernel else None)
    total, done = len(dataset.samples) * len(method), [0]

    def step(name: str, item: q.ItemScore) -> None:
        done[0] += 1
        info(f"[{done[0]}/{total}] {name} {item.name}: {item.psnr:.2f} dB", quiet=quiet)

    res = q.run_quality(dataset, method, config, kernel=k, on_item=step)
    doc = report.quality_document(dataset, res)
    _emit(report.quality_table(res), report.quality_rows(res), doc,
          lambda path: plots.plot_quality(res, path), quiet, json_out, csv_path, plot)


@app.command("speed")
def speed(
    method: MethodsOpt,
    sizes: Annotated[str, Opt(metavar="N,WxH,...",
                              help="Comma-separated N (square) or WxH.")] = "512,1024,2048",
    repeats: Annotated[int, Opt(min=1, metavar="N", help="Timed runs per size.")] = 5,
    warmup: Annotated[int, Opt(min=0, metavar="N", help="Untimed runs first.")] = 1,
    channels: Annotated[int, Opt(min=1, max=3, metavar="1|3",
                                 help="Image channels (1 grey, 3 colour).")] = 3,
    kernel: KernelOpt = None,
    kernel_convention: ConventionOpt = "convolve",
    model: ModelOpt = None,
    param: ParamOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Time methods on random images: median/p90 latency, MP/s, peak memory.

    Example:

      deblurcli bench speed --method wiener --sizes 512,2048,4096 --plot speed.png

      deblurcli bench speed --method resunet --sizes 256 --repeats 2 --json
    """
    for name in method:
        table.get(name)
    from deblurcli.bench import methods, report
    _check_outputs(csv_path, plot)
    from deblurcli.bench import plot as plots
    from deblurcli.bench import speed as s

    try:
        size_list = s.parse_sizes(sizes)
    except ValueError as exc:
        raise UsageError(f"--sizes: {exc}") from None
    config = methods.MethodConfig(device, precision, model, methods.parse_params(param))
    rows = s.run_speed(
        method, config, size_list,
        kernel=read_kernel_file(kernel, kernel_convention) if kernel else None,
        repeats=repeats, warmup=warmup, channels=channels,
        on_row=lambda r: info(f"{r.method} {r.width}×{r.height}: {r.median_s:.4f} s", quiet=quiet))
    _emit(report.speed_table(rows), [r.to_dict() for r in rows], report.speed_document(rows),
          lambda path: plots.plot_speed(rows, path), quiet, json_out, csv_path, plot)


@app.command("train")
def train_speed(
    config: ConfigArg,
    variant: Annotated[Optional[list[str]], Opt("--variant", metavar="NAME", help=(
        "Variant to time (repeatable; default all): old-recipe, nchw, channels-last, "
        "channels-last+bf16, on-the-fly-w0, on-the-fly-w1, on-the-fly-w2."))] = None,
    steps: Annotated[int, Opt(min=1, help="Timed training steps per variant.")] = 10,
    warmup: Annotated[int, Opt(min=0, help="Untimed steps first.")] = 3,
    threads: Annotated[int, Opt(min=1, help="torch threads of the training process.")] = 2,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    csv_path: CsvOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Time whole training steps of a config's model (data loading included) under variants.

    Prints step time, trained megapixels per second, achieved GFLOP/s of the model's
    forward+backward and peak memory per variant, next to the machine's measured conv and
    matmul peak. Run it on an otherwise idle machine. The pack variants need the config's
    data.pack (deblurcli train pack CONFIG).

    Example:

      deblurcli bench train configs/resunet_shake.toml --steps 10
    """
    from rich.table import Table

    from deblurcli.bench.training import VARIANTS, run_training_benchmark
    from deblurcli.train.config import load_config

    _check_outputs(csv_path)
    unknown = [v for v in variant or [] if v not in VARIANTS]
    if unknown:
        raise UsageError(f"unknown --variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    cfg = load_config(config, list(set_ or []))
    doc = run_training_benchmark(
        cfg, variant, steps=steps, warmup=warmup, threads=threads,
        on_row=lambda r: info(f"{r['variant']}: {r.get('step_s', float('nan')):.3f} s/step "
                              f"{r.get('error', '')}", quiet=quiet))
    peak = doc["peak"]
    grid = Table(title=(f"{cfg.model.arch} batch {doc['batch']}×{doc['crop']}², "
                        f"{doc['step_gflop']:.1f} GFLOP/step; peak conv "
                        f"{peak['conv3x3_gflops']:.0f}, matmul "
                        f"{peak['matmul_gflops']:.0f} GFLOP/s; CPU {peak['cpu_capability']}, "
                        f"bf16 {'native' if peak['cpu_bf16_native'] else 'emulated (slow)'}"))
    for column in ("variant", "layout", "precision", "data", "workers", "s/step", "MP/s",
                   "GFLOP/s", "% conv peak", "peak MiB"):
        grid.add_column(column)
    for r in doc["rows"]:
        if "error" in r:
            grid.add_row(r["variant"], r["layout"], r["precision"], r["data"], str(r["workers"]),
                         r["error"], "", "", "", "")
            continue
        grid.add_row(r["variant"], r["layout"], r["precision"], r["data"], str(r["workers"]),
                     f"{r['step_s']:.3f}", f"{r['mp_per_s']:.3f}", f"{r['gflops']:.0f}",
                     f"{100 * r['of_conv_peak']:.0f}", f"{r['peak_rss_mib']:.0f}")
    _emit(grid, doc["rows"], doc, lambda path: path, quiet, json_out, csv_path, None)


def _check_outputs(*paths: Path | None) -> None:
    """Refuse --csv/--plot paths that could not be written, before the benchmark runs."""
    import os

    for path in paths:
        if path is None:
            continue
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise UsageError(f"{path}: is a folder, not a file to write")
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"{path}: cannot write here (folder missing or not writable)")


def _emit(table: Any, rows: list[dict[str, Any]], document: Any, draw: Callable[[Path], Path],
          quiet: bool, json_out: bool, csv_path: Path | None, plot: Path | None) -> None:
    """Table on stderr, optional CSV file and figure, and the JSON document on stdout."""
    from deblurcli.bench.report import write_csv

    if not quiet:
        err_console.print(table)
    if csv_path is not None:
        write_csv(csv_path, rows)
    if plot is not None:
        info(f"wrote {draw(plot)}", quiet=quiet)
    if json_out:
        print_json(document)
