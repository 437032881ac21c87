"""`deblurcli blur`: make a blurred test image from a sharp one (the inverse of `deblur`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from deblurcli.cli import _options as opt
from deblurcli.cli._console import info
from deblurcli.errors import UsageError

KERNEL_HELP = (
    "motion (random camera shake), gaussian (random anisotropic), defocus (random disk), or a "
    "kernel file: .png/.jpg (normalised by its sum), .txt/.csv (numbers per row), .npy. "
    "Files are oriented as --kernel-convention says."
)


def blur(
    inputs: opt.InputsArg,
    output: opt.OutputOpt = None,
    kernel: Annotated[str, typer.Option("--kernel", "-k", help=KERNEL_HELP)] = "motion",
    kernel_size: Annotated[
        int, typer.Option("--kernel-size", min=5, help="Odd side of generated kernels (pixels).")
    ] = 31,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same kernel and noise.")] = 0,
    noise: Annotated[
        float, typer.Option(min=0.0, help="Gaussian noise σ on the [0, 1] scale (0.01 ≈ 2.6/255).")
    ] = 0.0,
    jpeg: Annotated[
        Optional[int], typer.Option(min=1, max=100, help="Also JPEG-compress at this quality.")
    ] = None,
    boundary: Annotated[
        Literal["reflect", "replicate", "wrap", "zero"],
        typer.Option(help="How the image is extended beyond its border while blurring."),
    ] = "reflect",
    save_kernel: Annotated[
        Optional[Path],
        typer.Option("--save-kernel", help="Also write the kernel (.png view, .txt/.npy exact); "
                     "a folder with several inputs (<output stem>_kernel.txt)."),
    ] = None,
    kernel_convention: opt.KernelConventionOpt = "convolve",
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
    """Blur a sharp image with a random or given kernel, then optionally add noise and JPEG.

    The result is y = k * x (true convolution) + noise; the same --seed gives the same result.
    Generated kernels are centred and sum to 1.
    Keep the exact kernel with --save-kernel k.txt (for non-blind deconvolution or scoring).

    Examples:

      deblurcli blur in.png -o out.png --seed 7 --noise 0.01 --save-kernel k.txt

      deblurcli blur in.png -o out.jpg --kernel defocus --kernel-size 15 --jpeg 80

      deblurcli blur in.png -o out.png --kernel levin_k1.txt --boundary wrap
    """
    from deblurcli.cli._batch import BatchOptions, ItemResult, plan_batch, run_batch

    opt.check_convention(kernel_convention)
    if kernel_size % 2 == 0:
        raise UsageError(f"--kernel-size must be odd, got {kernel_size}")

    import numpy as np

    from deblurcli import degrade, kernels

    streams = np.random.SeedSequence(seed).spawn(2)  # kernel and noise drawn independently
    protected: tuple[Path, ...] = ()
    if kernel in kernels.KERNEL_KINDS:
        k = kernels.random_kernel(np.random.default_rng(streams[0]), kinds=(kernel,),
                                  max_size=kernel_size)  # fmt: skip
        what = f"{kernel} {kernel_size}×{kernel_size}, seed {seed}"
    else:
        if not Path(kernel).exists():
            raise UsageError(f"--kernel {kernel!r} is neither {', '.join(kernels.KERNEL_KINDS)} "
                             "nor an existing kernel file")
        k = opt.read_kernel_file(kernel, kernel_convention)
        protected = (Path(kernel),)
        what = f"{kernel} {k.shape[0]}×{k.shape[1]}"

    def kernel_file(job: Any, n_jobs: int) -> dict[str, Path]:
        if save_kernel is None:
            return {}
        if n_jobs > 1 or save_kernel.is_dir() or not save_kernel.suffix:
            return {"kernel": save_kernel / f"{job.output.stem}_kernel.txt"}
        if save_kernel.suffix.lower() not in (".png", ".txt", ".npy"):
            raise UsageError(f"--save-kernel {save_kernel}: use a .png, .txt or .npy file")
        return {"kernel": save_kernel}

    options = BatchOptions(
        output=output, recursive=recursive, suffix=suffix, fmt=fmt, quality=quality,
        bit_depth=opt.parse_bit_depth(bit_depth), skip_existing=skip_existing,
        overwrite=overwrite, fail_fast=fail_fast, max_pixels=max_pixels, json=json_output,
        quiet=quiet, no_progress=no_progress, shard=shard,
    )
    batch = plan_batch("blur", inputs, options, default_suffix="_blurred", extras=kernel_file,
                       protected=protected)

    def process(job: Any, image: Any, _tiles: Any) -> ItemResult:
        # a fresh noise generator per image: the same input gives the same result
        pixels = degrade.apply_kernel(image.pixels, k, np.random.default_rng(streams[1]),
                                      noise=noise, jpeg=jpeg, boundary=boundary)
        saved = opt.orient_kernel(k, kernel_convention)
        extras = {role: kernels.encode_kernel(path, saved) for role, path in job.extras.items()}
        return ItemResult(image.with_pixels(pixels), extras=extras)

    info(f"kernel {what}, noise σ={noise:g}, boundary {boundary}", quiet=quiet)
    header = {"kernel": what, "noise": noise, "jpeg": jpeg, "boundary": boundary, "seed": seed}
    raise typer.Exit(run_batch(batch, process, header=header))
