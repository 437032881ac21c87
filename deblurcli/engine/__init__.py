"""Load weights and run them well: the only package that knows devices, precision and tiles."""

from __future__ import annotations

from pathlib import Path

from deblurcli.engine.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from deblurcli.engine.device import resolve_device, resolve_dtype
from deblurcli.engine.info import ModelInfo
from deblurcli.engine.restorer import Restorer, RunStats
from deblurcli.engine.zoo import ModelTable, ResolvedModel, load_model_table, resolve


def load_model(
    ref: str,
    *,
    device: str = "auto",
    precision: str = "fp32",
    offline: bool = False,
    cache_dir: Path | None = None,
    table: ModelTable | None = None,
) -> Restorer:
    """Resolve ``ref`` (model name, ``name@tag`` or ``.safetensors`` path) to a ready Restorer.

    The library default precision is fp32; the CLI passes ``auto`` (bf16 on CUDA where allowed).
    """
    resolved = resolve(ref, table=table, offline=offline, cache_dir=cache_dir)
    loaded = load_checkpoint(resolved.path)
    torch_device = resolve_device(device)
    dtype = resolve_dtype(precision, torch_device, loaded.info)
    name = resolved.entry.ref if resolved.entry is not None else str(resolved.path)
    provenance = {"path": str(resolved.path), "source": resolved.source}
    if resolved.entry is not None:
        provenance["sha256"] = resolved.entry.sha256
    return Restorer(
        loaded.model, loaded.info, device=torch_device, dtype=dtype, name=name,
        provenance=provenance,
    )


__all__ = [
    "ModelInfo",
    "ModelTable",
    "ResolvedModel",
    "Restorer",
    "RunStats",
    "load_checkpoint",
    "load_model",
    "load_model_table",
    "read_metadata",
    "resolve",
    "resolve_device",
    "resolve_dtype",
    "save_checkpoint",
]
