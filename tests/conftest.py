"""Shared fixtures: test device, seeding, a tiny checkpoint and a model table pointing at it."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

TEST_DEVICE = os.environ.get("DEBLURCLI_TEST_DEVICE", "cpu")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    """The tiny residual U-net with a randomised output layer (so it is not the identity)."""
    from deblurcli.archs import REGISTRY

    spec = REGISTRY["residual_unet"]
    model = spec.build(spec.tiny_config)
    with torch.no_grad():
        for param in model.parameters():
            if param.abs().sum() == 0:
                param.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_model: torch.nn.Module) -> Path:
    from deblurcli.engine import ModelInfo, save_checkpoint

    path = tmp_path / "weights" / "tiny.safetensors"
    save_checkpoint(path, tiny_model, ModelInfo.for_model("residual_unet", tiny_model))
    return path


@pytest.fixture
def model_table(tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model table with one shipped tiny model ``tiny@test`` as default, via the env var.

    The package's own manifest is hidden so tests see only this table.
    """
    from deblurcli.engine.checkpoint import sha256_file

    table = tiny_checkpoint.parent / "manifest.json"
    table.write_text(json.dumps({
        "default": "tiny",
        "models": [{
            "name": "tiny", "tag": "test", "arch": "residual_unet", "default_tag": True,
            "file": tiny_checkpoint.name, "sha256": sha256_file(tiny_checkpoint),
            "size": tiny_checkpoint.stat().st_size, "description": "tiny test model",
        }],
    }))
    monkeypatch.setenv("DEBLURCLI_MODEL_TABLE", str(table))
    monkeypatch.setattr("deblurcli.engine.zoo.MANIFEST_PATH", tmp_path / "no-package-manifest.json")
    return table


@pytest.fixture
def device() -> torch.device:
    """The device tests run on (``DEBLURCLI_TEST_DEVICE``, default cpu)."""
    return torch.device(TEST_DEVICE)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    the optimisation loops under test are tiny, and extra threads only spin on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
