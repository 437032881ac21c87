"""``deblurcli deconvolve-blind``: estimate the blur kernel and the sharp image (VDIP, DIP)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deblurcli import methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import err_console, info, progress_enabled, warn

METHOD_HELP = "Blind method: " + methods.listing("blind") + "."
PRESET_HELP = (
    "fast: coarse-to-fine variational kernel estimate + non-blind solve (seconds to minutes); "
    "paper: the published networks and 5,000-step schedule (hours per image on a CPU)."
)
SIZE_HELP = (
    "Kernel size N or HxW (odd), a bit larger than the blur. Default: fast estimates it from "
    "the photo (blur extent measured on coarse levels, up to about 61 px; printed); paper: 21."
)


def deconvolve_blind(
    inputs: opt.InputsArg,
    output: opt.OutputOpt = None,
    method: Annotated[str, typer.Option(metavar="NAME", help=METHOD_HELP)] = (
        methods.DEFAULT_METHOD["blind"]),
    preset: Annotated[str, typer.Option(metavar="fast|paper", help=PRESET_HELP)] = "fast",
    kernel_size: Annotated[Optional[str], typer.Option("--kernel-size", metavar="N|HxW",
                                                       help=SIZE_HELP)] = None,
    iters: Annotated[Optional[int], typer.Option("--iterations", "--iters", min=0, metavar="N",
                                                 help=(
        "paper: main steps (5000); fast: sweeps or steps per pyramid level."))] = None,
    seed: Annotated[int, typer.Option(help="Seed; CPU runs with the same seed are identical.")] = 0,
    restarts: Annotated[Optional[int], typer.Option(min=0, help=(
        "On a degenerate result (near-delta, shrunk or scattered kernel, a kernel that does "
        "not explain the photo, output no sharper than the input, black image) run again with "
        "the next seed and, in the fast preset, first on the same crops with a coarser kernel "
        "threshold (noisy photos), then on the next most informative crops, up to this many times "
        "(default: 2 with the fast preset, where only failed photos pay for them; 0 with "
        "paper). A fast run that stays degenerate returns the photo unchanged, with a "
        "warning."))] = None,
    finish: Annotated[Optional[str], typer.Option("--finish", metavar="MODEL|none", help=(
        "Fast preset: the network that finishes the restoration, trained on photos restored "
        "with slightly wrong kernels (it removes the ringing and noise they leave): a model "
        "name, name@tag or .safetensors file, or several separated by commas (their outputs "
        "are averaged); none: the non-blind solve as it is. Default: "
        "the mean of nafnet-finish@cpu-v2 and nafnet-finish@cpu-v3 (the second was "
        "trained on badly wrong kernels and keeps failed estimates near the photo; "
        "docs/blind.md); a restart after a degenerate estimate is finished by "
        "nafnet-finish@cpu-v3 alone (--param restart_finish=MODEL: another). "
        "Its output is then used to measure the kernel "
        "once more, and the photo is restored and finished again (--param finish_resolve=0: "
        "not). Never applied to a photo returned unchanged, nor to a grayscale photo (it "
        "lowered the grayscale Levin set; --param finish_gray=true applies it anyway)."))] = None,
    kernel_out: Annotated[Optional[Path], typer.Option("--kernel-out", help=(
        "Kernel file (one input; .png, .txt or .npy) or folder. A PNG view and an exact "
        ".txt/.npy are always written; default: <output>_kernel.png/.txt."))] = None,
    kernel_convention: opt.KernelConventionOpt = "convolve",
    param: Annotated[Optional[list[str]], typer.Option("--param", metavar="KEY=VALUE", help=(
        "Config override KEY=VALUE (repeatable), e.g. prefit=0, kernel_prior_weight=1, "
        "refine=collapse (paper) or alpha=1, outer=50 (fast)."))] = None,
    device: opt.DeviceOpt = "auto",
    recursive: opt.RecursiveOpt = False,
    suffix: opt.SuffixOpt = None,
    fmt: opt.FormatOpt = "auto",
    quality: opt.QualityOpt = 95,
    bit_depth: opt.BitDepthOpt = "same",
    skip_existing: opt.SkipExistingOpt = False,
    overwrite: opt.OverwriteOpt = False,
    fail_fast: opt.FailFastOpt = False,
    max_pixels: opt.MaxPixelsOpt = None,
    json_output: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
    no_progress: opt.NoProgressOpt = False,
    shard: opt.ShardOpt = None,
) -> None:
    """Blind deconvolution: recover the sharp photo and its camera-shake kernel.

    The fast preset estimates the photo's noise and the blur's size itself and leaves blown
    highlights out of the kernel fit; when it finds no reliable kernel it says so and returns
    the photo unchanged rather than making it worse.
    Kernels are saved centred (to the nearest pixel), summing to 1, in true-convolution
    orientation (--kernel-convention correlate writes them rotated by 180°); the fast preset
    moves the restoration by the kernel's remaining sub-pixel offset, so that it registers
    with the input (--param register=false keeps it unmoved).

    Examples:

      deblurcli deconvolve-blind shake.jpg -o sharp.png

      deblurcli deconvolve-blind shake.jpg -o sharp.png --kernel-size 51 --restarts 4

      deblurcli deconvolve-blind im1_kernel1_img.png -o out/ --preset paper --method dip

      deblurcli deconvolve-blind shots/ -o sharp/ --restarts 1 --json > report.json

    Presets, methods, every --param and measured quality: docs/blind.md.
    """
    from deblurcli.cli._batch import BatchOptions, ItemResult, plan_batch, run_batch
    from deblurcli.cli._paths import kernel_paths
    from deblurcli.optim.blind import default_kernel_size, parse_kernel_size, parse_overrides

    methods.get(method, "blind")
    opt.check_convention(kernel_convention)
    if preset not in ("fast", "paper"):
        raise typer.BadParameter("use fast or paper", param_hint="--preset")
    size = parse_kernel_size(kernel_size) if kernel_size else None
    overrides = parse_overrides(preset, param)
    if finish is not None:
        if preset != "fast":
            raise typer.BadParameter("only the fast preset has a finishing network",
                                     param_hint="--finish")
        overrides["finish"] = finish
    options = BatchOptions(
        output=output, recursive=recursive, suffix=suffix, fmt=fmt, quality=quality,
        bit_depth=opt.parse_bit_depth(bit_depth), skip_existing=skip_existing,
        overwrite=overwrite, fail_fast=fail_fast, max_pixels=max_pixels, json=json_output,
        quiet=quiet, no_progress=no_progress, shard=shard,
    )

    def kernel_files(job: Any, n_jobs: int) -> dict[str, Path]:
        png, exact = kernel_paths(job.output, kernel_out, n_jobs)
        return {"kernel_png": png, "kernel": exact}

    batch = plan_batch("deconvolve-blind", inputs, options, extras=kernel_files)

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from deblurcli.engine.device import resolve_device
    from deblurcli.errors import UnsupportedImageError
    from deblurcli.kernels import encode_kernel
    from deblurcli.optim.blind import deconvolve_blind as run
    from deblurcli.optim.vdip import BlindDeconvolutionError

    dev = resolve_device(device)
    if preset == "fast":  # a missing finishing model fails here, once, not on every photo
        from deblurcli.optim.fast import FastConfig, finishing_models

        fast = FastConfig(**{k: v for k, v in overrides.items()
                             if k in ("finish", "restart_finish")})
        finishing_models(fast.finish)
        finishing_models(fast.resolved_restart_finish)
    info(f"deconvolve-blind: {method}, preset {preset}, device {dev}, seed {seed}", quiet=quiet)
    show = progress_enabled(no_progress, quiet)
    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.fields[loss]}"), TimeRemainingColumn(),
                   console=err_console, disable=not show, transient=True)

    def process(job: Any, image: Any, _tiles: Any) -> ItemResult:
        ksize, why = (size, "--kernel-size") if size else default_kernel_size(preset)
        if ksize is not None:
            info(f"{image.source}: kernel {ksize[0]}x{ksize[1]} ({why})", quiet=quiet)
        task = bar.add_task(str(getattr(image.source, "name", "image")), total=None, loss="")

        def on_progress(done: int, total: int, loss: float, phase: str) -> None:
            bar.update(task, completed=done, total=total, loss=f"{phase} loss {loss:.4g}")

        try:
            with bar:
                out = run(image.pixels, method=method, preset=preset, kernel_size=ksize,
                          iters=iters, seed=seed, restarts=restarts, device=dev,
                          on_progress=on_progress, **overrides)
        except BlindDeconvolutionError as exc:  # per file: report it and go on (exit 3)
            raise UnsupportedImageError(f"{image.source}: {exc}") from exc
        finally:
            bar.remove_task(task)
        png, exact = job.extras["kernel_png"], job.extras["kernel"]
        written = opt.orient_kernel(out.kernel, kernel_convention)
        probe = out.details.get("size_probe") or {}
        how = f" (blur extent ~{probe['extent']:.0f} px measured)" if "extent" in probe else ""
        info(f"{image.source}: kernel {written.shape[0]}x{written.shape[1]}{how} → {exact}",
             quiet=quiet)
        for message in out.details.get("warnings", []):
            warn(f"{image.source}: {message}")
        files = {"kernel_png": encode_kernel(png, written), "kernel": encode_kernel(exact, written)}
        return ItemResult(image.with_pixels(out.image), extras=files, details=out.details)

    header = {"method": method, "preset": preset, "seed": seed, "device": str(dev)}
    raise typer.Exit(run_batch(batch, process, header=header, progress=False))
