"""``deblurcli deblur``: run a pretrained deblurring network over images and folders."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from deblurcli import methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import info
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
    ensemble: opt.EnsembleOpt = 1,
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
    shard: opt.ShardOpt = None,
) -> None:
    """Deblur photos with a pretrained network.

    Large images are processed in blended tiles; alpha, bit depth, EXIF and ICC are kept.

    Examples:

      deblurcli deblur examples/gopro_blurry.png --method nafnet -o out/gopro_sharp.png

      deblurcli deblur shots/ -o out/ --recursive --format png --json

      deblurcli deblur photo.jpg --model resunet@shake-v1 --tile 512 -o sharp.jpg

      deblurcli deblur photo.jpg --ensemble 8 -o sharp.png   # 8 flips/transposes averaged
    """
    from deblurcli.cli._batch import BatchOptions, ItemResult, plan_batch, run_batch

    if method is not None:
        if model is not None:
            raise UsageError("give --method (a family's default checkpoint) or --model (an exact "
                             "checkpoint), not both")
        if methods.get(method, "network").inputs == 2:
            raise UsageError(f"--method {method} needs a sharp reference photo: "
                             f"deblurcli deblur-ref IN --ref REF --method {method}")
    tile_setting = opt.parse_tile(tile)
    from deblurcli.engine.restorer import check_ensemble

    check_ensemble(ensemble, "--ensemble")
    options = BatchOptions(
        output=output, recursive=recursive, suffix=suffix, fmt=fmt, quality=quality,
        bit_depth=opt.parse_bit_depth(bit_depth), skip_existing=skip_existing,
        overwrite=overwrite, fail_fast=fail_fast, max_pixels=max_pixels, json=json_output,
        quiet=quiet, no_progress=no_progress, shard=shard,
    )
    batch = plan_batch("deblur", inputs, options)

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
        if restorer.info.inputs == 2:
            raise UsageError(f"model {restorer.name} needs a sharp reference photo: "
                             f"deblurcli deblur-ref IN --ref REF --model {ref}")
        if restorer.info.guide_channels:
            raise UsageError(f"model {restorer.name} finishes a blind deconvolution and reads "
                             f"its guide: deblurcli deconvolve-blind IN --finish {ref}")
    info(f"model {restorer.name} on {restorer.device} ({restorer.precision})", quiet=quiet)

    def process(job: Any, image: Any, on_tiles: Any) -> ItemResult:
        y = restorer(image.to_tensor(), tile=tile_setting, overlap=tile_overlap,
                     ensemble=ensemble, on_progress=on_tiles)
        stats = restorer.last_run
        details = {"tile": stats.tile, "tile_retries": stats.tile_retries,
                   "fp32_fallbacks": stats.fp32_fallbacks}
        return ItemResult(image.with_tensor(y), details=details)

    header = {"model": {"name": restorer.name, **restorer.provenance},
              "device": str(restorer.device), "precision": restorer.precision, "tile": tile,
              "ensemble": ensemble}
    raise typer.Exit(run_batch(batch, process, header=header))
