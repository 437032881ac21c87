"""Checkpoints: safetensors files whose header carries the architecture, config and descriptor.

Metadata keys (all strings, as safetensors requires): ``format`` = ``pt``, ``deblurcli.format`` =
``1``, ``arch`` (registry id), ``config`` (JSON of the architecture config), ``info`` (JSON of
:class:`ModelInfo`) and optionally ``train`` (JSON summary of the run). Loading never unpickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the reader
        raise CheckpointError(f"{path}: not a regular file; refused")
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


MAX_PARAMETERS = 2_000_000_000
"""Largest network rebuilt from a checkpoint (8 GB of float32 weights)."""


def _json_object(metadata: dict[str, str], key: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(metadata.get(key, "{}"))
    except ValueError:
        raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: metadata {key!r} must be a JSON object, "
                              f"got {type(value).__name__}")  # fmt: skip
    return value


def _model_info(metadata: dict[str, str], path: Path) -> ModelInfo:
    """The descriptor, with every field checked against the type of its default."""
    values = _json_object(metadata, "info", path)
    try:
        info = ModelInfo.from_json(json.dumps(values))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: metadata 'info' is malformed ({exc})") from None
    for item in dataclasses.fields(ModelInfo):
        value = getattr(info, item.name)
        expected = bool if isinstance(item.default, bool) else type(item.default)
        if item.default is dataclasses.MISSING:
            expected = str
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok or (expected is int and value < 0):
            raise CheckpointError(f"{path}: metadata 'info.{item.name}' has the odd value "
                                  f"{value!r}")  # fmt: skip
    return info


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the stored tensors, read from the header only."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from None


def plan_model(arch: str, config: dict[str, Any], path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the parameters ``arch(config)`` would have, without allocating any memory.

    The network is built on PyTorch's ``meta`` device, so a forged config (``width=4096``)
    costs nothing; its parameter count is checked against :data:`MAX_PARAMETERS`.

    Raises:
        CheckpointError: unknown architecture, a config it rejects, or too many parameters.
    """
    try:
        with torch.device("meta"):
            model = build(arch, config)
    except Exception as exc:  # any rejection of a forged config is a corrupt checkpoint
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{path}: cannot rebuild the model: {message}") from None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: its config describes {count:,} parameters (more than "
                              f"{MAX_PARAMETERS:,}); refused before building it")  # fmt: skip
    return shapes


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedModel:
    """Rebuild the network stored in ``path`` (CPU, float32, eval mode).

    Before any memory is allocated, the network the config describes is planned on the
    ``meta`` device (see :func:`plan_model`) and its parameter shapes are compared with the
    tensors the file header lists.

    Raises:
        CheckpointError: corrupt file, odd metadata, unknown architecture, a config describing
            too large a network, or tensors that do not match the architecture config.
    """
    path = Path(path)
    metadata = read_metadata(path)
    info = _model_info(metadata, path)
    config = _json_object(metadata, "config", path)
    planned = plan_model(metadata["arch"], config, path)
    stored = _tensor_shapes(path)
    if planned != stored:
        missing = sorted(set(planned) - set(stored))
        odd = sorted(k for k in set(planned) & set(stored) if planned[k] != stored[k])
        extra = sorted(set(stored) - set(planned))
        what = (f"missing {missing[0]}" if missing else f"shape of {odd[0]} is {stored[odd[0]]}, "
                f"config says {planned[odd[0]]}" if odd else f"unexpected {extra[0]}")
        raise CheckpointError(f"{path}: tensors do not load: they do not match the config "
                              f"({what})")
    model = build(metadata["arch"], config)
    try:
        tensors = load_file(str(path), device="cpu")
        model.load_state_dict(tensors, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: tensors do not load: {first_line}") from None
    model.eval()
    return LoadedModel(model=model, info=info, metadata=metadata, path=path)
