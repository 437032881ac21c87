"""The explicit registry of benchmarkable methods.

Every method is a :class:`Method`: a name, whether it needs a blur kernel, and a ``build``
function that does the expensive set-up once (e.g. loading a model) and returns a
:class:`Prepared` runner ``run(x, kernel) -> restored`` on tensors. Adding a method (for
instance ``deconvolve-blind``) is one :class:`Method` entry in :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deblurcli.errors import UsageError

Runner = Callable[[Tensor, "Tensor | None"], Tensor]
"""``run(x, kernel)``: ``x`` is ``1 × C × H × W`` in [0, 1] on the prepared device; ``kernel``
is ``kh × kw`` (true convolution) or ``None``; returns the restored image, same shape."""


@dataclass(frozen=True)
class MethodConfig:
    """What a benchmark run asks of a method."""

    device: str = "auto"
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    precision: str = "auto"
    """``auto``, ``fp32``, ``fp64`` (deconvolution), ``bf16``/``fp16`` (models)."""
    model: str | None = None
    """Model reference for ``deblur``."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Keyword parameters forwarded to the method (e.g. ``weight`` for deconvolution)."""


@dataclass(frozen=True)
class Prepared:
    """A method ready to run, with the device and dtype its inputs should have."""

    run: Runner
    device: torch.device
    dtype: torch.dtype
    label: str
    """Human-readable description of the resolved configuration (model, parameters)."""


@dataclass(frozen=True)
class Method:
    """A registry entry."""

    name: str
    summary: str
    kernel_use: str
    """``none``; ``full`` (a non-blind method: needs ``--ground-truth-kernel`` or ``--kernel``);
    ``size`` (a blind method: gets the sample's true kernel, or ``--kernel``, only to read
    the kernel size from it, and falls back to its default size without one)."""
    build: Callable[[MethodConfig], Prepared]

    @property
    def needs_kernel(self) -> bool:
        """Whether the method cannot run without a kernel."""
        return self.kernel_use == "full"

    def kernel_for(self, given: np.ndarray | None, true: np.ndarray | None
                   ) -> np.ndarray | None:
        """The kernel this method receives for one sample (``given``: the run's choice)."""
        if self.kernel_use == "full":
            return given
        if self.kernel_use == "size":
            return given if given is not None else true
        return None


def _device(config: MethodConfig) -> torch.device:
    from deblurcli.engine.device import resolve_device

    return resolve_device(config.device)


def _float_dtype(precision: str) -> torch.dtype:
    if precision in ("auto", "fp32"):
        return torch.float32
    if precision == "fp64":
        return torch.float64
    raise UsageError(f"deconvolution runs in fp32 or fp64, not {precision!r}")


def _identity(config: MethodConfig) -> Prepared:
    if config.params:
        raise UsageError("identity takes no parameters")
    dtype = _float_dtype(config.precision)
    return Prepared(lambda x, k: x.clone(), _device(config), dtype, "identity (the blurred input)")


def _deconvolution(solver: str) -> Callable[[MethodConfig], Prepared]:
    def build(config: MethodConfig) -> Prepared:
        from deblurcli import deconv

        params = dict(config.params)
        dtype = _float_dtype(config.precision)

        def run(x: Tensor, kernel: Tensor | None) -> Tensor:
            if kernel is None:
                raise UsageError(f"deconvolve-{solver} needs a kernel")
            return deconv.deconvolve(x, kernel, method=solver, **params)

        label = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"
        return Prepared(run, _device(config), dtype, f"{solver} ({label})")

    return build


def _deblur(config: MethodConfig) -> Prepared:
    from deblurcli.engine import load_model

    if config.model is None:
        raise UsageError("method deblur needs --model NAME (see `deblurcli models list`)")
    restorer = load_model(config.model, device=config.device, precision=config.precision)
    params = dict(config.params)

    def run(x: Tensor, kernel: Tensor | None) -> Tensor:
        return restorer(x, **params).to(x.device)

    device = getattr(restorer, "device", torch.device("cpu"))
    dtype = getattr(restorer, "dtype", torch.float32)
    return Prepared(run, torch.device(device), torch.float32, f"{config.model} ({dtype})")


def _blind(preset: str) -> Callable[[MethodConfig], Prepared]:
    def build(config: MethodConfig) -> Prepared:
        from deblurcli.optim.blind import bench_runner

        run, label = bench_runner(preset, dict(config.params), _device(config))
        return Prepared(run, _device(config), torch.float32, label)

    return build


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("identity", "the blurred input itself (baseline)", "none", _identity),
        Method("deconvolve-wiener", "Wiener filter, known kernel", "full",
               _deconvolution("wiener")),
        Method("deconvolve-rl", "Richardson–Lucy, known kernel", "full", _deconvolution("rl")),
        Method(
            "deconvolve-hyperlaplacian", "hyper-Laplacian prior (Krishnan & Fergus), known kernel",
            "full", _deconvolution("hyperlaplacian"),
        ),
        Method("deblur", "a trained network (--model)", "none", _deblur),
        Method("deconvolve-blind", "blind VDIP, fast preset (true kernel used for its size only)",
               "size", _blind("fast")),
        Method("deconvolve-blind-paper", "blind VDIP/DIP as published (hours per image on CPU)",
               "size", _blind("paper")),
    )
}
"""Benchmarkable methods by name."""


def get_method(name: str) -> Method:
    """Look a method up by name.

    Raises:
        UsageError: unknown name (the message lists the known ones).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown method {name!r}; known: {', '.join(REGISTRY)}") from None


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["weight=1e-4", "iterations=50", "boundary=smooth"]`` → typed dict (int, float or str).

    Raises:
        UsageError: an item without ``=``.
    """
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE, got {item!r}")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        params[key.strip().replace("-", "_")] = value
    return params
