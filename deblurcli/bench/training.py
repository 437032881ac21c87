"""Training throughput: how fast a config's model trains on this machine, variant by variant.

``deblurcli bench train CONFIG`` times whole training steps — data loading, forward, backward and
the optimiser step, exactly as :func:`deblurcli.train.loop.fit` does them — for several variants
of the same config side by side (memory layout, bf16 autocast, loader workers, packed versus
on-the-fly data), next to the machine's measured peak (a large 3×3 convolution and a matmul timed
on the spot). Each variant runs in a fresh process, so its peak memory is its own.

Reported per variant: seconds per step, trained megapixels per second (``batch × crop² / step``),
the model's achieved GFLOP/s (forward + backward FLOPs counted by ``torch.utils.flop_counter``
divided by the step time) and the process's peak resident memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from deblurcli.engine.device import cpu_bf16_is_native, cpu_capability
from deblurcli.train.config import TrainConfig


@dataclass(frozen=True)
class TrainVariant:
    """One way of running the same training step."""

    name: str
    channels_last: bool = True
    bf16: bool = False
    data: str = "config"
    """``config`` (the config's own data), ``pack``, ``on-the-fly`` (the config's recipe made by
    loader workers) or ``old`` (the old baseline recipe: kernels ≤ 21 px, made on the fly)."""
    workers: int | None = None
    """Loader workers (None: the config's)."""


VARIANTS: dict[str, TrainVariant] = {
    v.name: v
    for v in (
        TrainVariant("old-recipe", channels_last=False, data="old", workers=2),
        TrainVariant("nchw", channels_last=False, data="pack", workers=0),
        TrainVariant("channels-last", data="pack", workers=0),
        TrainVariant("channels-last+bf16", bf16=True, data="pack", workers=0),
        TrainVariant("on-the-fly-w0", data="on-the-fly", workers=0),
        TrainVariant("on-the-fly-w1", data="on-the-fly", workers=1),
        TrainVariant("on-the-fly-w2", data="on-the-fly", workers=2),
    )
}
"""The variants ``bench train`` knows, by name (the default runs all of them)."""


PEAK_REPEATS = 12
"""Timed calls per peak kernel; the fastest counts. On a shared 2-core VM the median of 5 calls
read the conv at 106, 253 and 261 GFLOP/s in three runs of one command (2026-12-03), below what
the model's own steps reached, so a peak is the best rate seen, not a typical one."""


def _fastest(fn: Any, repeats: int, warmup: int = 2) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_peak(threads: int, repeats: int = PEAK_REPEATS) -> dict[str, Any]:
    """GFLOP/s of a 64→64 3×3 convolution (8×64×128², NHWC, forward) and a 2048² fp32 matmul
    (each the fastest of ``repeats`` calls), with the CPU's SIMD level and whether it has native
    bf16 kernels."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(8, 64, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        seconds = _fastest(lambda: conv(x), repeats)
    conv_flops = 2 * 64 * 64 * 9 * 8 * 128 * 128
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    mm_seconds = _fastest(lambda: a @ b, repeats)
    return {
        "conv3x3_gflops": conv_flops / seconds / 1e9,
        "matmul_gflops": 2 * 2048**3 / mm_seconds / 1e9,
        "cpu_capability": cpu_capability(),
        "cpu_bf16_native": cpu_bf16_is_native(),
    }


def step_flops(cfg: TrainConfig) -> float:
    """FLOPs of one forward + backward pass of the config's model on one batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from deblurcli import archs

    model = archs.build(cfg.model.arch, cfg.model.config)
    x = torch.rand(cfg.data.batch_size, 3, cfg.data.crop, cfg.data.crop)
    with FlopCounterMode(display=False) as counter:
        args = (x, x) if getattr(model, "inputs", 1) == 2 else (x,)  # reference-based: same size
        model(*args).abs().mean().backward()
    return float(counter.get_total_flops())


def variant_config(cfg: TrainConfig, variant: TrainVariant) -> TrainConfig:
    """The config a variant trains with (only data, layout and precision change)."""
    data = cfg.data
    if variant.data == "on-the-fly":
        data = dataclasses.replace(data, kind="synthetic")
    elif variant.data == "old":
        data = dataclasses.replace(
            data, kind="synthetic", kernel_size=21, kernel_min=5, kernel_weights=[],
            kernel_kinds=["motion", "gaussian", "defocus"], varying_prob=0.0, object_prob=0.0,
            clip_prob=0.0, linear_light=False, shot_noise_max=0.0, noise_max=0.01, jpeg_prob=0.2,
            frames_prob=0.0,
        )  # fmt: skip
    elif variant.data == "pack":
        data = dataclasses.replace(data, kind="pack")
    if variant.workers is not None:
        data = dataclasses.replace(data, workers=variant.workers)
    run = dataclasses.replace(cfg.run, channels_last=variant.channels_last, cpu_bf16=variant.bf16)
    return dataclasses.replace(cfg, data=data, run=run)


def _measure(cfg: TrainConfig, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    """Time ``steps`` whole training steps (after ``warmup``) in this process."""
    from deblurcli import archs
    from deblurcli.train import data
    from deblurcli.train.loop import iteration_objective, pixel_objective

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = archs.build(cfg.model.arch, cfg.model.config)
    fmt = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = pixel_objective(cfg)
    hook = getattr(model, "training_terms", None)  # model-computed terms (UML-IN)
    dataset = data.make_dataset(cfg.data, cfg.run.seed)
    loader = iter(data.make_loader(dataset, cfg.data, start_step=0, stop_step=warmup + steps))
    autocast: contextlib.AbstractContextManager[Any] = (
        torch.autocast("cpu", dtype=torch.bfloat16) if cfg.run.cpu_bf16
        else contextlib.nullcontext()
    )  # fmt: skip
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(loader)
        blurry = batch["blurry"].contiguous(memory_format=fmt)
        sharp = batch["sharp"].contiguous(memory_format=fmt)
        with autocast:
            refs = [batch["reference"]] if getattr(model, "inputs", 1) == 2 else []
            out = model(blurry, *refs)
            terms = hook(sharp) if hook is not None else None
            _, loss, _ = iteration_objective(criterion, model, out, sharp, terms)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": statistics.median(times), "step_s_mean": statistics.fmean(times),
            "peak_rss_mib": own}


def _child(cfg: TrainConfig, steps: int, warmup: int, threads: int, queue: Any) -> None:
    try:
        queue.put(_measure(cfg, steps, warmup, threads))
    except Exception as exc:  # reported as the variant's error, not a crash of the benchmark
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_variant(
    cfg: TrainConfig, variant: TrainVariant, *, steps: int, warmup: int, threads: int
) -> dict[str, Any]:
    """Measure one variant in a fresh process; returns its row (or an ``error``)."""
    vcfg = variant_config(cfg, variant)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    proc = context.Process(target=_child, args=(vcfg, steps, warmup, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    row = {"variant": variant.name, "layout": "NHWC" if variant.channels_last else "NCHW",
           "precision": "bf16" if variant.bf16 else "fp32", "data": vcfg.data.kind,
           "workers": vcfg.data.workers, **result}
    if "step_s" in row:
        pixels = vcfg.data.batch_size * vcfg.data.crop**2
        row["mp_per_s"] = pixels / row["step_s"] / 1e6
    return row


def run_training_benchmark(
    cfg: TrainConfig,
    variants: list[str] | None = None,
    *,
    steps: int = 10,
    warmup: int = 3,
    threads: int = 2,
    on_row: Any = None,
) -> dict[str, Any]:
    """Measure the machine peak and every variant; the document ``bench train --json`` prints.

    The peak is read before and after the variants and the higher reading of each kernel kept
    (``peak["readings"]`` has both), so a slow moment of a shared machine does not pass for its
    peak; the share of it (``of_conv_peak``) is computed once every row is in.
    """
    before = machine_peak(threads)
    flops = step_flops(cfg)
    rows = []
    for name in variants or list(VARIANTS):
        row = run_variant(cfg, VARIANTS[name], steps=steps, warmup=warmup, threads=threads)
        if "step_s" in row:
            row["gflops"] = flops / row["step_s"] / 1e9
        rows.append(row)
        if on_row:
            on_row(row)
    after = machine_peak(threads)
    peak = {**before, "readings": [before, after]}
    for key in ("conv3x3_gflops", "matmul_gflops"):
        peak[key] = max(before[key], after[key])
    for row in rows:
        if "gflops" in row:
            row["of_conv_peak"] = row["gflops"] / peak["conv3x3_gflops"]
    return {
        "model": {"arch": cfg.model.arch, "config": cfg.model.config},
        "batch": cfg.data.batch_size,
        "crop": cfg.data.crop,
        "step_gflop": flops / 1e9,
        "threads": threads,
        "peak": peak,
        "rows": rows,
    }
