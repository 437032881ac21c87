"""Run methods on a dataset and score them (PSNR, SSIM, and Levin's error ratio).

Scoring follows the dataset's protocol: ``"full"`` uses :func:`deblurcli.metrics.psnr` and
:func:`~deblurcli.metrics.ssim` (without ``dataset.crop`` border pixels); ``"shift"`` uses
:func:`deblurcli.metrics.compare_upto_shift`. When the dataset knows its kernels and the
protocol is ``"shift"``, every result also gets the error ratio against the non-blind
hyper-Laplacian result with the true kernel (1.0 = as good as knowing the kernel).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from deblurcli.bench.datasets import Dataset, Pair
from deblurcli.bench.methods import Method, MethodConfig, Prepared, get_method
from deblurcli.errors import UsageError
from deblurcli.io import hwc_to_tensor, tensor_to_hwc

REFERENCE_METHOD = "hyperlaplacian"
"""The known-kernel solver whose result is the error-ratio denominator (default parameters)."""


@dataclass(frozen=True)
class ItemScore:
    """One image's scores for one method."""

    name: str
    psnr: float
    ssim: float
    seconds: float
    """Wall time of the method alone (no I/O, no scoring)."""
    shift: tuple[float, float] | None = None
    """Alignment found by the shift-tolerant protocol, ``(dy, dx)``."""
    error_ratio: float | None = None
    group: str | None = None
    """The sample's group (e.g. its GoPro sequence), when the dataset has groups."""


