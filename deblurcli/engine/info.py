"""The model descriptor: everything the engine needs to know about a loaded network.

A :class:`ModelInfo` travels as JSON in the safetensors metadata (key ``info``), next to the
architecture id (``arch``) and its config (``config``). The engine talks to this descriptor only,
never to architecture internals.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from torch import nn

from deblurcli.archs import get_spec
from deblurcli.archs._registry import Tiling


@dataclass(frozen=True)
class ModelInfo:
    """Descriptor of a checkpointed restoration model."""

    arch: str
    """Registry id of the architecture."""
    purpose: str = "deblur"
    """What the model restores (``deblur``, ``motion-deblur``, ``defocus-deblur`` …)."""
    inputs: int = 1
    """1: ``model(blurry)``; 2: ``model(blurry, reference)``."""
    in_channels: int = 3
    out_channels: int = 3
    guide_channels: int = 0
    """Per-pixel guide channels the model reads after the image's (e.g. a finishing network's
    :func:`deblurcli.degrade.restoration_guide`); the Restorer tiles them with the image."""
    size_multiple: int = 1
    """The Restorer pads inputs to multiples of this and crops the output back."""
    supports_fp16: bool = False
    supports_bf16: bool = True
    tiling: Tiling = "supported"
    receptive_radius: int = 64
    """Context in pixels a tile needs on each side; the default overlap is at least this."""

    def to_json(self) -> str:
        """Serialise for safetensors metadata."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        """Parse metadata JSON; unknown keys (from newer versions) are ignored."""
        values: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def for_model(cls, arch: str, model: nn.Module, **overrides: Any) -> ModelInfo:
        """Derive the descriptor of ``model`` from its architecture defaults and config."""
        values: dict[str, Any] = dataclasses.asdict(get_spec(arch).defaults)
        channels = getattr(model.config, "in_channels", 3)
        values.update(
            arch=arch,
            in_channels=channels,
            out_channels=getattr(model.config, "out_channels", channels),
            guide_channels=int(getattr(model.config, "guide_channels", 0) or 0),
            size_multiple=int(getattr(model, "size_multiple", values["size_multiple"])),
            inputs=int(getattr(model, "inputs", values["inputs"])),
        )
        values.update(overrides)
        return cls(**values)
