"""Checkpoints: config and descriptor round-trip through safetensors metadata, never pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from deblurcli.archs import REGISTRY, build, config_of
from deblurcli.engine import ModelInfo, load_checkpoint, read_metadata, save_checkpoint
from deblurcli.errors import CheckpointError


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_arch_round_trips_config_and_outputs(arch: str, tmp_path: Path) -> None:
    spec = REGISTRY[arch]
    model = spec.build(spec.tiny_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "m.safetensors"
    info = ModelInfo.for_model(arch, model)
    save_checkpoint(path, model, info, extra_metadata={"train": {"steps": 3}})
    meta = read_metadata(path)
    assert meta["arch"] == arch and json.loads(meta["train"]) == {"steps": 3}
    loaded = load_checkpoint(path)
    assert config_of(loaded.model) == config_of(model)
    assert loaded.info.size_multiple == getattr(model, "size_multiple", 1)
    multiple = loaded.info.size_multiple
    x = torch.rand(1, loaded.info.in_channels, 2 * multiple, 3 * multiple)
    args = (x, x) if loaded.info.inputs == 2 else (x,)  # reference-based models: x as reference
    with torch.no_grad():
        assert torch.equal(loaded.model(*args), model(*args))


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_declared_size_multiple_is_enough(arch: str) -> None:
    spec = REGISTRY[arch]
    model = spec.build(spec.tiny_config).eval()
    info = ModelInfo.for_model(arch, model)
    m = info.size_multiple
    x = torch.rand(1, 3, 3 * m, 5 * m)
    with torch.no_grad():
        assert model(*((x, x) if info.inputs == 2 else (x,))).shape == (1, 3, 3 * m, 5 * m)


def test_unknown_config_key_is_rejected_with_the_valid_keys() -> None:
    with pytest.raises(ValueError, match="valid: .*width"):
        build("residual_unet", {"widht": 8})


def test_corrupt_truncated_and_foreign_files_raise_checkpoint_error(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:-100])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    for path in (truncated, garbage, foreign):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_tensors_that_do_not_match_the_config_are_refused(tmp_path: Path, tiny_model) -> None:
    other = REGISTRY["residual_unet"].build({"width": 6, "levels": 2, "blocks_per_level": 1})
    path = tmp_path / "mismatch.safetensors"
    save_checkpoint(path, tiny_model, ModelInfo.for_model("residual_unet", tiny_model),
                    state_dict=other.state_dict())
    with pytest.raises(CheckpointError, match="do not load"):
        load_checkpoint(path)
