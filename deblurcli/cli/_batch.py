"""The per-file loop shared by batch commands: read, process, write atomically, report.

A file that fails (unreadable, unsupported, out of memory) is reported and the batch goes on;
the exit code then says 3 (or 6 when every failure was out-of-memory). Outputs are written via a
temporary file and a rename, so an interrupted run leaves no partial files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deblurcli.cli._console import err_console, error_line, info
from deblurcli.cli._paths import Job
from deblurcli.errors import (
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    EXIT_PARTIAL,
    ImageError,
    TileOutOfMemoryError,
)

TileProgress = Callable[[int, int], None]


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


def run_batch(
    jobs: list[Job],
    skipped: list[Job],
    process: Callable[[Any, TileProgress], tuple[Any, dict[str, Any]]],
    reports: list[ItemReport],
    *,
    max_pixels: int | None,
    bit_depth: int | str,
    quality: int,
    fail_fast: bool,
    show_progress: bool,
    quiet: bool,
) -> list[ItemReport]:
    """Run ``process(image, on_tile_progress) -> (image, details)`` over ``jobs``.

    ``process`` receives and returns :class:`deblurcli.io.Image` objects. Reports are appended
    to ``reports`` as files finish, so a caller interrupted by Ctrl-C still holds them.
    """
    from deblurcli.io import read_image, write_image

    reports.extend(ItemReport(str(j.input), str(j.output), "skipped") for j in skipped)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, disable=not show_progress, transient=True,
    )
    with progress:
        files_task = progress.add_task("images", total=len(jobs))
        tiles_task = progress.add_task("tiles", total=1, visible=False)

        def on_tiles(done: int, total: int) -> None:
            progress.update(tiles_task, completed=done, total=total, visible=total > 1)

        for job in jobs:
            progress.update(files_task, description=job.input.name)
            started = time.perf_counter()
            try:
                image = read_image(job.input, max_pixels=max_pixels)
                result, details = process(image, on_tiles)
                write_image(job.output, result, bit_depth=bit_depth, quality=quality)  # type: ignore[arg-type]
            except (ImageError, TileOutOfMemoryError) as exc:
                report = ItemReport(str(job.input), str(job.output), "failed", str(exc))
                report.details["oom"] = isinstance(exc, TileOutOfMemoryError)
                reports.append(report)
                error_line(str(exc))
                if fail_fast:
                    break
            else:
                seconds = time.perf_counter() - started
                details.update(
                    width=image.width, height=image.height, bit_depth=image.dtype.itemsize * 8,
                    alpha=image.alpha is not None,
                )
                reports.append(
                    ItemReport(str(job.input), str(job.output), "ok", None, round(seconds, 3),
                               details)
                )
                info(f"{job.input} → {job.output} ({seconds:.1f}s)", quiet=quiet)
            progress.advance(files_task)
    return reports


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
