"""Device and precision selection: the only module that asks torch what hardware exists."""

from __future__ import annotations

import logging
from typing import Literal

import torch

from deblurcli.engine.info import ModelInfo
from deblurcli.errors import UnsupportedDtypeError, UsageError

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
logger = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → cuda, then mps, then cpu; otherwise ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        UsageError: unknown spelling, or a device this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps requested but MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def cpu_capability() -> str:
    """The SIMD level torch dispatches CPU kernels to: ``AVX512``, ``AVX2``, ``DEFAULT`` …"""
    return str(torch.backends.cpu.get_cpu_capability())


def cpu_bf16_is_native() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 BW/BF16 or AMX).

    Without them (AVX2-only CPUs) bf16 convolutions take reference code paths: a Pix2Pix
    training step measured 7.2 s in bf16 autocast against 0.54 s in float32 on an AVX2 EPYC
    (docs/training.md), so bf16 on such a CPU is never what a user wants by default.
    """
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    return cpu_capability().startswith("AVX512")


def resolve_dtype(precision: str, device: torch.device, info: ModelInfo) -> torch.dtype:
    """Compute dtype for ``precision`` on ``device`` as the model's descriptor allows.

    ``auto`` is fp32 on CPU and MPS; on CUDA it is bf16 where the GPU and the model support it,
    else fp16 where the model allows it, else fp32.

    Raises:
        UnsupportedDtypeError: an explicit precision the model does not support.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        if info.supports_bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if info.supports_fp16 else torch.float32
    if precision == "fp16" and not info.supports_fp16:
        raise UnsupportedDtypeError(
            f"model {info.arch} is not validated for fp16; use fp32 or bf16")
    if precision == "bf16" and not info.supports_bf16:
        raise UnsupportedDtypeError(f"model {info.arch} is not validated for bf16; use fp32")
    if precision == "fp16" and device.type == "cpu":
        raise UnsupportedDtypeError("fp16 is not supported on the CPU; use fp32 or bf16")
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_is_native():
        logger.warning("bf16 on this CPU (%s) runs without native kernels and is much slower "
                       "than fp32", cpu_capability())
    return _DTYPES[precision]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``bf16`` and so on."""
    return {v: k for k, v in _DTYPES.items()}[dtype]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's typed out-of-memory error (CUDA, MPS and others)."""
    return isinstance(exc, torch.OutOfMemoryError)
