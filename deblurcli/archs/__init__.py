"""Network architectures behind an explicit registry.

Adding an architecture means one new self-contained file (defining ``SPEC``) and one network row
in the method table, :data:`deblurcli.methods.METHODS`, which names that file; the registry below
is built from those rows, so nothing is discovered by scanning the filesystem and no second list
exists. Modules here hold ``nn.Module`` code only: no I/O, no devices, no downloads.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

from torch import nn

from deblurcli import methods
from deblurcli.archs._registry import ArchDefaults, ArchSpec, Tiling


def _load_specs() -> tuple[ArchSpec, ...]:
    specs: dict[str, ArchSpec] = {}
    for row in methods.of_kind("network"):
        assert row.arch is not None and row.arch_module is not None, row.name
        spec: ArchSpec = importlib.import_module(row.arch_module).SPEC
        if spec.id != row.arch:
            raise RuntimeError(f"{row.arch_module}.SPEC.id is {spec.id!r}, the method table says "
                               f"{row.arch!r}")
        specs[spec.id] = spec
    return tuple(specs.values())


_ARCHS: tuple[ArchSpec, ...] = _load_specs()

REGISTRY: dict[str, ArchSpec] = {spec.id: spec for spec in _ARCHS}
"""Architecture id → spec."""


def get_spec(arch: str) -> ArchSpec:
    """Return the spec of ``arch`` or raise ``KeyError`` naming the known architectures."""
    try:
        return REGISTRY[arch]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown architecture {arch!r}; known: {known}") from None


def build(arch: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build architecture ``arch`` from plain config values (e.g. from checkpoint metadata)."""
    return get_spec(arch).build(config)


def config_of(model: nn.Module) -> dict[str, Any]:
    """The plain-JSON config a registered model was built with (tuples become lists, as they
    are after a round trip through a checkpoint's metadata, so the two compare equal)."""
    return _plain(model.config)


def _plain(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def full_config(arch: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` completed with the defaults of every key ``arch`` has today, as plain JSON
    (what :func:`config_of` returns for the model built from them), without building it.

    A checkpoint written before a key existed (``nafnet@cpu-v4`` has no ``guide_channels``)
    then compares equal to a config that sets that key to its default.

    Raises:
        KeyError: unknown architecture. ValueError: a key ``arch`` does not have, or a bad value.
    """
    return _plain(get_spec(arch).make_config(values))


def list_archs() -> list[str]:
    """Ids of all registered architectures."""
    return sorted(REGISTRY)


__all__ = ["REGISTRY", "ArchDefaults", "ArchSpec", "Tiling", "build", "config_of", "full_config",
           "get_spec", "list_archs"]
