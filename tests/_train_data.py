"""Helpers shared by the training tests: tiny smooth images and a tiny training config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deblurcli.train.config import TrainConfig, load_config


def write_images(
    folder: Path, count: int, size: tuple[int, int] = (72, 88), seed: int = 0, suffix: str = ""
) -> list[Path]:
    """``count`` smooth random RGB PNGs (upsampled noise, so blur visibly changes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        small = rng.uniform(0, 255, (size[0] // 3, size[1] // 3, 3)).astype(np.float32)
        image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        path = folder / f"img{i:02d}{suffix}.png"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
        paths.append(path)
    return paths


def tiny_config(images: Path, arch: str = "residual_unet", **values: Any) -> TrainConfig:
    """A config training the registry's tiny ``arch`` (a residual U-net unless given) on 32 px
    crops of ``images``."""
    from deblurcli.archs import REGISTRY

    overrides = {
        "run.steps": 20,
        "run.log_every": 1,
        "run.val_every": 10,
        "run.num_threads": 1,
        "data.sharp": str(images),
        "data.crop": 32,
        "data.batch_size": 4,
        "data.workers": 0,
        "data.kernel_size": 9,
        "data.jpeg_prob": 0.0,
        "data.noise_max": 0.0,
        "val.sharp": str(images),
        "val.count": 2,
        "val.crop": 40,
        "val.kernel_size": 9,
        "checkpoint.every": 10,
        "optim.lr": 3e-3,
        "model.ema_decay": 0.9,
        "model.arch": arch,
        **{f"model.config.{k}": v for k, v in REGISTRY[arch].tiny_config.items()},
        **values,
    }
    return load_config(None, [f"{k}={_literal(v)}" for k, v in overrides.items()])


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
from _train_data import tiny_config
from deblurcli.train.loop import fit
torch.set_num_threads(1)

def kill(info):
    if info.step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)

fit(tiny_config({images!r}, **{options!r}), {run!r}, on_step=kill)
"""


def train_until_killed(images: Path, run: Path, options: dict[str, Any], kill_at: int) -> None:
    """Train ``tiny_config(images, **options)`` into ``run`` in a child process that SIGKILLs
    itself after step ``kill_at``; asserts that it died that way."""
    import os
    import signal
    import subprocess
    import sys

    tests = Path(__file__).resolve().parent
    script = _KILLED_RUN.format(
        tests=str(tests), images=str(images), run=str(run), options=options, kill_at=kill_at
    )
    env = {**os.environ, "PYTHONPATH": str(tests.parent)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return (
        repr(value)
        if not isinstance(value, (list, tuple))
        else "[" + ", ".join(_literal(v) for v in value) + "]"
    )
