"""Benchmark figures with matplotlib (Agg backend; imported only when a plot is asked for)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deblurcli._atomic import atomic_path
from deblurcli.bench.quality import QualityResult
from deblurcli.bench.speed import SpeedRow


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return target


def plot_quality(results: Sequence[QualityResult], path: str | os.PathLike[str]) -> Path:
    """Bar chart of the mean PSNR per method, with each image's PSNR as a dot."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(results) + 2), 4))
    for n, result in enumerate(results):
        mean = result.mean("psnr") or 0.0
        ax.bar(n, mean, color=f"C{n}", alpha=0.7)
        ax.text(n, mean, f"{mean:.2f}", ha="center", va="bottom", fontsize=9)
        values = [i.psnr for i in result.items]
        ax.scatter([n] * len(values), values, s=8, color="k", zorder=3)
    ax.set_xticks(range(len(results)), [r.method for r in results], rotation=20, ha="right")
    low = min(min((i.psnr for i in r.items), default=0.0) for r in results)
    ax.set_ylim(max(0.0, low - 3), None)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{results[0].dataset}: mean PSNR ({len(results[0].items)} images)")
    ax.grid(axis="y", alpha=0.3)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_speed(rows: Sequence[SpeedRow], path: str | os.PathLike[str]) -> Path:
    """Megapixels per second and median latency versus image size, one line per method."""
    plt = _pyplot()
    fig, (ax_rate, ax_lat) = plt.subplots(1, 2, figsize=(10, 4))
    for n, method in enumerate(dict.fromkeys(r.method for r in rows)):
        mine = sorted((r for r in rows if r.method == method), key=lambda r: r.megapixels)
        mp = [r.megapixels for r in mine]
        ax_rate.plot(mp, [r.megapixels_per_s for r in mine], "o-", color=f"C{n}", label=method)
        ax_lat.plot(mp, [r.median_s for r in mine], "o-", color=f"C{n}", label=method)
    for ax, label in ((ax_rate, "MP/s"), (ax_lat, "median latency (s)")):
        ax.set_xscale("log")
        ax.set_xlabel("image size (megapixels)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_lat.set_yscale("log")
    ax_rate.legend()
    first = rows[0]
    fig.suptitle(f"speed on {first.device}, {first.precision}, {first.channels} channel(s)")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
