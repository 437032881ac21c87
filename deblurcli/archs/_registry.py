"""Architecture specs: what the registry knows about each network class.

An :class:`ArchSpec` ties an architecture id (stored in every checkpoint's metadata) to its
``nn.Module`` class, its frozen config dataclass, the descriptor defaults the engine needs
(size multiple, tiling policy, precision support) and a tiny config for tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

Tiling = Literal["supported", "discouraged", "internal"]
GrowState = Callable[[dict[str, Tensor], dict[str, Any], dict[str, Any]], dict[str, Tensor]]
"""``(weights, old_config, new_config) -> weights``: see :attr:`ArchSpec.grow_state`."""


@dataclass(frozen=True)
class ArchDefaults:
    """Descriptor fields an architecture implies; a checkpoint may override them."""

    inputs: int = 1
    """1 for single-image models, 2 for (blurry, reference) models."""
    size_multiple: int = 1
    """Input height and width must be multiples of this (the Restorer pads)."""
    supports_fp16: bool = False
    supports_bf16: bool = True
    tiling: Tiling = "supported"
    """``supported``: tile freely; ``discouraged``: warn when forced; ``internal``: never tile."""
    receptive_radius: int = 64
    """Pixels of context a tile needs on each side; the default tile overlap is at least this."""


@dataclass(frozen=True)
class ArchSpec:
    """One registry entry."""

    id: str
    module_cls: type[nn.Module]
    config_cls: type[Any]
    defaults: ArchDefaults = field(default_factory=ArchDefaults)
    tiny_config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a few-hundred-parameter variant, used by the test-suite."""
    description: str = ""
    cpu_channels_last: bool = False
    """Run inference on the CPU with the weights in ``channels_last`` memory format (the engine
    does this): set only where measured faster (README, "Speed on the CPU")."""
    grow_state: GrowState | None = None
    """``grow_state(weights, old_config, new_config)``: map a warm start's weights onto a larger
    config of the same architecture so that the network computes what it did before
    (``run.init_grow``); ``None``: only tensors of matching shape load."""

    def make_config(self, values: dict[str, Any]) -> Any:
        """Build the config dataclass, rejecting unknown keys with a message listing valid ones."""
        valid = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(
                f"unknown {self.id} config key(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(valid))}"
            )
        return self.config_cls(**values)

    def build(self, values: dict[str, Any] | None = None) -> nn.Module:
        """Instantiate the network from plain config values."""
        return self.module_cls(self.make_config(values or {}))
