"""Training: configs, data, losses, the ``fit`` loop, resumable checkpoints and export.

Typical use (the CLI does the same)::

    from deblurcli.train import load_config, fit, export_run

    cfg = load_config("configs/residual_unet_synth.toml", ["optim.lr=5e-4"])
    result = fit(cfg, "runs/resunet-synth", resume=True)
    export_run("runs/resunet-synth", name="resunet", tag="synth-v1", make_default=True)

Submodules are imported lazily so that ``import deblurcli.train`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deblurcli.train.config import ConfigError, TrainConfig, load_config
    from deblurcli.train.export import export_run
    from deblurcli.train.loop import FitResult, StepInfo, fit

_EXPORTS = {
    "ConfigError": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "export_run": "export",
    "FitResult": "loop",
    "StepInfo": "loop",
    "fit": "loop",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"deblurcli.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'deblurcli.train' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "FitResult",
    "StepInfo",
    "TrainConfig",
    "export_run",
    "fit",
    "load_config",
]
