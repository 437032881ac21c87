"""One entry point for ``deconvolve-blind``: preset, colour handling and kernel-size rule.

:func:`deconvolve_blind` takes an ``H×W×C`` photo and returns the deblurred photo and the kernel,
running either the published method (:mod:`deblurcli.optim.vdip`, ``preset="paper"``) or the fast
path (:mod:`deblurcli.optim.fast`, ``preset="fast"``). The CLI and ``bench`` call only this.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from deblurcli.io import hwc_to_tensor, tensor_to_hwc
from deblurcli.optim.fast import FastConfig, LevelInfo, fast_fit
from deblurcli.optim.vdip import (
    METHODS,
    BlindDeconvolutionError,
    StepInfo,
    fit_with_refinement,
    paper_config,
)

__all__ = [
    "DEFAULT_RESTARTS",
    "PRESETS",
    "bench_runner",
    "BlindOutput",
    "default_kernel_size",
    "parse_overrides",
    "deconvolve_blind",
    "parse_kernel_size",
]

PRESETS: tuple[str, ...] = ("fast", "paper")
"""``fast`` (default): coarse-to-fine variational estimate + non-blind solve; ``paper``: the
published networks and schedules (hours per image on a CPU)."""
DEFAULT_RESTARTS: dict[str, int] = {"fast": 2, "paper": 0}
"""Restarts after a degenerate run when none are asked for. A fast run takes seconds and only
photos whose estimate failed pay for a restart; on ``shake`` photos 1–24 the two restarts turned
101087 from returned unchanged (19.66 dB) into 24.21 dB, and no photo that was restarted ended
below its input (docs/blind.md). A paper run takes hours."""

LEVIN_SIZES = (17, 15, 13, 27, 11, 19, 21, 21)
"""SelfDeblur's kernel sizes for the Levin09 kernels 1–8 (benchmark knowledge: ``bench`` and
``scripts/`` use it to give the published method its published sizes; the product does not)."""
PAPER_SIZE = 21
"""Kernel size of the paper preset when none is given (the published scripts' fallback)."""

Progress = Callable[[int, int, float, str], None]
"""``(steps done, steps planned, current loss, phase)``."""


@dataclass
class BlindOutput:
    """Result of :func:`deconvolve_blind`."""

    image: np.ndarray
    """Deblurred photo, ``H×W×C`` float32 in [0, 1], same channels as the input."""
    kernel: np.ndarray
    """Estimated kernel, true-convolution orientation, centred, sum 1 (float64)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Method, preset, seed, kernel size, steps, final loss, seconds, warnings (JSON-ready)."""


def parse_kernel_size(text: str) -> tuple[int, int]:
    """``"19"`` → (19, 19); ``"19x25"`` → (19, 25) (rows × columns); both must be odd ≥ 3.

    Raises:
        BlindDeconvolutionError: not of that form.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", text)
    if not match:
        raise BlindDeconvolutionError(f"kernel size {text!r}: use N or HxW, e.g. 31 or 19x25")
    h = int(match.group(1))
    w = int(match.group(2) or h)
    if h < 3 or w < 3 or h % 2 == 0 or w % 2 == 0:
        raise BlindDeconvolutionError(f"kernel size {h}x{w}: both sides must be odd and >= 3")
    return h, w


def default_kernel_size(preset: str) -> tuple[tuple[int, int] | None, str]:
    """The kernel size when ``--kernel-size`` is omitted, and the reason (for the user).

    ``fast``: None — estimated from the photo (:func:`deblurcli.optim.fast.probe_kernel_size`);
    ``paper``: :data:`PAPER_SIZE`, the published scripts' fallback (the published method has no
    size estimate, and at hours per image a probe is not the bottleneck).
    """
    if preset == "fast":
        return None, "estimated from the photo"
    return (PAPER_SIZE, PAPER_SIZE), f"default for --preset {preset}"


def parse_overrides(preset: str, items: list[str] | None) -> dict[str, Any]:
    """``["prefit=0", "bright_var_bug=true", "milestones=2000,3000"]`` → typed config overrides.

    Keys are fields of :class:`~deblurcli.optim.vdip.VDIPConfig` (paper) or
    :class:`~deblurcli.optim.fast.FastConfig` (fast); values are cast to the field's type
    (bool: true/false, tuples: comma-separated) by :func:`deblurcli.methods.parse_params`.

    Raises:
        BlindDeconvolutionError: malformed item, unknown key or bad value.
    """
    from deblurcli.errors import UsageError
    from deblurcli.methods import parse_params, schema_of
    from deblurcli.optim.vdip import VDIPConfig

    schema = schema_of(FastConfig() if preset == "fast" else VDIPConfig())
    try:
        return parse_params(items, schema, reserved=("method", "kernel_size"))
    except UsageError as exc:
        raise BlindDeconvolutionError(str(exc)) from None


def _to_y(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Full-range BT.601 YCrCb split (SelfDeblur's colour handling): Y and the chroma to keep."""
    if pixels.shape[2] == 1:
        return pixels, None
    import cv2

    ycc = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2YCrCb)
    return ycc[..., :1], ycc[..., 1:]


