"""Presenting benchmark results: rich tables (for stderr), JSON documents and CSV files."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from deblurcli import __version__
from deblurcli._atomic import atomic_write_bytes
from deblurcli.bench.datasets import Dataset
from deblurcli.bench.quality import QualityResult
from deblurcli.bench.speed import SpeedRow


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def quality_table(results: Sequence[QualityResult], *, per_image: bool = True) -> Table:
    """Rows = images (then the mean), columns = PSNR/SSIM(/error ratio) per method."""
    first = results[0]
    table = Table(title=f"{first.dataset} ({first.protocol} protocol)", show_footer=False)
    table.add_column("image")
    ratios = [any(i.error_ratio is not None for i in r.items) for r in results]
    for result, ratio in zip(results, ratios, strict=True):
        table.add_column(f"{result.method}\nPSNR", justify="right")
        table.add_column("SSIM", justify="right")
        if ratio:
            table.add_column("ER", justify="right")
    if per_image:
        for n, item in enumerate(first.items):
            cells = [item.name]
            for result, ratio in zip(results, ratios, strict=True):
                it = result.items[n]
                cells += [_fmt(it.psnr, 2), _fmt(it.ssim, 4)]
                cells += [_fmt(it.error_ratio, 2)] if ratio else []
            table.add_row(*cells)
        table.add_section()
    for group in first.groups():
        count = sum(i.group == group for i in first.items)
        cells = [f"{group} ({count})"]
        for result, ratio in zip(results, ratios, strict=True):
            cells += [_fmt(result.mean("psnr", group), 2), _fmt(result.mean("ssim", group), 4)]
            cells += [_fmt(result.mean("error_ratio", group), 2)] if ratio else []
        table.add_row(*cells, style="bold")
    cells = [f"mean ({len(first.items)})"]
    for result, ratio in zip(results, ratios, strict=True):
        cells += [_fmt(result.mean("psnr"), 2), _fmt(result.mean("ssim"), 4)]
        cells += [_fmt(result.mean("error_ratio"), 2)] if ratio else []
    table.add_row(*cells, style="bold")
    return table


def quality_document(dataset: Dataset, results: Sequence[QualityResult]) -> dict[str, Any]:
    """The ``bench quality --json`` document."""
    return {
        "version": __version__,
        "dataset": {
            "name": dataset.name, "protocol": dataset.protocol, "count": len(dataset.samples),
            "max_shift": dataset.max_shift if dataset.protocol == "shift" else None,
            "crop": dataset.crop,
        },
        "results": [r.to_dict() for r in results],
    }


def quality_rows(results: Sequence[QualityResult]) -> list[dict[str, Any]]:
    """Flat rows (one per method and image) for CSV."""
    return [
        {"method": r.method, "image": i.name, "psnr": i.psnr, "ssim": i.ssim,
         "error_ratio": i.error_ratio, "seconds": i.seconds,
         "shift_y": i.shift[0] if i.shift else None, "shift_x": i.shift[1] if i.shift else None}
        for r in results for i in r.items
    ]


def speed_table(rows: Sequence[SpeedRow]) -> Table:
    """One row per (method, size)."""
    table = Table(title="speed (median of repeats after warm-up)")
    for name in ("method", "size", "device", "precision", "threads", "median s", "p90 s", "MP/s",
                 "peak MiB"):
        table.add_column(name, justify="left" if name in ("method", "device") else "right")
    for r in rows:
        mem = "–" if r.peak_memory_bytes is None else f"{r.peak_memory_bytes / 2**20:.0f}"
        table.add_row(r.method, f"{r.width}×{r.height}", r.device, r.precision, str(r.threads),
                      f"{r.median_s:.4f}", f"{r.p90_s:.4f}", f"{r.megapixels_per_s:.2f}", mem)
    return table


def speed_document(rows: Sequence[SpeedRow]) -> dict[str, Any]:
    """The ``bench speed --json`` document."""
    return {"version": __version__, "rows": [r.to_dict() for r in rows]}


def write_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows (keys of the first row as the header) to ``path`` atomically."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())
