"""Load weights and run them well: the only package that knows devices, precision and tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def load_method(name: str, **kwargs: Any) -> Restorer:
    """Load the default checkpoint of the network family ``name`` (a row of the method table).

    Keyword arguments are those of :func:`load_model`.

    Raises:
        UsageError: ``name`` is not a network method (the message lists the known ones).
        ModelUnavailableError: the family has no released checkpoint, or it is neither shipped
            nor cached (the message says how to get it).
    """
    from deblurcli import methods
    from deblurcli.engine.zoo import parse_reference
    from deblurcli.errors import ModelUnavailableError

    spec = methods.get(name, "network")
    assert spec.checkpoint is not None
    table = kwargs.pop("table", None) or load_model_table()
    ckpt_name, tag = parse_reference(spec.checkpoint)
    if not any(e.name == ckpt_name and e.tag == tag for e in table.entries):
        raise ModelUnavailableError(
            f"method {name}: no checkpoint has been released yet ({spec.checkpoint} is not in the "
            f"model table); train one (`deblurcli train run CONFIG`, then `deblurcli train export "
            f"RUN --name {ckpt_name} --tag {tag}`) or pass --model FILE.safetensors"
        )
    try:
        return load_model(spec.checkpoint, table=table, **kwargs)
    except ModelUnavailableError as exc:
        raise ModelUnavailableError(
            f"method {name}: {exc}; fetch it with `deblurcli models download {spec.checkpoint}` "
            "(needs network access once)"
        ) from None


__all__ = [
    "ModelInfo",
    "ModelTable",
    "ResolvedModel",
    "Restorer",
    "RunStats",
    "load_checkpoint",
    "load_method",
    "load_model",
    "load_model_table",
    "read_metadata",
    "resolve",
    "resolve_device",
    "resolve_dtype",
    "save_checkpoint",
]