def _from_y(y: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    if chroma is None:
        return y
    import cv2

    ycc = np.concatenate([y, chroma], axis=2).astype(np.float32)
    return np.clip(cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB), 0, 1)


def deconvolve_blind(
    pixels: np.ndarray,
    *,
    method: str = "vdip-sparse",
    preset: str = "fast",
    kernel_size: tuple[int, int] | None = None,
    iters: int | None = None,
    seed: int = 0,
    restarts: int | None = None,
    device: str | torch.device = "cpu",
    on_progress: Progress | None = None,
    **overrides: Any,
) -> BlindOutput:
    """Blind deconvolution of one photo.

    Args:
        pixels: Blurry photo, ``H×W×C`` float in [0, 1], C = 1 or 3.
        method: One of :data:`deblurcli.optim.vdip.METHODS`.
        preset: ``fast`` or ``paper``.
        kernel_size: ``(h, w)``, odd; None: estimated from the photo (fast preset) or
            :data:`PAPER_SIZE` (paper preset).
        iters: ``paper``: main steps (default 5000); ``fast``: sweeps (pixel model) or steps
            (generator model) per pyramid level.
        seed: Seeds every random draw; CPU runs are bit-reproducible.
        restarts: When a run ends in a degenerate solution (near-delta, shrunk or scattered
            kernel, a kernel whose reblurred restoration misses the photo, an output no sharper
            than the input, a collapsed image; ``specs/vdip.md`` §10.5), run again with the next
            seed (the fast preset, on a noisy photo, first retries the same crop with a coarser
            kernel threshold, then moves to the next most informative crops), at most this many
            times; the first clean run is returned, else the last one — whose image, in the
            fast preset, is the unchanged input. None: :data:`DEFAULT_RESTARTS` of the preset
            (2 for ``fast``, whose runs take seconds; 0 for ``paper``, whose runs take hours).
        device: ``auto``, ``cpu``, ``cuda``, ... or a torch device.
        on_progress: ``(done, total, loss, phase)`` after every step.
        **overrides: Fields of :class:`~deblurcli.optim.vdip.VDIPConfig` (paper) or
            :class:`~deblurcli.optim.fast.FastConfig` (fast).

    Returns:
        The :class:`BlindOutput`; ``details["seed"]`` is the seed of the returned run and
        ``details["attempts"]`` the number of runs.

    Raises:
        BlindDeconvolutionError: unknown method/preset, bad sizes, image too small.

    Shape:
        - pixels: :math:`(H, W, C)`; output image: :math:`(H, W, C)`
    """
    if method not in METHODS:
        raise BlindDeconvolutionError(f"unknown method {method!r}; use {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise BlindDeconvolutionError(f"unknown preset {preset!r}; use fast or paper")
    if restarts is None:
        restarts = DEFAULT_RESTARTS[preset]
    if restarts < 0:
        raise BlindDeconvolutionError("restarts must be >= 0")
    pixels = np.asarray(pixels, dtype=np.float32)
    if kernel_size is None and preset == "paper":
        kernel_size = (PAPER_SIZE, PAPER_SIZE)
    attempt = _fast_attempt if preset == "fast" else _paper_attempt
    earlier: list[str] = []  # what the discarded runs ended with
    for n in range(restarts + 1):
        out = attempt(pixels, method, kernel_size, iters, seed + n, device, on_progress,
                      overrides, n)
        out.details["attempts"] = n + 1
        out.details["warnings"] = earlier + out.details["warnings"]
        if not out.details["collapse"] or n == restarts:
            return out
        kinds = ", ".join(out.details["collapse"])
        earlier.append(f"seed {seed + n} ended in a degenerate solution ({kinds}); "
                       f"restarted with seed {seed + n + 1}")
    raise AssertionError("unreachable")


def _fast_attempt(pixels: np.ndarray, method: str, kernel_size: tuple[int, int] | None,
                  iters: int | None, seed: int, device: str | torch.device,
                  on_progress: Progress | None, overrides: dict[str, Any],
                  attempt: int = 0) -> BlindOutput:
    cfg = FastConfig(method=method, kernel_size=kernel_size, **overrides)
    if iters is not None:
        cfg = replace(cfg, **({"outer": iters} if cfg.resolved_image_model == "pixels"
                              else {"iters": iters}))
    done = [0]
    planned = [0]

    def on_level(info: LevelInfo) -> None:
        done[0] += 1
        if info.step == 0:
            planned[0] += info.steps
        remaining = (info.levels - info.level - 1) * info.steps
        if on_progress is not None:
            on_progress(done[0], planned[0] + remaining, info.loss,
                        f"level {info.level + 1}/{info.levels}")

    result = fast_fit(pixels, cfg, on_step=on_level, seed=seed, device=device, attempt=attempt)
    assert result.kernel_size is not None
    details = {"method": method, "preset": "fast", "seed": seed,
               "kernel_size": list(result.kernel_size),
               "kernel_size_from": "given" if kernel_size else "estimated",
               "size_probe": result.size_probe, "noise_sigma": round(result.noise_sigma or 0, 5),
               "prefilter": round(result.prefilter, 3), "nonblind_weight": result.weight,
               "sharpening": round(result.sharpening, 3), "misfit": round(result.misfit, 3),
               "crop_distance": round(result.crop_distance, 3),
               "chosen_crop": result.chosen_crop, "crop_misfits": list(result.crop_misfits),
               "refine": {"iters": cfg.refine_iters if result.refine_seconds else 0,
                          "seconds": round(result.refine_seconds, 3),
                          "kept": result.refined,
                          "ending_misfits": [None if math.isnan(v) else round(v, 3)
                                             for v in result.ending_misfits]},
               "photo_solve_seconds": round(result.photo_solve_seconds, 3),
               "finish": {"model": result.finish_model or None,
                          "seconds": round(result.finish_seconds, 3),
                          "skipped": result.finish_skipped or None,
                          "resolve_rounds": result.resolve_rounds,
                          "resolve_seconds": round(result.resolve_seconds, 3)},
               "registration": [round(v, 3) for v in result.registration],
               "clipped_pixels": result.clipped_pixels,
               "fallback": bool(result.collapse),
               "image_model": cfg.resolved_image_model,
               "levels": result.levels, "crop_box": list(result.crop_box),
               "kernel_shape": list(result.kernel.shape), "seconds": round(result.seconds, 3),
               "warnings": list(result.warnings), "collapse": list(result.collapse)}
    return BlindOutput(result.image, result.kernel, details)


def _paper_attempt(pixels: np.ndarray, method: str, kernel_size: tuple[int, int] | None,
                   iters: int | None, seed: int, device: str | torch.device,
                   on_progress: Progress | None, overrides: dict[str, Any],
                   attempt: int = 0) -> BlindOutput:
    assert kernel_size is not None
    cfg = paper_config(method, kernel_size, **overrides)
    if iters is not None:
        cfg = replace(cfg, iters=iters)
    if cfg.color == "y":
        plane, chroma = _to_y(pixels)
    else:
        plane, chroma = (np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels), None
    y = hwc_to_tensor(plane)

    def on_step(info: StepInfo) -> None:
        if on_progress is not None:
            on_progress(info.step + 1, info.total, info.loss, info.phase)

    result = fit_with_refinement(y, cfg, on_step=on_step, seed=seed, device=device)
    out = tensor_to_hwc(result.image)
    if cfg.color == "rgb" and pixels.shape[2] == 1:
        out = out.mean(axis=2, keepdims=True)
    elif cfg.color == "y":
        out = _from_y(out, chroma)
    last = result.history[-1] if result.history else {}
    details = {"method": method, "preset": "paper", "seed": seed,
               "kernel_size": list(kernel_size), "steps": len(result.history),
               "prefit": cfg.prefit, "iters": cfg.iters, "refine": cfg.refine,
               "final_loss": last.get("loss"), "skipped_steps": result.skipped_steps,
               "shift": list(result.shift), "seconds": round(result.seconds, 3),
               "warnings": list(result.warnings), "collapse": list(result.collapse)}
    return BlindOutput(out.astype(np.float32), result.kernel.double().numpy(), details)


_LEVIN_GT_TO_PRESET = {19: 17, 17: 15, 15: 13, 27: 27, 13: 11, 21: 19, 23: 21}
"""Ground-truth Levin09 kernel side → the size SelfDeblur's Levin script uses."""


def bench_runner(method: str, params: dict[str, Any], device: torch.device
                 ) -> tuple[Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], str]:
    """A ``bench`` runner ``run(x, kernel) -> restored`` for :mod:`deblurcli.bench.methods`.

    The given (ground-truth) kernel is used **only for its size**, as the published scripts
    hard-code per-dataset sizes: Levin09 sides map to SelfDeblur's table (≈ ground truth − 2),
    other kernels keep their size. ``params`` may set the blind options of the method table
    (``preset``, ``kernel_size`` (overrides the rule; ``auto`` estimates it from the photo as
    the product does), ``iterations``, ``seed``, ``restarts``) and any field of the preset's
    config.

    Raises:
        BlindDeconvolutionError: unknown method, preset or parameter.
    """
    import dataclasses

    from deblurcli.errors import UsageError
    from deblurcli.methods import TABLE, schema_of
    from deblurcli.optim.vdip import VDIPConfig

    if method not in METHODS:
        raise BlindDeconvolutionError(f"unknown method {method!r}; use {', '.join(METHODS)}")
    params = dict(params)
    preset = str(params.pop("preset", "fast"))
    if preset not in PRESETS:
        raise BlindDeconvolutionError(f"unknown preset {preset!r}; use fast or paper")
    fixed = params.pop("kernel_size", None)
    iters = params.pop("iterations", None)
    seed = int(params.pop("seed", 0))
    restarts_param = params.pop("restarts", None)
    restarts = None if restarts_param is None else int(restarts_param)
    config_cls = FastConfig if preset == "fast" else VDIPConfig
    fields = {f.name for f in dataclasses.fields(config_cls)} - {"method"}
    unknown = sorted(set(params) - fields)
    if unknown:
        settable = set(schema_of(config_cls())) & fields
        known = ", ".join([*TABLE[method].param_map, *sorted(settable)])
        raise BlindDeconvolutionError(
            f"{method} does not take {', '.join(unknown)}; it takes {known}")
    auto = str(fixed).lower() == "auto"
    try:
        size_rule = None if fixed is None or auto else parse_kernel_size(str(fixed))
    except UsageError as exc:
        raise BlindDeconvolutionError(str(exc)) from None

    def run(x: torch.Tensor, kernel: torch.Tensor | None) -> torch.Tensor:
        size: tuple[int, ...] | None
        if auto:
            size = default_kernel_size(preset)[0]
        elif size_rule is not None:
            size = size_rule
        elif kernel is not None:
            size = tuple(_LEVIN_GT_TO_PRESET.get(s, s + (s % 2 == 0)) for s in kernel.shape)
        else:
            size = default_kernel_size(preset)[0]
        pixels = tensor_to_hwc(x.float())
        with torch.enable_grad():  # bench runs methods under no_grad; these loops need autograd
            out = deconvolve_blind(pixels, method=method, preset=preset,
                                   kernel_size=size,  # type: ignore[arg-type]
                                   iters=None if iters is None else int(iters), seed=seed,
                                   restarts=restarts,
                                   device=device, **params)
        return torch.from_numpy(out.image).permute(2, 0, 1)[None].to(x.device, x.dtype)

    label = f"{method}, preset {preset}, seed {seed}" + "".join(
        f", {k}={v}" for k, v in sorted(params.items()))
    return run, label
