"""The multi-scale residual U-net (MIMO-style inputs and coarse outputs) and growing a plain
checkpoint into it (``run.init_grow``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from _train_data import tiny_config, write_images
from safetensors.torch import load_file

from deblurcli import archs
from deblurcli.train.config import ConfigError
from deblurcli.train.loop import fit

TINY = {"width": 4, "levels": 3, "blocks_per_level": 1}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sharp")
    write_images(folder, count=4)
    return folder


def test_untrained_multi_scale_model_is_the_identity_and_predicts_every_coarse_scale() -> None:
    model = archs.build("residual_unet", {**TINY, "multi_scale": True})
    x = torch.rand(2, 3, 24, 40)
    model.eval()
    assert torch.equal(model(x), x)
    model.train()
    model(x)
    # the zero-initialised heads start at the pooled input: the term is the pooled distance
    sharp = torch.rand(2, 3, 24, 40)
    terms = model.training_terms(sharp)
    expected = torch.stack([
        (F.avg_pool2d(x, 2**s) - F.avg_pool2d(sharp, 2**s)).abs().mean() for s in (1, 2)
    ]).mean()
    assert torch.allclose(terms["coarse_scales"], expected)
    assert model.training_terms(sharp) == {}  # consumed once


def test_coarse_term_reaches_the_coarse_levels_only_through_their_heads() -> None:
    torch.manual_seed(0)
    model = archs.build("residual_unet", {**TINY, "multi_scale": True})
    for head in model.scale_outputs:
        torch.nn.init.normal_(head.weight, std=0.1)
    model.train()
    x = torch.rand(1, 3, 16, 16)
    model(x)
    model.training_terms(torch.rand(1, 3, 16, 16))["coarse_scales"].backward()
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0
               for h in model.scale_outputs)
    assert model.tail.weight.grad is None  # the full-resolution output is not in this term


def test_plain_model_has_no_coarse_term_and_no_extra_tensors() -> None:
    plain = archs.build("residual_unet", TINY)
    plain.train()
    plain(torch.rand(1, 3, 16, 16))
    assert plain.training_terms(torch.rand(1, 3, 16, 16)) == {}
    grown = archs.build("residual_unet", {**TINY, "multi_scale": True})
    extra = set(grown.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith(("scale_inputs.", "scale_outputs.")) for k in extra)


def test_multi_scale_run_logs_the_coarse_term(images: Path, tmp_path: Path) -> None:
    cfg = tiny_config(images, **{"run.steps": 3, "run.val_every": 0,
                                 "model.config.multi_scale": True, "loss.coarse_scales": 0.5})
    fit(cfg, tmp_path / "ms")
    log = (tmp_path / "ms" / "log.jsonl").read_text()
    assert '"coarse_scales"' in log


def test_init_grow_loads_a_plain_run_into_a_multi_scale_model(
    images: Path, tmp_path: Path
) -> None:
    parent = fit(tiny_config(images, **{"run.steps": 3, "run.val_every": 0}), tmp_path / "a")
    grown_options = {"run.steps": 2, "run.val_every": 0, "run.init": str(tmp_path / "a"),
                     "model.config.multi_scale": True, "optim.lr": 0.0}
    with pytest.raises(ConfigError, match="init_grow"):  # a config change must be asked for
        fit(tiny_config(images, **grown_options), tmp_path / "refused")
    child = fit(tiny_config(images, **{**grown_options, "run.init_grow": True}), tmp_path / "b")
    a = load_file(str(parent.checkpoint / "model.safetensors"))  # type: ignore[operator]
    b = load_file(str(child.checkpoint / "model.safetensors"))  # type: ignore[operator]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not b[k].any() for k in set(b) - set(a))  # the added convs are still zero


def test_init_grow_refuses_tensors_of_another_shape(images: Path, tmp_path: Path) -> None:
    fit(tiny_config(images, **{"run.steps": 2, "run.val_every": 0}), tmp_path / "a")
    cfg = tiny_config(images, **{"run.init": str(tmp_path / "a"), "run.init_grow": True,
                                 "model.config.width": 8})
    with pytest.raises(ConfigError, match="other shapes"):
        fit(cfg, tmp_path / "b")
