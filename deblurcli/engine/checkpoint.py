"""Checkpoints: safetensors files whose header carries the architecture, config and descriptor.

Metadata keys (all strings, as safetensors requires): ``format`` = ``pt``, ``deblurcli.format`` =
``1``, ``arch`` (registry id), ``config`` (JSON of the architecture config), ``info`` (JSON of
:class:`ModelInfo`) and optionally ``train`` (JSON summary of the run). Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from deblurcli._atomic import atomic_path
from deblurcli.archs import build, config_of
from deblurcli.engine.info import ModelInfo
from deblurcli.errors import CheckpointError

FORMAT_VERSION = "1"


@dataclass
class LoadedModel:
    """A network rebuilt from a checkpoint, in eval mode on the CPU in float32."""

    model: nn.Module
    info: ModelInfo
    metadata: dict[str, str]
    path: Path


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    info: ModelInfo,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> str:
    """Write ``model`` (or a given ``state_dict``, e.g. EMA weights) atomically; return its sha256.

    Args:
        path: Target ``.safetensors`` file.
        model: A registered architecture instance (its ``config`` is stored).
        info: Descriptor stored as JSON.
        state_dict: Tensors to store instead of ``model.state_dict()``.
        extra_metadata: More metadata; non-string values are stored as JSON.
    """
    tensors = state_dict if state_dict is not None else model.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {
        "format": "pt",
        "deblurcli.format": FORMAT_VERSION,
        "arch": info.arch,
        "config": json.dumps(config_of(model), sort_keys=True),
        "info": info.to_json(),
    }
    for key, value in (extra_metadata or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return sha256_file(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a checkpoint's header metadata without loading tensors.

    Raises:
        CheckpointError: unreadable or corrupt header, or not a deblurcli checkpoint.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if metadata.get("deblurcli.format") != FORMAT_VERSION or "arch" not in metadata:
        raise CheckpointError(
            f"{path}: safetensors file without deblurcli metadata (arch/config/info); "
            "export checkpoints with `deblurcli train export`"
        )
    return metadata


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild the network stored in ``path`` (CPU, float32, eval mode).

    Raises:
        CheckpointError: corrupt file, unknown architecture, or tensors that do not match the
            architecture config.
    """
    path = Path(path)
    metadata = read_metadata(path)
    try:
        info = ModelInfo.from_json(metadata["info"])
        model = build(metadata["arch"], json.loads(metadata.get("config", "{}")))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    try:
        tensors = load_file(str(path), device="cpu")
        model.load_state_dict(tensors, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: tensors do not load: {first_line}") from None
    model.eval()
    return LoadedModel(model=model, info=info, metadata=metadata, path=path)
