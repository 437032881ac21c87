"""Benchmarkable methods: every row of the method table, made runnable.

:data:`REGISTRY` is derived from :data:`deblurcli.methods.METHODS` (nothing is listed here):
each row becomes a :class:`Method` — its name, how it uses a blur kernel, and a ``build``
function that does the expensive set-up once (e.g. loading a model) and returns a
:class:`Prepared` runner ``run(x, kernel) -> restored`` on tensors. How a row is run follows
from its kind: networks through the engine (their default checkpoint, or ``--model``),
non-blind solvers through :mod:`deblurcli.deconv`, blind ones through
:mod:`deblurcli.optim.blind`, and the ``identity`` baseline as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deblurcli import methods as table
from deblurcli.errors import UsageError
from deblurcli.methods import MethodSpec

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
    """Exact checkpoint for a network method (default: the method's default checkpoint)."""
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


def _deconvolution(spec: MethodSpec) -> Callable[[MethodConfig], Prepared]:
    def build(config: MethodConfig) -> Prepared:
        from deblurcli import deconv

        params = _checked_params(spec, config)
        dtype = _float_dtype(config.precision)

        def run(x: Tensor, kernel: Tensor | None) -> Tensor:
            if kernel is None:
                raise UsageError(f"{spec.name} needs a kernel")
            return deconv.deconvolve(x, kernel, method=spec.name, **params)

        label = ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"
        return Prepared(run, _device(config), dtype, f"{spec.name} ({label})")

    return build


def _network(spec: MethodSpec) -> Callable[[MethodConfig], Prepared]:
    def build(config: MethodConfig) -> Prepared:
        from deblurcli.engine import load_model

        ref = config.model or spec.checkpoint
        assert ref is not None
        params = _checked_params(spec, config)
        restorer = load_model(ref, device=config.device, precision=config.precision)

        def run(x: Tensor, kernel: Tensor | None) -> Tensor:
            return restorer(x, **params).to(x.device)

        device = getattr(restorer, "device", torch.device("cpu"))
        dtype = getattr(restorer, "dtype", torch.float32)
        return Prepared(run, torch.device(device), torch.float32, f"{ref} ({dtype})")

    return build


def _blind(spec: MethodSpec) -> Callable[[MethodConfig], Prepared]:
    def build(config: MethodConfig) -> Prepared:
        from deblurcli.optim.blind import bench_runner

        run, label = bench_runner(spec.name, dict(config.params), _device(config))
        return Prepared(run, _device(config), torch.float32, label)

    return build


def _reference(spec: MethodSpec) -> Callable[[MethodConfig], Prepared]:
    def build(config: MethodConfig) -> Prepared:
        raise UsageError(f"{spec.name} needs a sharp reference photo per image and the bench "
                         "sets have none; measure it with scripts/eval_ref.py "
                         "(docs/deblur_ref.md)")

    return build


def _checked_params(spec: MethodSpec, config: MethodConfig) -> dict[str, Any]:
    unknown = sorted(set(config.params) - set(spec.param_map))
    if unknown:
        known = ", ".join(spec.param_map) or "none"
        raise UsageError(f"{spec.name} does not take {', '.join(unknown)}; it takes {known}")
    return dict(config.params)


_KERNEL_USE = {"network": "none", "baseline": "none", "non-blind": "full", "blind": "size",
               "reference": "none"}
_BUILDERS: dict[str, Callable[[MethodSpec], Callable[[MethodConfig], Prepared]]] = {
    "network": _network, "non-blind": _deconvolution, "blind": _blind,
    "reference": _reference, "baseline": lambda spec: _identity,
}


def _method(spec: MethodSpec) -> Method:
    summary = spec.description
    if spec.kind == "network":
        summary += f" (checkpoint {spec.checkpoint}, or --model)"
    elif spec.kind == "blind":
        summary += " (a true kernel only sets the kernel size)"
    return Method(spec.name, summary, _KERNEL_USE[spec.kind], _BUILDERS[spec.kind](spec))


REGISTRY: dict[str, Method] = {spec.name: _method(spec) for spec in table.METHODS}
"""Benchmarkable methods by name: every row of the method table."""


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
    """``["weight=1e-4", "iterations=50", "boundary=smooth"]`` → typed dict.

    The package's one ``KEY=VALUE`` parser (:func:`deblurcli.methods.parse_params`); each method
    checks the keys it is given when it is built.

    Raises:
        UsageError: an item without ``=``.
    """
    return table.parse_params(items)
