"""``deblurcli deblur-ref``: deblur photos with the help of a sharp reference of the same scene."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deblurcli import methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import info
from deblurcli.errors import ImageError, UsageError

REFERENCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
"""Files of a ``--ref`` folder that count as references."""


def _reference_networks() -> list[str]:
    return [m.name for m in methods.of_kind("network") if m.inputs == 2]


def deblur_ref(
    inputs: opt.InputsArg,
    reference: Annotated[Path, typer.Option(
        "--ref", "-R", metavar="FILE|DIR", show_default=False,
        help="Sharp reference of the same scene (another frame, another shot; it may be framed, "
        "zoomed or exposed differently): one image for every input, or a folder whose images "
        "pair with the inputs by file name (stem; any image suffix).")],
    output: opt.OutputOpt = None,
    method: Annotated[Optional[str], typer.Option("--method", metavar="NAME", help=(
        "Reference-based network family, run with its default checkpoint: "
        + "; ".join(f"{m.name} ({m.description})" for m in methods.of_kind("network")
                    if m.inputs == 2) + ". Default: ref."))] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="NAME[@TAG]|FILE",
        help="Exact reference-based checkpoint: name@tag (see `deblurcli models list`) or a "
        ".safetensors path. Default: the checkpoint of --method.")] = None,
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
    shard: opt.ShardOpt = None,
) -> None:
    """Deblur photos using a sharp reference photo of the same scene.

    The reference need not be aligned: the network finds, for every patch of the blurry photo,
    the most similar patch of the reference and borrows its detail. A grayscale photo uses the
    reference's luminance; a grayscale reference serves a colour photo as gray. Each tile of a
    large photo is matched against the whole reference; a reference in a folder that cannot be
    read fails only its own photo.

    Examples:

      deblurcli deblur-ref blurry.png --ref sharp.png -o out.png

      deblurcli deblur-ref burst/ --ref burst/best.jpg -o out/

      deblurcli deblur-ref shots/ --ref references/ -o out/ --json
    """
    from deblurcli.cli._batch import BatchOptions, ItemResult, plan_batch, run_batch

    if method is not None and model is not None:
        raise UsageError("give --method (a family's default checkpoint) or --model (an exact "
                         "checkpoint), not both")
    if method is not None and methods.get(method, "network").inputs != 2:
        raise UsageError(f"--method {method} takes no reference (use `deblurcli deblur`); "
                         f"deblur-ref runs {', '.join(_reference_networks())}")
    tile_setting = opt.parse_tile(tile)
    options = BatchOptions(
        output=output, recursive=recursive, suffix=suffix, fmt=fmt, quality=quality,
        bit_depth=opt.parse_bit_depth(bit_depth), skip_existing=skip_existing,
        overwrite=overwrite, fail_fast=fail_fast, max_pixels=max_pixels, json=json_output,
        quiet=quiet, no_progress=no_progress, shard=shard,
    )
    references = _reference_plan(reference)
    protected = tuple(references.values()) if references else (reference,)
    batch = plan_batch("deblur-ref", inputs, options, protected=protected)
    pairs = _pair(batch.jobs, references) if references is not None else None
    shared = None if pairs is not None else _read_shared(reference, max_pixels)

    from deblurcli.engine import load_method, load_model

    settings: dict[str, Any] = {"device": device, "precision": precision, "offline": offline,
                                "cache_dir": cache_dir}
    restorer = (load_model(model, **settings) if model is not None
                else load_method(method or "ref", **settings))
    if restorer.info.inputs != 2:
        raise UsageError(f"model {restorer.name} takes no reference; use `deblurcli deblur`")
    info(f"model {restorer.name} on {restorer.device} ({restorer.precision})", quiet=quiet)

    def process(job: Any, image: Any, on_tiles: Any) -> ItemResult:
        from deblurcli.io import read_image

        if pairs is not None:
            ref_path = pairs[job.input]
            ref_tensor = read_image(ref_path, max_pixels=max_pixels).to_tensor()
        else:
            ref_path, ref_tensor = reference, shared
        y = restorer(image.to_tensor(), ref_tensor, tile=tile_setting, overlap=tile_overlap,
                     on_progress=on_tiles)
        stats = restorer.last_run
        details = {"reference": str(ref_path), "tile": stats.tile,
                   "tile_retries": stats.tile_retries, "fp32_fallbacks": stats.fp32_fallbacks}
        return ItemResult(image.with_tensor(y), details=details)

    header = {"model": {"name": restorer.name, **restorer.provenance},
              "reference": str(reference), "device": str(restorer.device),
              "precision": restorer.precision, "tile": tile}
    raise typer.Exit(run_batch(batch, process, header=header))


def _reference_plan(reference: Path) -> dict[str, Path] | None:
    """A ``--ref`` folder's images by stem (None for a single file).

    Raises:
        UsageError: the path does not exist, or a folder holds no images or two with one stem.
    """
    if reference.is_dir():
        found: dict[str, Path] = {}
        for path in sorted(reference.iterdir()):
            if path.is_file() and path.suffix.lower() in REFERENCE_SUFFIXES:
                if path.stem in found:
                    raise UsageError(f"--ref {reference}: {found[path.stem].name} and {path.name} "
                                     "share a name; keep one reference per stem")
                found[path.stem] = path
        if not found:
            raise UsageError(f"--ref {reference}: folder holds no images "
                             f"({', '.join(REFERENCE_SUFFIXES)})")
        return found
    if not reference.exists():
        raise UsageError(f"--ref {reference}: reference not found")
    if not reference.is_file():
        raise UsageError(f"--ref {reference}: not a file or folder")
    return None


def _pair(jobs: list[Any], references: dict[str, Path]) -> dict[Path, Path]:
    """Each job's reference from the folder, by the input's stem (pre-flight, before compute)."""
    pairs: dict[Path, Path] = {}
    for job in jobs:
        ref = references.get(job.input.stem)
        if ref is None:
            raise UsageError(f"{job.input}: no reference named {job.input.stem}.* in the --ref "
                             "folder")
        if ref.resolve() == job.input.resolve():
            raise UsageError(f"{job.input}: is its own reference; give a different --ref folder")
        pairs[job.input] = ref
    return pairs


def _read_shared(reference: Path, max_pixels: int | None) -> Any:
    """The one reference of the batch as a tensor; any failure is a usage error (exit 2)."""
    from deblurcli.io import read_image

    try:
        return read_image(reference, max_pixels=max_pixels).to_tensor()
    except ImageError as exc:
        message = str(exc)
        where = "" if str(reference) in message else f"{reference}: "
        raise UsageError(f"--ref {where}{message}") from None
    except OSError as exc:
        raise UsageError(f"--ref {reference}: cannot read ({exc.strerror or exc})") from None
