"""``deblurcli deblur-ref``: deblur photos with the help of a sharp reference of the same scene."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deblurcli import methods
from deblurcli.cli import _options as opt
from deblurcli.cli._console import info, warn
from deblurcli.errors import ImageError, UsageError

REFERENCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
"""Files of a ``--ref`` folder that count as references."""


def _reference_methods() -> list[methods.MethodSpec]:
    """What ``--method`` takes: the reference kind and the 2-input networks, table order."""
    return [m for m in methods.METHODS if m.inputs == 2]


def _reference_spec(name: str) -> methods.MethodSpec:
    spec = methods.TABLE.get(name)
    if spec is None or spec.inputs != 2:
        valid = ", ".join(m.name for m in _reference_methods())
        if spec is not None:
            raise UsageError(f"--method {name} takes no reference (use `deblurcli "
                             f"{methods.COMMAND[spec.kind]}`); deblur-ref runs {valid}")
        raise UsageError(f"unknown method {name!r} for --method; known: {valid}")
    return spec


def deblur_ref(
    inputs: opt.InputsArg,
    reference: Annotated[Path, typer.Option(
        "--ref", "-R", metavar="FILE|DIR", show_default=False,
        help="Sharp reference of the same scene (another frame, another shot; it may be framed, "
        "zoomed or exposed differently): one image for every input, or a folder whose images "
        "pair with the inputs by file name (stem; any image suffix).")],
    output: opt.OutputOpt = None,
    method: Annotated[Optional[str], typer.Option("--method", metavar="NAME", help=(
        "Reference-based method: "
        + "; ".join(f"{m.name} ({m.description})" for m in _reference_methods())
        + f". Default: {methods.DEFAULT_METHOD['reference']}."))] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="NAME[@TAG]|FILE",
        help="Exact reference-based network checkpoint: name@tag (see `deblurcli models "
        "list`) or a .safetensors path; runs that network instead of --method.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", metavar="KEY=VALUE", help=(
        "Option of a reference-kind method (repeatable), e.g. fallback=none, "
        "kernel_size=81. ref-kernel takes "
        + ", ".join(p.name for p in methods.TABLE["ref-kernel"].params) + "."))] = None,
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

    The default, ref-kernel, finds the reference in the photo (scale 0.75-1.33, rotation up to
    10 degrees, any shift and exposure), measures the blur kernel against it and deconvolves
    the photo. Where one kernel does not explain the photo (blur that varies across the frame,
    moving objects, an unrelated reference) the ref network restores it instead
    (--param fallback=none: the photo is left unchanged, with a warning). The network (--method
    ref) matches every patch of the photo to the reference and borrows its detail; each tile of
    a large photo is matched against the whole reference. A grayscale photo uses the
    reference's luminance; a grayscale reference serves a colour photo as gray. A reference in a
    folder that cannot be read fails only its own photo.

    Examples:

      deblurcli deblur-ref blurry.png --ref sharp.png -o out.png

      deblurcli deblur-ref burst/ --ref burst/best.jpg -o out/

      deblurcli deblur-ref shots/ --ref references/ -o out/ --json

      deblurcli deblur-ref blurry.png --ref sharp.png --method ref -o out.png
    """
    from deblurcli.cli._batch import BatchOptions, ItemResult, plan_batch, run_batch

    if method is not None and model is not None:
        raise UsageError("give --method (a family's default checkpoint) or --model (an exact "
                         "checkpoint), not both")
    spec = None if model is not None else _reference_spec(
        method or methods.DEFAULT_METHOD["reference"])
    kernel_method = spec is not None and spec.kind == "reference"
    if param and not kernel_method:
        raise UsageError("--param is for " + ", ".join(
            m.name for m in methods.of_kind("reference")) + "; a network takes --tile and "
            "--tile-overlap")
    params = (spec.defaults() | methods.parse_params(param, spec.param_map)
              if kernel_method and spec is not None else {})
    kernel_config = _kernel_config(params) if kernel_method else None
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
    restorer = None
    if model is not None:
        restorer = load_model(model, **settings)
    elif spec is not None and spec.kind == "network":
        restorer = load_method(spec.name, **settings)
    elif params.get("fallback") == "ref":
        restorer = load_method("ref", **settings)
    if restorer is not None and restorer.info.inputs != 2:
        raise UsageError(f"model {restorer.name} takes no reference; use `deblurcli deblur`")
    if kernel_method:
        fallback = f"; where it does not fit: {restorer.name}" if restorer else ""
        info(f"method {spec.name if spec else ''}: kernel measured against the reference"
             f"{fallback}", quiet=quiet)
    elif restorer is not None:
        info(f"model {restorer.name} on {restorer.device} ({restorer.precision})", quiet=quiet)

    def process(job: Any, image: Any, on_tiles: Any) -> ItemResult:
        from deblurcli.errors import UnsupportedImageError
        from deblurcli.io import read_image

        if pairs is not None:
            ref_path = pairs[job.input]
            ref_tensor = read_image(ref_path, max_pixels=max_pixels).to_tensor()
        else:
            ref_path, ref_tensor = reference, shared
        details: dict[str, Any] = {"reference": str(ref_path)}
        if kernel_config is not None:
            from deblurcli.engine.device import resolve_device
            from deblurcli.io import tensor_to_hwc
            from deblurcli.optim.reference import deblur_with_reference

            try:
                result = deblur_with_reference(image.pixels, tensor_to_hwc(ref_tensor),
                                               kernel_config, device=resolve_device(device))
            except UnsupportedImageError as exc:  # per file: report it and go on (exit 3)
                raise UnsupportedImageError(f"{job.input} (reference {ref_path}): {exc}") from exc
            fit = result.estimate.details
            details["kernel_fit"] = {key: fit[key] for key in (
                "misfit", "explained", "ecc", "overlap", "kernel_size", "seconds")}
            details["kernel_fits"] = result.estimate.fits
            if result.image is not None:
                details["restored_by"] = "kernel"
                return ItemResult(image.with_pixels(result.image), details=details)
            why = (f"one kernel does not explain {job.input} against {ref_path} "
                   f"({result.estimate.why_not_fit})")
            if restorer is None:
                warn(f"{why}; left unchanged (fallback=none)")
                details["restored_by"] = "none"
                return ItemResult(image, details=details)
            info(f"{why}; {restorer.name} restores it", quiet=quiet)
            details["restored_by"] = restorer.name
        assert restorer is not None
        y = restorer(image.to_tensor(), ref_tensor, tile=tile_setting, overlap=tile_overlap,
                     on_progress=on_tiles)
        stats = restorer.last_run
        details |= {"tile": stats.tile, "tile_retries": stats.tile_retries,
                    "fp32_fallbacks": stats.fp32_fallbacks}
        return ItemResult(image.with_tensor(y), details=details)

    method_name = spec.name if spec is not None else None
    header: dict[str, Any] = {"method": method_name, "reference": str(reference),
                              "tile": tile}
    if kernel_method:
        header["params"] = params
    if restorer is not None:
        header |= {"model": {"name": restorer.name, **restorer.provenance},
                   "device": str(restorer.device), "precision": restorer.precision}
    raise typer.Exit(run_batch(batch, process, header=header))


def _kernel_config(params: dict[str, Any]) -> Any:
    """The estimation settings of ``ref-kernel`` from its checked ``--param`` values."""
    from deblurcli.optim.reference import ReferenceKernelConfig

    flow = params["flow"]
    if flow < 0:
        raise UsageError(f"--param flow must be >= 0 (px), got {flow}")
    extra = {"flow_sigma": flow, "rounds": 3, "robust_passes": 1} if flow > 0 else {}
    return ReferenceKernelConfig(kernel_size=params["kernel_size"],
                                 max_misfit=params["max_misfit"],
                                 min_explained=params["min_explained"], **extra)


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
