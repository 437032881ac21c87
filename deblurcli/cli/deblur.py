"""``deblurcli deblur``: run a pretrained deblurring network over images and folders."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from deblurcli import __version__, methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import info, print_json, progress_enabled
from deblurcli.errors import UsageError


def deblur(
    inputs: opt.InputsArg,
    output: opt.OutputOpt = None,
    method: Annotated[Optional[str], typer.Option("--method", metavar="NAME", help=(
        "Network family, run with its default shipped checkpoint: " + methods.listing("network")
        + ". Default: the shipped default model."))] = None,
    model: opt.ModelOpt = None,
    device: opt.DeviceOpt = "auto",
    precision: opt.PrecisionOpt = "auto",
    tile: opt.TileOpt = "auto",
    tile_overlap: opt.OverlapOpt = None,
    recursive: opt.RecursiveOpt = False,
    suffix: opt.SuffixOpt = None,
    fmt: opt.FormatOpt = "auto",
    quality: opt.QualityOpt = 95,
    bit_depth: opt.BitDepthOpt = "same",
    skip_existing: opt.SkipExistingOpt = False,
    overwrite: opt.OverwriteOpt = False,
    fail_fast: opt.FailFastOpt = False,
    max_pixels: opt.MaxPixelsOpt = None,
    offline: opt.OfflineOpt = False,
    cache_dir: opt.CacheDirOpt = None,
    json_output: opt.JsonOpt = False,
    quiet: opt.QuietOpt = False,
    no_progress: opt.NoProgressOpt = False,
) -> None:
    """Deblur photos with a pretrained network.

    Large images are processed in blended tiles; alpha, bit depth, EXIF and ICC are kept.

    Examples:

      deblurcli deblur examples/gopro_blurry.png --method resunet -o out/gopro_sharp.png

      deblurcli deblur shots/ -o out/ --recursive --format png --json

      deblurcli deblur photo.jpg --model resunet@synth-v1 --tile 512 -o sharp.jpg
    """
    from deblurcli.cli._batch import exit_code, reports_as_json, run_batch, summarize
    from deblurcli.cli._paths import collect_inputs, plan_outputs, resolve_conflicts

    if method is not None:
        if model is not None:
            raise UsageError("give --method (a family's default checkpoint) or --model (an exact "
                             "checkpoint), not both")
        methods.get(method, "network")
    tile_setting = opt.parse_tile(tile)
    depth = opt.parse_bit_depth(bit_depth)
    jobs = plan_outputs(
        collect_inputs(inputs, recursive=recursive), output, suffix=suffix, fmt=fmt,
        recursive=recursive,
    )
    todo, skipped = resolve_conflicts(jobs, overwrite=overwrite, skip_existing=skip_existing)

    import torch

    from deblurcli.engine import load_method, load_model, load_model_table
    from deblurcli.errors import ModelUnavailableError

    settings: dict[str, Any] = {"device": device, "precision": precision, "offline": offline,
                                "cache_dir": cache_dir}
    if method is not None:
        restorer = load_method(method, **settings)
    else:
        ref = model or load_model_table().default
        if ref is None:
            raise ModelUnavailableError(
                "no default model is shipped with this version; "
                "pass --method NAME, --model NAME@TAG or a .safetensors path"
            )
        restorer = load_model(ref, **settings)
    info(f"model {restorer.name} on {restorer.device} ({restorer.precision})", quiet=quiet)

    def process(image: Any, on_tiles: Any) -> tuple[Any, dict[str, Any]]:
        x = torch.from_numpy(image.pixels).permute(2, 0, 1).unsqueeze(0)
        y = restorer(x, tile=tile_setting, overlap=tile_overlap, on_progress=on_tiles)
        stats = restorer.last_run
        details = {"tile": stats.tile, "tile_retries": stats.tile_retries,
                   "fp32_fallbacks": stats.fp32_fallbacks}
        return image.with_pixels(y[0].permute(1, 2, 0).numpy()), details

    reports: list[Any] = []
    interrupted = False
    try:
        run_batch(
            todo, skipped, process, reports, max_pixels=max_pixels, bit_depth=depth,
            quality=quality, fail_fast=fail_fast,
            show_progress=progress_enabled(no_progress, quiet), quiet=quiet,
        )
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if json_output:
            print_json({
                "version": __version__,
                "command": "deblur",
                "model": {"name": restorer.name, **restorer.provenance},
                "device": str(restorer.device),
                "precision": restorer.precision,
                "tile": tile,
                "interrupted": interrupted,
                "items": reports_as_json(reports),
                "summary": summarize(reports),
            })
    raise typer.Exit(exit_code(reports))
