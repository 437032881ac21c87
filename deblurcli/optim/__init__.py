"""Per-image optimisation: DIP/VDIP blind deconvolution (faithful) and its fast path.

Not checkpointed models: the generator networks (:mod:`deblurcli.archs.dip_nets`) are fitted
from scratch to every image. :mod:`deblurcli.optim.ops` holds the operators, :mod:`.vdip` the
published method, :mod:`.fast` the practical coarse-to-fine preset.
"""

from __future__ import annotations

from deblurcli.optim.vdip import (
    METHODS,
    BlindDeconvolutionError,
    BlindResult,
    StepInfo,
    VDIPConfig,
    fit,
    paper_config,
)

__all__ = [
    "METHODS",
    "BlindDeconvolutionError",
    "BlindResult",
    "StepInfo",
    "VDIPConfig",
    "fit",
    "paper_config",
]
