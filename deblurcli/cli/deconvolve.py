"""`deblurcli deconvolve`: non-blind deconvolution of one image with a known kernel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from deblurcli import methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import info, print_json
from deblurcli.cli._options import DeviceOpt, JsonOpt, OverwriteOpt, QuietOpt
from deblurcli.errors import UsageError

def deconvolve(
    input_path: Annotated[
        Path,
        typer.Argument(metavar="IN", exists=True, dir_okay=False, show_default=False,
                       help="Blurred input image."),
    ],
    kernel: Annotated[
        Path,
        typer.Option("--kernel", "-k", exists=True, dir_okay=False, show_default=False,
                     help="Blur kernel: .png/.jpg (normalised by its sum), .txt/.csv, .npy; "
                     "centre at (h//2, w//2), oriented as --kernel-convention says."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", show_default=False, help="Deblurred output image.")
    ],
    method: Annotated[str, typer.Option("--method", "-M", metavar="NAME", help=(
        "Solver: " + methods.listing("non-blind") + "."))] = methods.DEFAULT_METHOD["non-blind"],
    weight: Annotated[
        Optional[float],
        typer.Option(min=0.0, help="Regularisation: hyperlaplacian prior weight (default "
                     "1.25e-4) or wiener balance (default 8e-3); larger is smoother."),
    ] = None,
    alpha: Annotated[
        Optional[float], typer.Option(min=0.0, max=1.0, help="hyperlaplacian exponent (2/3).")
    ] = None,
    iterations: Annotated[
        Optional[int], typer.Option(min=1, help="rl iterations (default 100).")
    ] = None,
    tv_weight: Annotated[
        Optional[float], typer.Option("--tv-weight", min=0.0, help="rl TV damping (default 0).")
    ] = None,
    kernel_convention: opt.KernelConventionOpt = "convolve",
    rotate_kernel: Annotated[
        bool, typer.Option("--rotate-kernel", hidden=True,
                           help="Old spelling of --kernel-convention correlate.")
    ] = False,
    param: Annotated[Optional[list[str]], typer.Option("--param", metavar="KEY=VALUE", help=(
        "Any other solver option (repeatable), e.g. boundary=wrap, cg_iterations=5."))] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Deconvolve a blurred image with a known blur kernel (non-blind).

    Methods: hyperlaplacian (Krishnan & Fergus 2009, best quality, default), rl
    (Richardson–Lucy, optional TV damping) and wiener (one FFT, fastest). Colour is processed
    per channel; borders are handled without a ringing frame; large images are tiled.

    The kernel must be in the orientation the image was blurred with: deblurcli's own kernels
    (blur --save-kernel, deconvolve-blind) are convolve; Levin09 .txt kernels are correlate.
    The wrong one leaves the photo almost unchanged.

    Examples:

      deblurcli deconvolve blurred.png --kernel k.txt -o sharp.png

      deblurcli deconvolve blurred.png -k k.png -o out.png --method wiener --weight 0.01

      deblurcli deconvolve examples/levin_im1_kernel2_blurry.png
      --kernel examples/levin_kernel2.txt --kernel-convention correlate -o out/levin.png
    """
    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists; pass --overwrite to replace it")
    if output.resolve() == input_path.resolve():
        raise UsageError("--output must differ from the input")
    spec = methods.get(method, "non-blind")
    convention = "correlate" if rotate_kernel else opt.check_convention(kernel_convention)
    chosen = {"weight": weight, "alpha": alpha, "iterations": iterations, "tv_weight": tv_weight}
    params = {("balance" if method == "wiener" and k == "weight" else k): v
              for k, v in chosen.items() if v is not None}
    wrong = [k for k in params if k not in spec.param_map]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise UsageError(f"{flags} does not apply to --method {method}")
    dedicated = ("balance", "weight", "alpha", "iterations", "tv_weight")
    params.update(methods.parse_params(param, spec.param_map, reserved=dedicated))

    import numpy as np
    import torch

    from deblurcli import deconv, io
    from deblurcli.engine.device import resolve_device

    k = opt.read_kernel_file(kernel, convention)
    image = io.read_image(input_path)
    torch_device = resolve_device(device)
    x = torch.from_numpy(np.ascontiguousarray(image.pixels.transpose(2, 0, 1)))[None]
    start = time.perf_counter()
    y = deconv.deconvolve(x.to(torch_device), torch.from_numpy(k), method=method, **params)
    seconds = time.perf_counter() - start
    io.write_image(output, image.with_pixels(y[0].cpu().numpy().transpose(1, 2, 0)))
    info(f"wrote {output} ({method}, kernel {k.shape[0]}×{k.shape[1]}, {seconds:.2f} s on "
         f"{torch_device})", quiet=quiet)
    if json_out:
        print_json({"input": str(input_path), "output": str(output), "method": method,
                    "params": params, "kernel": str(kernel), "device": str(torch_device),
                    "seconds": seconds})
