"""Training state on disk: lossless round trips, atomic folders, pruning, leftovers ignored."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from deblurcli.archs import REGISTRY
from deblurcli.engine import load_checkpoint
from deblurcli.engine.info import ModelInfo
from deblurcli.errors import CheckpointError
from deblurcli.train import checkpointing as ck


def _setup() -> tuple[torch.nn.Module, ModelInfo, torch.optim.Optimizer]:
    model = REGISTRY["residual_unet"].build(REGISTRY["residual_unet"].tiny_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.rand(1, 3, 16, 16)).mean().backward()
    optimizer.step()
    return model, ModelInfo.for_model("residual_unet", model), optimizer


def test_flatten_round_trip_keeps_types() -> None:
    _, _, optimizer = _setup()
    state = optimizer.state_dict()
    tensors, tree = ck.flatten_state(state, "optim.g")
    back = ck.unflatten_state(tree, tensors)
    assert back["param_groups"] == state["param_groups"]  # tuples stay tuples, ints stay ints
    assert isinstance(back["param_groups"][0]["betas"], tuple)
    assert back["state"].keys() == state["state"].keys()
    for key, entry in state["state"].items():
        assert all(torch.equal(entry[k], back["state"][key][k]) for k in entry)
    with pytest.raises(TypeError, match="cannot store"):
        ck.flatten_state({"x": object()}, "p")


def test_rng_state_round_trip() -> None:
    tensors, scalars = ck.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    ck.set_rng_state(tensors, scalars)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_save_load_and_prune(tmp_path: Path) -> None:
    model, info, optimizer = _setup()
    ema = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    for step in (1, 2, 3):
        folder = ck.save_state(
            tmp_path,
            step,
            model=model,
            info=info,
            optimizers={"generator": optimizer},
            ema=ema,
            scalars={"wall_seconds": 1.5},
            keep_last=2,
        )
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [2, 3]
    assert ck.latest_checkpoint(tmp_path) == folder
    assert load_checkpoint(folder / "ema.safetensors").metadata["arch"] == "residual_unet"
    fresh, _, fresh_opt = _setup()
    step, loaded_ema, scalars = ck.load_state(
        folder, model=fresh, optimizers={"generator": fresh_opt}
    )
    assert step == 3 and scalars == {"wall_seconds": 1.5} and loaded_ema is not None
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True)
    )
    assert all(torch.equal(ema[k], loaded_ema[k]) for k in ema)
    a, b = optimizer.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert all(torch.equal(a["state"][0][k], b["state"][0][k]) for k in a["state"][0])


def test_leftovers_of_a_killed_writer_are_ignored(tmp_path: Path) -> None:
    model, info, optimizer = _setup()
    ck.save_state(tmp_path, 5, model=model, info=info, optimizers={"generator": optimizer})
    root = ck.checkpoint_root(tmp_path)
    (root / ".step_00000009.partial-123").mkdir()  # killed while writing
    (root / ".step_00000009.partial-123" / "model.safetensors").write_bytes(b"\0" * 10)
    (root / "step_00000007").mkdir()  # a folder without state.json is not a checkpoint
    assert ck.latest_checkpoint(tmp_path) == root / "step_00000005"
    ck.save_state(tmp_path, 6, model=model, info=info, optimizers={"generator": optimizer})
    assert not (root / ".step_00000009.partial-123").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    model, info, optimizer = _setup()
    folder = ck.save_state(tmp_path, 1, model=model, info=info, optimizers={"generator": optimizer})
    (folder / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot resume"):
        ck.load_state(folder, model=model, optimizers={"generator": optimizer})
