"""The one batch runner behind every command that writes images.

:func:`plan_batch` expands the inputs, plans every file each item writes (the image plus extras
such as kernel files), checks them for collisions and bad locations, picks this process's
``--shard`` and applies the existing-output policy: all before any compute. :func:`run_batch`
then reads, processes and writes item by item. An item's files are encoded in memory, staged
as temporary files and published together, each target claimed at that moment (a concurrent
run that wrote it first wins; this item is reported "exists", nothing is replaced). A failed
item (unreadable input, an output taken, a full disk) is reported with its file named and the
batch goes on; the exit code then says 3 (or 6 when every failure was out-of-memory).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deblurcli import __version__
from deblurcli.cli._console import err_console, error_line, info, print_json, warn
from deblurcli.cli._paths import (
    DEFAULT_SUFFIX,
    Job,
    check_plan,
    collect_inputs,
    parse_shard,
    plan_outputs,
    resolve_conflicts,
    select_shard,
)
from deblurcli.errors import (
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    EXIT_PARTIAL,
    ImageError,
    KernelError,
    LossyConversionWarning,
    TileOutOfMemoryError,
    UsageError,
)

TileProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class BatchOptions:
    """The options every image-writing command shares (``-o``, ``--suffix``, ... ``--shard``)."""

    output: Path | None = None
    recursive: bool = False
    suffix: str | None = None
    fmt: str = "auto"
    quality: int = 95
    bit_depth: int | str = "same"
    skip_existing: bool = False
    overwrite: bool = False
    fail_fast: bool = False
    max_pixels: int | None = None
    json: bool = False
    quiet: bool = False
    no_progress: bool = False
    shard: str | None = None


@dataclass
class Batch:
    """A planned, pre-flight-checked batch: what this process runs and what it skips."""

    command: str
    options: BatchOptions
    jobs: list[Job]
    """Items of this shard to run."""
    skipped: list[Job]
    """Items of this shard whose output exists (``--skip-existing``)."""
    total: int
    """Items in the whole batch, all shards."""


@dataclass
class ItemResult:
    """What ``process`` returns for one item."""

    image: Any
    """The :class:`deblurcli.io.Image` to write to the job's output."""
    extras: dict[str, bytes] = field(default_factory=dict)
    """Encoded contents of the job's extra files, by role (the keys of ``Job.extras``)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Per-item facts for the ``--json`` report."""


@dataclass
class ItemReport:
    """Outcome of one file, as it appears in the ``--json`` summary."""

    input: str
    output: str
    status: str
    """``ok``, ``skipped`` or ``failed``."""
    error: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


Process = Callable[[Job, Any, TileProgress], ItemResult]
"""``process(job, image, on_tile_progress) -> ItemResult``; raise an :class:`ImageError` for a
per-item failure (the batch goes on)."""


def plan_batch(
    command: str,
    inputs: list[str],
    options: BatchOptions,
    *,
    default_suffix: str = DEFAULT_SUFFIX,
    extras: Callable[[Job, int], Mapping[str, Path]] | None = None,
    protected: tuple[Path, ...] = (),
) -> Batch:
    """Expand, plan and check a batch before any compute.

    Args:
        command: Command name for messages and the JSON document.
        inputs: Files, folders and globs as typed.
        options: The shared batch options.
        default_suffix: Output-name suffix when results go beside their inputs.
        extras: ``extras(job, n_jobs)`` → further files the item writes, by role.
        protected: Files that must never be written (e.g. a kernel file being read).

    Raises:
        UsageError: no inputs, a bad option, colliding or misplaced outputs, existing outputs
            without ``--overwrite``/``--skip-existing``.
    """
    shard = parse_shard(options.shard)
    if options.overwrite and options.skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    out_folder = options.output if options.output is not None and options.output.is_dir() else None
    found = collect_inputs(inputs, recursive=options.recursive, exclude=out_folder)
    jobs = plan_outputs(found, options.output, suffix=options.suffix, fmt=options.fmt,
                        recursive=options.recursive, default_suffix=default_suffix)  # fmt: skip
    if extras is not None:
        jobs = [Job(j.input, j.output, j.base, dict(extras(j, len(jobs)))) for j in jobs]
    check_plan(jobs, protected)  # over the whole batch, so every shard refuses alike
    mine = select_shard(jobs, shard)
    todo, skipped = resolve_conflicts(mine, overwrite=options.overwrite,
                                      skip_existing=options.skip_existing)  # fmt: skip
    return Batch(command, options, todo, skipped, len(jobs))


