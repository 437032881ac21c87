"""Throughput of a method: latency, megapixels per second and peak memory per image size.

Each size is run on a seeded random image (``1 × C × H × W`` in [0, 1], on the method's device
and dtype) ``warmup`` times untimed, then ``repeats`` times timed; the median and 90th
percentile latencies are reported, and MP/s = H·W / 10⁶ / median.

Peak memory is the increase over the state before the timed runs:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only);
* CPU on Linux: the process's peak resident set (``VmHWM``) after resetting it through
  ``/proc/self/clear_refs``, minus the resident set before (``memory_kind="rss-peak"``);
* elsewhere: the growth of ``resource.getrusage().ru_maxrss``, a lower bound that reads 0 when
  an earlier step of the process peaked higher (``memory_kind="rss-peak-lifetime"``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deblurcli.bench.methods import Method, MethodConfig, Prepared, get_method


@dataclass(frozen=True)
class SpeedRow:
    """Timing of one method at one image size."""

    method: str
    height: int
    width: int
    channels: int
    device: str
    precision: str
    warmup: int
    repeats: int
    median_s: float
    p90_s: float
    megapixels_per_s: float
    peak_memory_bytes: int | None
    memory_kind: str
    threads: int
    """``torch.get_num_threads()`` during the run (CPU intra-op threads)."""

    @property
    def megapixels(self) -> float:
        """Image size in megapixels."""
        return self.height * self.width / 1e6

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        return {**asdict(self), "megapixels": self.megapixels}


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _MemoryProbe:
    """Measures the peak memory increase of the code run between :meth:`start` and :meth:`stop`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda-allocated" if device.type == "cuda" else "rss-peak"
        self.base = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = (_status_kib("VmRSS") or 0) * 1024
        except OSError:
            import resource

            self.kind = "rss-peak-lifetime"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device) - self.base)
        if self.kind == "rss-peak":
            peak = _status_kib("VmHWM")
            return None if peak is None else max(0, peak * 1024 - self.base)
        import resource

        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _precision_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16",
            torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def time_one(
    prepared: Prepared,
    size: tuple[int, int],
    *,
    kernel: np.ndarray | None,
    repeats: int = 5,
    warmup: int = 1,
    channels: int = 3,
    seed: int = 0,
) -> tuple[list[float], int | None, str]:
    """Latencies (seconds) of ``repeats`` timed runs, the peak memory increase and its kind."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((1, channels, *size), generator=gen).to(prepared.device, prepared.dtype)
    k = None if kernel is None else torch.as_tensor(kernel).to(prepared.device, prepared.dtype)
    probe = _MemoryProbe(prepared.device)
    times: list[float] = []
    with torch.no_grad():
        for _ in range(warmup):
            prepared.run(x, k)
        _sync(prepared.device)
        probe.start()
        for _ in range(repeats):
            start = time.perf_counter()
            prepared.run(x, k)
            _sync(prepared.device)
            times.append(time.perf_counter() - start)
        peak = probe.stop()
    return times, peak, probe.kind


def run_speed(
    methods: Sequence[str | Method],
    config: MethodConfig,
    sizes: Sequence[tuple[int, int]],
    *,
    kernel: np.ndarray | None = None,
    repeats: int = 5,
    warmup: int = 1,
    channels: int = 3,
    seed: int = 0,
    on_row: Callable[[SpeedRow], None] | None = None,
) -> list[SpeedRow]:
    """Time every method at every size.

    Args:
        methods: Registry names or :class:`Method` entries.
        config: Device, precision, model and parameters.
        sizes: ``(height, width)`` pairs.
        kernel: Kernel for methods that need one (default: a seeded 31 × 31 motion kernel).
        repeats: Timed runs per size (median and p90 are reported).
        warmup: Untimed runs first (allocation, FFT plans, cuDNN autotuning).
        channels: 1 (grey) or 3 (colour).
        seed: Seed of the random images and the default kernel.
        on_row: Called with each row as it is measured.

    Returns:
        One :class:`SpeedRow` per (method, size), method-major.
    """
    entries = [get_method(m) if isinstance(m, str) else m for m in methods]
    if kernel is None and any(m.kernel_use != "none" for m in entries):
        from deblurcli.kernels import motion_kernel

        kernel = motion_kernel(31, rng=np.random.default_rng(seed))
    rows = []
    for method in entries:
        prepared = method.build(config)
        for height, width in sizes:
            times, peak, kind = time_one(
                prepared, (height, width), kernel=method.kernel_for(kernel, None),
                repeats=repeats, warmup=warmup, channels=channels, seed=seed,
            )
            median = statistics.median(times)
            p90 = float(np.percentile(times, 90))
            row = SpeedRow(
                method.name, height, width, channels, str(prepared.device),
                _precision_name(prepared.dtype), warmup, repeats, median, p90,
                height * width / 1e6 / median if median > 0 else float("inf"), peak, kind,
                torch.get_num_threads(),
            )
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"512,1024x768"`` → ``[(512, 512), (768, 1024)]`` (``WxH``; a bare N is square).

    Raises:
        ValueError: a malformed or non-positive size.
    """
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        w, _, h = part.partition("x")
        width, height = int(w), int(h or w)
        if width < 1 or height < 1:
            raise ValueError(f"sizes must be positive, got {part!r}")
        sizes.append((height, width))
    if not sizes:
        raise ValueError("no sizes given")
    return sizes