@dataclass
class QualityResult:
    """All scores of one method on one dataset."""

    method: str
    label: str
    dataset: str
    protocol: str
    kernel_source: str | None
    device: str
    items: list[ItemScore] = field(default_factory=list)

    def mean(self, key: str, group: str | None = None) -> float | None:
        """Average of an :class:`ItemScore` field over the items (``None`` when unavailable),
        or over one group's items."""
        items = [i for i in self.items if group is None or i.group == group]
        values = [getattr(i, key) for i in items if getattr(i, key) is not None]
        finite = [float(v) for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else None

    def groups(self) -> list[str]:
        """The items' groups, in order of first appearance."""
        return list(dict.fromkeys(i.group for i in self.items if i.group is not None))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with per-item scores."""
        keys = ("psnr", "ssim", "error_ratio", "seconds")
        means = {k: self.mean(k) for k in keys}
        groups = {g: {k: self.mean(k, g) for k in keys} for g in self.groups()}
        body = {k: v for k, v in asdict(self).items() if k != "items"}
        return {**body, "count": len(self.items), "mean": means, "group_means": groups,
                "items": [asdict(i) for i in self.items]}


def _to_tensor(image: np.ndarray, prepared: Prepared) -> torch.Tensor:
    return hwc_to_tensor(image).to(device=prepared.device, dtype=prepared.dtype)


def _run(prepared: Prepared, pair: Pair, kernel: np.ndarray | None) -> tuple[np.ndarray, float]:
    x = _to_tensor(pair.blurred, prepared)
    k = None if kernel is None else torch.as_tensor(kernel).to(prepared.device, prepared.dtype)
    if prepared.device.type == "cuda":
        torch.cuda.synchronize(prepared.device)
    start = time.perf_counter()
    with torch.no_grad():
        y = prepared.run(x, k)
    if prepared.device.type == "cuda":
        torch.cuda.synchronize(prepared.device)
    seconds = time.perf_counter() - start
    out = tensor_to_hwc(y.float().clamp(0, 1))
    return out, seconds


def _score(dataset: Dataset, restored: np.ndarray, sharp: np.ndarray) -> tuple[Any, float, float]:
    """Return (alignment score or None, psnr, ssim)."""
    from deblurcli import metrics

    if dataset.protocol == "shift":
        est = restored[..., 0] if restored.shape[-1] == 1 else restored
        ref = sharp[..., 0] if sharp.shape[-1] == 1 else sharp
        aligned = metrics.compare_upto_shift(
            est.astype(np.float64), ref.astype(np.float64),
            max_shift=dataset.max_shift, crop=dataset.crop,
        )
        return aligned, aligned.psnr, aligned.ssim
    a = torch.from_numpy(restored.transpose(2, 0, 1).astype(np.float64))[None]
    b = torch.from_numpy(sharp.transpose(2, 0, 1).astype(np.float64))[None]
    psnr = float(metrics.psnr(a, b, crop_border=dataset.crop)[0])
    ssim = float(metrics.ssim(a, b, crop_border=dataset.crop)[0])
    return None, psnr, ssim


def run_quality(
    dataset: Dataset,
    methods: Sequence[str | Method],
    config: MethodConfig,
    *,
    kernel: np.ndarray | str | None = None,
    error_ratio: bool = True,
    on_item: Callable[[str, ItemScore], None] | None = None,
) -> list[QualityResult]:
    """Run every method on every sample (sample-major: each pair is loaded once) and score it.

    Args:
        dataset: What to run on.
        methods: Registry names or :class:`Method` entries.
        config: Device, precision, model and parameters, shared by all methods.
        kernel: ``"ground-truth"`` (each sample's true kernel), one kernel array for all
            samples (true-convolution orientation), or ``None``.
        error_ratio: Also compute Levin's error ratio where the protocol and kernels allow.
        on_item: Called after each (method name, score), e.g. to advance a progress bar.

    Returns:
        One :class:`QualityResult` per method, in the given order.

    Raises:
        UsageError: a method needs a kernel and none is given, or the dataset has no kernels.
    """
    entries = [get_method(m) if isinstance(m, str) else m for m in methods]
    ground_truth = isinstance(kernel, str) and kernel == "ground-truth"
    if ground_truth and not dataset.has_kernels:
        raise UsageError(f"dataset {dataset.name} has no ground-truth kernels; use --kernel FILE")
    for m in entries:
        if m.needs_kernel and kernel is None:
            raise UsageError(f"{m.name} needs --ground-truth-kernel or --kernel FILE")
    prepared = [m.build(config) for m in entries]
    source = None if kernel is None else ("ground-truth" if isinstance(kernel, str) else "file")
    results = [
        QualityResult(m.name, p.label, dataset.name, dataset.protocol, source, str(p.device))
        for m, p in zip(entries, prepared, strict=True)
    ]
    ratios = error_ratio and dataset.protocol == "shift" and dataset.has_kernels
    # The method under test may itself be the reference configuration: then reuse its result.
    reuse = ground_truth and not config.params and config.precision in ("auto", "fp32")
    reference: Prepared | None = None
    for sample in dataset.samples:
        pair = sample.load()
        if pair.blurred.shape != pair.sharp.shape:  # scoring would fail deep in the metrics
            raise UsageError(
                f"{dataset.name}: {sample.name}: blurred image is "
                f"{'x'.join(map(str, pair.blurred.shape))} (HxWxC) but its sharp image is "
                f"{'x'.join(map(str, pair.sharp.shape))}; a pair must match in size and channels"
            )
        k = pair.kernel if isinstance(kernel, str) else kernel
        ref_score = None
        scored = []
        for method, prep, result in zip(entries, prepared, results, strict=True):
            restored, seconds = _run(prep, pair, method.kernel_for(k, pair.kernel))
            aligned, psnr, ssim = _score(dataset, restored, pair.sharp)
            if reuse and method.name == REFERENCE_METHOD:
                ref_score = aligned
            shift = None if aligned is None else (float(aligned.shift[0]), float(aligned.shift[1]))
            group = dataset.group_of(sample.name) if dataset.group_of else None
            item = ItemScore(sample.name, psnr, ssim, seconds, shift, group=group)
            scored.append((result, item, aligned))
        if ratios and ref_score is None:
            if reference is None:
                reference = get_method(REFERENCE_METHOD).build(MethodConfig(device=config.device))
            ref_image, _ = _run(reference, pair, pair.kernel)
            ref_score, _, _ = _score(dataset, ref_image, pair.sharp)
        for result, item, aligned in scored:
            if ratios and aligned is not None:
                from deblurcli.metrics import error_ratio as levin_ratio

                item = replace(item, error_ratio=levin_ratio(aligned, ref_score))
            result.items.append(item)
            if on_item is not None:
                on_item(result.method, item)
    return results
