"""`deblurcli blur`: make a blurred test image from a sharp one (the inverse of `deblur`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from deblurcli.cli._console import info
from deblurcli.errors import UsageError

KERNEL_HELP = (
    "motion (random camera shake), gaussian (random anisotropic), defocus (random disk), or a "
    "kernel file: .png/.jpg (normalised by its sum), .txt/.csv (numbers per row), .npy. "
    "Files are used as stored, in true-convolution orientation."
)


def blur(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="IN", exists=True, dir_okay=False, show_default=False,
            help="Sharp input image.",
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", show_default=False, help="Blurred output image.")
    ],
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
        typer.Option("--save-kernel", help="Also write the kernel (.png view, .txt/.npy exact)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
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
    targets = [output] + ([save_kernel] if save_kernel is not None else [])
    for target in targets:
        if target.exists() and not overwrite:
            raise UsageError(f"{target} exists; pass --overwrite to replace it")
    if save_kernel is not None and save_kernel.resolve() == output.resolve():
        raise UsageError("--save-kernel and --output name the same file")
    if kernel_size % 2 == 0:
        raise UsageError(f"--kernel-size must be odd, got {kernel_size}")

    import numpy as np

    from deblurcli import degrade, io, kernels

    streams = np.random.SeedSequence(seed).spawn(2)  # kernel and noise drawn independently
    kernel_rng, noise_rng = (np.random.default_rng(s) for s in streams)
    if kernel in kernels.KERNEL_KINDS:
        k = kernels.random_kernel(kernel_rng, kinds=(kernel,), max_size=kernel_size)
        what = f"{kernel} {kernel_size}×{kernel_size}, seed {seed}"
    else:
        if not Path(kernel).is_file():
            raise UsageError(f"--kernel {kernel!r} is neither {', '.join(kernels.KERNEL_KINDS)} "
                             "nor an existing kernel file")
        k = kernels.read_kernel(kernel)
        what = f"{kernel} {k.shape[0]}×{k.shape[1]}"

    image = io.read_image(input_path)
    pixels = degrade.convolve(image.pixels, k, boundary=boundary)
    if noise > 0:
        pixels = degrade.add_gaussian_noise(pixels, noise, noise_rng)
    if jpeg is not None:
        pixels = degrade.jpeg_degrade(pixels, jpeg)
    io.write_image(output, image.with_pixels(np.clip(pixels, 0.0, 1.0)))
    if save_kernel is not None:
        kernels.write_kernel(save_kernel, k)
    info(f"wrote {output} (kernel {what}, noise σ={noise:g}, boundary {boundary})")
