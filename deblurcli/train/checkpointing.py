"""Training state on disk: safetensors + JSON only, written so that SIGKILL cannot corrupt it.

A checkpoint is a folder ``RUN/checkpoints/step_XXXXXXXX/`` holding

- ``model.safetensors`` and ``ema.safetensors``: deblurcli checkpoints
  (:func:`deblurcli.engine.checkpoint.save_checkpoint`), loadable by ``deblur`` directly;
- ``disc.safetensors``: the discriminator, when a GAN loss is on;
- ``state.safetensors``: every tensor of the optimiser states and the RNG states;
- ``state.json``: the step, the non-tensor optimiser values, RNG scalars and loop scalars.

The folder is written under a temporary name, every file is fsynced, and only then renamed to
its final name (an atomic rename), so a folder named ``step_*`` is always complete. Old folders
are renamed away before they are deleted. Temporary and half-deleted folders left by a killed
process are ignored and removed on the next save.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from deblurcli._atomic import atomic_path
from deblurcli.engine.checkpoint import save_checkpoint
from deblurcli.engine.info import ModelInfo
from deblurcli.errors import CheckpointError

STATE_FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


def checkpoint_root(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, folder)``, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return sorted((s, p) for s, p in found if (p / "state.json").is_file())


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


# --------------------------------------------------------------------------- flattening


def flatten_state(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split an optimiser ``state_dict`` into tensors (named ``prefix.state.<id>.<key>``) and
    a JSON-able rest in which every tensor is replaced by the marker ``{"tensor": name}``."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, name: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous().clone()
            return {"tensor": name}
        if isinstance(value, dict):
            return {"dict": [[k, walk(v, f"{name}.{k}")] for k, v in value.items()]}
        if isinstance(value, list | tuple):
            return {
                "tuple" if isinstance(value, tuple) else "list": [
                    walk(v, f"{name}.{i}") for i, v in enumerate(value)
                ]
            }
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"{name}: cannot store {type(value).__name__} in training state")

    return tensors, walk(state, prefix)


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state` (dict keys keep their JSON types: ints stay ints)."""
    if isinstance(tree, dict):
        if "tensor" in tree:
            return tensors[tree["tensor"]]
        if "dict" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["dict"]}
        if "tuple" in tree:
            return tuple(unflatten_state(v, tensors) for v in tree["tuple"])
        return [unflatten_state(v, tensors) for v in tree["list"]]
    return tree


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch (CPU and CUDA), numpy-global and python ``random`` states: tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state(legacy=False)
    tensors["rng.numpy.key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    version, internal, gauss = random.getstate()
    scalars = {
        "numpy": {
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        },
        "python": [version, list(internal), gauss],
    }
    return tensors, scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    np_scalars = scalars["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {
                "key": tensors["rng.numpy.key"].numpy().astype(np.uint32),
                "pos": np_scalars["pos"],
            },
            "has_gauss": np_scalars["has_gauss"],
            "gauss": np_scalars["gauss"],
        }
    )
    version, internal, gauss = scalars["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------- save / load


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Rename away, then delete: a half-deleted folder never looks like a checkpoint."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save_state(
    run_dir: str | os.PathLike[str],
    step: int,
    *,
    model: nn.Module,
    info: ModelInfo,
    optimizers: dict[str, torch.optim.Optimizer],
    ema: dict[str, torch.Tensor] | None = None,
    disc: nn.Module | None = None,
    scalars: dict[str, Any] | None = None,
    keep_last: int = 3,
) -> Path:
    """Write a complete checkpoint for ``step`` and prune to the newest ``keep_last``.

    Args:
        run_dir: The run folder.
        step: Optimiser steps done.
        model: The generator (not DDP-wrapped).
        info: Its descriptor.
        optimizers: Named optimisers (``generator``, ``discriminator``).
        ema: EMA weights (same keys as ``model.state_dict()``).
        disc: The discriminator, if any.
        scalars: JSON-able loop values (wall time, counters …).
        keep_last: Checkpoints kept (at least 1).
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(".*"):  # temporaries of killed processes (never ours: one writer)
        shutil.rmtree(leftover, ignore_errors=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".{final.name}.partial-{os.getpid()}"
    tmp.mkdir()
    train_meta = {"train": {"step": step}}
    save_checkpoint(tmp / "model.safetensors", model, info, extra_metadata=train_meta)
    if ema is not None:
        save_checkpoint(
            tmp / "ema.safetensors",
            model,
            info,
            state_dict=ema,
            extra_metadata={"train": {"step": step, "ema": True}},
        )
    if disc is not None:
        with atomic_path(tmp / "disc.safetensors") as path:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in disc.state_dict().items()}, str(path)
            )
    tensors, rng_scalars = rng_state()
    trees = {}
    for name, optimizer in optimizers.items():
        opt_tensors, trees[name] = flatten_state(optimizer.state_dict(), f"optim.{name}")
        tensors.update(opt_tensors)
    with atomic_path(tmp / "state.safetensors") as path:
        save_file(tensors, str(path))
    document = {
        "format": STATE_FORMAT,
        "step": step,
        "optimizers": trees,
        "rng": rng_scalars,
        "scalars": scalars or {},
    }
    with atomic_path(tmp / "state.json") as path:
        path.write_text(json.dumps(document), encoding="utf-8")
    _fsync_dir(tmp)
    if final.exists():
        _remove(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for _, old in list_checkpoints(run_dir)[: -max(1, keep_last)]:
        _remove(old)
    return final


def load_state(
    folder: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    disc: nn.Module | None = None,
    restore_rng: bool = True,
) -> tuple[int, dict[str, torch.Tensor] | None, dict[str, Any]]:
    """Load a checkpoint folder into the given objects.

    Returns:
        ``(step, ema_state_or_None, scalars)``.

    Raises:
        CheckpointError: missing or unreadable files, or tensors that do not fit.
    """
    folder = Path(folder)
    try:
        document = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if document.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown training-state format {document.get('format')!r}")
        tensors = load_file(str(folder / "state.safetensors"))
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        ema_path = folder / "ema.safetensors"
        ema = load_file(str(ema_path)) if ema_path.is_file() else None
        if disc is not None:
            disc.load_state_dict(load_file(str(folder / "disc.safetensors")), strict=True)
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(unflatten_state(document["optimizers"][name], tensors))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder}: cannot resume from this checkpoint: {first}") from None
    if restore_rng:
        set_rng_state(tensors, document["rng"])
    return int(document["step"]), ema, document.get("scalars", {})