def run_batch(
    batch: Batch,
    process: Process,
    *,
    header: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> int:
    """Run ``process`` over the batch, write each item's files together, report, and return
    the exit code. With ``--json`` one document goes to stdout, also when interrupted.

    Args:
        batch: From :func:`plan_batch`.
        process: Turns one input image into an :class:`ItemResult`.
        header: Command-specific fields of the JSON document (model, method, ...).
        progress: Draw the per-file progress bar (commands with their own bar pass False).

    Raises:
        KeyboardInterrupt: re-raised after the JSON summary is flushed; nothing partial is left.
    """
    opts = batch.options
    reports: list[ItemReport] = []
    interrupted = False
    for folder in sorted({p.parent for job in batch.jobs for p in job.outputs}):
        from deblurcli._atomic import clean_stale_temps

        for stale in clean_stale_temps(folder):
            info(f"removed {stale} (left by an interrupted run)", quiet=opts.quiet)
    try:
        _run_items(batch, process, reports, show=progress and _show_progress(opts))
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if opts.json:
            print_json({
                "version": __version__,
                "command": batch.command,
                **(header or {}),
                "shard": opts.shard,
                "interrupted": interrupted,
                "items": reports_as_json(reports),
                "summary": summarize(reports),
            })
    return exit_code(reports)


def _show_progress(opts: BatchOptions) -> bool:
    from deblurcli.cli._console import progress_enabled

    return progress_enabled(opts.no_progress, opts.quiet)


def _run_items(batch: Batch, process: Process, reports: list[ItemReport], *, show: bool) -> None:
    opts = batch.options
    reports.extend(ItemReport(str(j.input), str(j.output), "skipped") for j in batch.skipped)
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, disable=not show, transient=True,
    )
    with bar:
        files_task = bar.add_task("images", total=len(batch.jobs))
        tiles_task = bar.add_task("tiles", total=1, visible=False)

        def on_tiles(done: int, total: int) -> None:
            bar.update(tiles_task, completed=done, total=total, visible=total > 1)

        for job in batch.jobs:
            bar.update(files_task, description=job.input.name)
            report = _run_item(job, process, on_tiles, opts)
            reports.append(report)
            bar.advance(files_task)
            if report.status == "failed" and opts.fail_fast:
                break


def _run_item(job: Job, process: Process, on_tiles: TileProgress,
              opts: BatchOptions) -> ItemReport:  # fmt: skip
    """Read, process and write one item; every expected failure becomes a report."""
    from deblurcli._atomic import OutputExistsError, write_files
    from deblurcli.io import check_writable, encode_image, read_image

    started = time.perf_counter()
    report = ItemReport(str(job.input), str(job.output), "ok")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LossyConversionWarning)
        try:
            if not opts.overwrite:  # written meanwhile by another run: don't compute it again
                taken = next((p for p in job.outputs if p.exists()), None)
                if taken is not None:
                    raise OutputExistsError(taken)
            image = read_image(job.input, max_pixels=opts.max_pixels)
            check_writable(job.output, image)
            result = process(job, image, on_tiles)
            files: dict[Path, bytes] = {
                job.output: encode_image(job.output, result.image, bit_depth=opts.bit_depth,  # type: ignore[arg-type]
                                         quality=opts.quality),
            }
            for role, target in job.extras.items():
                files[target] = result.extras[role]
            write_files(files, overwrite=opts.overwrite)
        except OutputExistsError as exc:
            if opts.skip_existing:
                report.status, report.error = "skipped", str(exc)
            else:
                report.status, report.error = "failed", str(exc)
        except (ImageError, KernelError, TileOutOfMemoryError) as exc:
            report.status, report.error = "failed", str(exc)
            report.details["oom"] = isinstance(exc, TileOutOfMemoryError)
        except OSError as exc:
            where = exc.filename or job.output
            report.status = "failed"
            report.error = f"{where}: cannot write ({exc.strerror or exc})"
        else:
            report.details.update(result.details)
            report.details.update(width=image.width, height=image.height,
                                  bit_depth=image.dtype.itemsize * 8,
                                  alpha=image.alpha is not None)  # fmt: skip
            for role, target in job.extras.items():
                report.details.setdefault(role, str(target))
    for item in caught:
        if issubclass(item.category, LossyConversionWarning):
            report.warnings.append(str(item.message))
            warn(str(item.message))
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
    report.seconds = round(time.perf_counter() - started, 3)
    if report.error is not None and str(job.input) not in report.error and not any(
            str(p) in report.error for p in job.outputs):
        report.error = f"{job.input}: {report.error}"  # every error line names its file
    if report.status == "failed":
        error_line(report.error or f"{job.input}: failed")
    elif report.status == "skipped":
        info(f"{job.input}: skipped ({report.error})", quiet=opts.quiet)
    else:
        info(f"{job.input} → {job.output} ({report.seconds:.1f}s)", quiet=opts.quiet)
    return report


def summarize(reports: list[ItemReport]) -> dict[str, int]:
    """Counts of ok/skipped/failed items."""
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    for report in reports:
        counts[report.status] += 1
    return counts


def exit_code(reports: list[ItemReport]) -> int:
    """0 when nothing failed; 6 when every failure was out-of-memory; else 3."""
    failed = [r for r in reports if r.status == "failed"]
    if not failed:
        return EXIT_OK
    if all(r.details.get("oom") for r in failed):
        return EXIT_OUT_OF_MEMORY
    return EXIT_PARTIAL


def reports_as_json(reports: list[ItemReport]) -> list[dict[str, Any]]:
    """Plain dictionaries for the ``--json`` document."""
    return [asdict(r) for r in reports]
