"""`deblurcli deconvolve`: non-blind deconvolution of images with a known kernel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deblurcli import methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import info
from deblurcli.cli._options import DeviceOpt
from deblurcli.errors import UsageError


def deconvolve(
    inputs: opt.InputsArg,
    kernel: Annotated[
        Path,
        typer.Option("--kernel", "-k", exists=True, dir_okay=False, show_default=False,
                     metavar="FILE",
                     help="Blur kernel: .png/.jpg (normalised by its sum), .txt/.csv, .npy; "
                     "centre at (h//2, w//2), oriented as --kernel-convention says."),
    ],
    output: opt.OutputOpt = None,
    method: Annotated[str, typer.Option("--method", "-M", metavar="NAME", help=(
        "Solver: " + methods.listing("non-blind") + "."))] = methods.DEFAULT_METHOD["non-blind"],
    weight: Annotated[
        Optional[float],
        typer.Option(min=0.0, metavar="X", help="Regularisation: hyperlaplacian prior weight "
                     "(default: 3.5·σ² from each photo's estimated noise σ, between 1e-4 and 1e-2) "
                     "or wiener balance (default 8e-3); larger is smoother."),
    ] = None,
    alpha: Annotated[
        Optional[float], typer.Option(min=0.0, max=1.0, metavar="X",
                                      help="hyperlaplacian exponent in (0, 1] (2/3).")
    ] = None,
    iterations: Annotated[
        Optional[int], typer.Option(min=1, metavar="N", help="rl iterations (default 100).")
    ] = None,
    tv_weight: Annotated[
        Optional[float], typer.Option("--tv-weight", min=0.0, metavar="X",
                                      help="rl TV damping (default 0).")
    ] = None,
    kernel_convention: opt.KernelConventionOpt = "convolve",
    rotate_kernel: Annotated[
        bool, typer.Option("--rotate-kernel", hidden=True,
                           help="Old spelling of --kernel-convention correlate.")
    ] = False,
    param: Annotated[Optional[list[str]], typer.Option("--param", metavar="KEY=VALUE", help=(
        "Any other solver option (repeatable), e.g. boundary=wrap, cg_iterations=5."))] = None,
    device: DeviceOpt = "auto",
    recursive: opt.RecursiveOpt = False,
    suffix: opt.SuffixOpt = None,
    fmt: opt.FormatOpt = "auto",
    quality: opt.QualityOpt = 95,
    bit_depth: opt.BitDepthOpt = "same",
    skip_existing: opt.SkipExistingOpt = False,
    overwrite: opt.OverwriteOpt = False,
    fail_fast: opt.FailFastOpt = False,
    max_pixels: opt.MaxPixelsOpt = None,
    json_out: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
    no_progress: opt.NoProgressOpt = False,
    shard: opt.ShardOpt = None,
) -> None:
    """Deconvolve a blurred image with a known blur kernel (non-blind).

    The solvers are listed under --method (deblurcli models list describes them). Colour is
    processed per channel; borders are handled without a ringing frame; large images are tiled.

    The kernel must be in the orientation the image was blurred with: deblurcli's own kernels
    (blur --save-kernel, deconvolve-blind) are convolve; Levin09 .txt kernels are correlate.
    The wrong one leaves the photo almost unchanged.

    Examples:

      deblurcli deconvolve blurred.png --kernel k.txt -o sharp.png

      deblurcli deconvolve blurred.png -k k.png -o out.png --method wiener --weight 0.01

      deblurcli deconvolve levin_blurry.png -k levin_kernel.txt --kernel-convention correlate
    """
    from deblurcli.cli._batch import BatchOptions, ItemResult, plan_batch, run_batch

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

    import torch

    from deblurcli import deconv
    from deblurcli.engine.device import resolve_device

    k = opt.read_kernel_file(kernel, convention)
    options = BatchOptions(
        output=output, recursive=recursive, suffix=suffix, fmt=fmt, quality=quality,
        bit_depth=opt.parse_bit_depth(bit_depth), skip_existing=skip_existing,
        overwrite=overwrite, fail_fast=fail_fast, max_pixels=max_pixels, json=json_out,
        quiet=quiet, no_progress=no_progress, shard=shard,
    )
    batch = plan_batch("deconvolve", inputs, options, default_suffix="_deconvolved",
                       protected=(kernel,))
    torch_device = resolve_device(device)
    kernel_tensor = torch.from_numpy(k)

    adaptive = method == "hyperlaplacian" and "weight" not in params

    def process(job: Any, image: Any, _tiles: Any) -> ItemResult:
        start = time.perf_counter()
        solve = dict(params)
        details: dict[str, Any] = {}
        if adaptive:  # the prior weight follows this photo's noise
            from deblurcli.noise import estimate_noise_sigma

            sigma = estimate_noise_sigma(image.pixels)
            solve["weight"] = deconv.noise_weight(sigma)
            details = {"noise_sigma": round(sigma, 5), "weight": solve["weight"]}
        y = deconv.deconvolve(image.to_tensor().to(torch_device), kernel_tensor, method=method,
                              **solve)
        details["solve_seconds"] = round(time.perf_counter() - start, 3)
        return ItemResult(image.with_tensor(y), details=details)

    info(f"{method}, kernel {k.shape[0]}×{k.shape[1]} on {torch_device}", quiet=quiet)
    header = {"method": method, "params": params, "kernel": str(kernel),
              "device": str(torch_device)}
    raise typer.Exit(run_batch(batch, process, header=header))
