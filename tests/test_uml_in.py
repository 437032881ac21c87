"""UML-IN: invertibility, latent size, identity at init, overfitting, tiling, checkpoint, loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _models import perturbed

from deblurcli.archs import REGISTRY, config_of
from deblurcli.archs.uml_in import PRESETS, UMLIN, UMLINConfig, haar, haar_inverse, preset
from deblurcli.engine import ModelInfo, load_checkpoint, read_metadata, save_checkpoint
from deblurcli.engine.restorer import Restorer, pad_to_multiple
from deblurcli.train.losses import PixelObjective

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = REGISTRY["uml_in"].tiny_config


def _randomised(config: UMLINConfig, scale: float = 0.1) -> UMLIN:
    """A model whose couplings are far from the identity (the zero-init output convs too)."""
    return perturbed(UMLIN(config), scale)  # type: ignore[return-value]


def test_haar_is_orthonormal_and_exactly_inverted() -> None:
    x = torch.rand(2, 3, 10, 14)
    y = haar(x)
    assert y.shape == (2, 12, 5, 7)
    assert torch.allclose(y.norm(), x.norm(), rtol=1e-6)
    assert torch.allclose(y[:, :3], x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2)) / 2)
    assert (haar_inverse(y) - x).abs().max() < 1e-6


@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize(("h", "w"), [(37, 53), (41, 29)])
def test_branches_are_invertible_for_odd_sizes_after_padding(coupling: str, h: int, w: int) -> None:
    config = UMLINConfig(levels=3, blocks=2, growth=8, dense_layers=2, coupling=coupling)
    model = _randomised(config)
    x, _, _ = pad_to_multiple(torch.rand(2, 3, h, w), model.size_multiple)
    with torch.no_grad():
        for encode in (model.encode_sharp, model.encode_blur):
            z = encode(x)
            branch = model.sharp if encode == model.encode_sharp else model.blur
            assert (branch.inverse(z) - x).abs().max() < 1e-4
        assert (model(x) - x).abs().max() > 1e-2  # the randomised model is not the identity


def test_latents_hold_as_many_values_as_the_image() -> None:
    model = UMLIN(preset("paper"))
    z = model.encode_blur(torch.rand(1, 3, 64, 40))
    assert [tuple(t.shape[1:]) for t in z] == [(9, 32, 20), (9, 16, 10), (12, 8, 5)]
    assert sum(t.numel() for t in z) == 3 * 64 * 40
    assert sum(t.numel() for t in model.detail(z)) == 3 * 64 * 40 - 3 * 8 * 5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_an_untrained_model_is_the_identity(name: str) -> None:
    coupling = "affine" if name == "cpu" else "additive"  # both coupling kinds covered
    model = UMLIN(preset(name, coupling=coupling)).eval()
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        h = haar(x)
        for block in (model.blur.levels[0][0], model.sharp.levels[0][0]):
            assert torch.equal(block(h), h)  # every coupling is exactly the identity
        z_blur, z_sharp = model.encode_blur(x), model.encode_sharp(x)
        assert all(torch.equal(b, s) for b, s in zip(z_blur, z_sharp, strict=True))
        out = model(x)
    assert torch.equal(out, model.decode(z_sharp))  # exactly S⁻¹(S(x)): a Haar round trip
    assert (out - x).abs().max() < 1e-6  # … equal to x up to float32 rounding


def _objective(**weights: float) -> PixelObjective:
    full = {"mse": 1.0, "ssim": 0.1, "latent_guidance": 1.0, "latent_l1": 1e-3}
    return PixelObjective(**{**full, **weights})


def _loss(model: UMLIN, objective: PixelObjective, blurry: torch.Tensor, sharp: torch.Tensor):
    out = model(blurry)
    terms = model.training_terms(sharp)  # first: it adds S's latents to model.latents
    return objective(out, sharp, model.latents, terms)


def test_loss_switches_drop_ssim_and_sparsity() -> None:
    model = UMLIN(UMLINConfig(**TINY)).train()
    blurry, sharp = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    expected = {
        "full": {"mse", "ssim", "latent_guidance", "latent_l1"},
        "base": {"mse", "latent_guidance"},
    }
    _, parts = _loss(model, _objective(), blurry, sharp)
    assert set(parts) == expected["full"]
    _, parts = _loss(model, _objective(ssim=0.0, latent_l1=0.0), blurry, sharp)
    assert set(parts) == expected["base"]
    # the sparsity covers the detail latents of both branches
    assert len(model.latents) == 2 * TINY["levels"]
    with pytest.raises(ValueError, match="no loss weight"):
        PixelObjective(mse=1.0)(sharp, sharp, None, {"other": torch.zeros(())})


def test_a_tiny_model_overfits_two_pairs() -> None:
    torch.manual_seed(0)
    sharp = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bicubic")
    sharp = sharp.clamp(0, 1)
    blurry = torch.nn.functional.avg_pool2d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    model = UMLIN(UMLINConfig(levels=2, blocks=2, growth=8, dense_layers=2)).train()
    objective = _objective()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = float((blurry - sharp).pow(2).mean())
    for _ in range(60):
        loss, _ = _loss(model, objective, blurry, sharp)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float((model.eval()(blurry) - sharp).pow(2).mean())
    assert after < 0.3 * before, (before, after)


def test_tiled_equals_untiled_when_the_receptive_field_fits_the_overlap() -> None:
    # tiny: per branch two levels of one block of two 2-conv sub-networks, radius < 56 px in all
    model = _randomised(UMLINConfig(**TINY), scale=0.05)
    info = ModelInfo.for_model("uml_in", model)
    restorer = Restorer(model, info, device=torch.device("cpu"), dtype=torch.float32)
    x = torch.rand(1, 3, 90, 997)
    whole = restorer(x, tile=None)
    tiled = restorer(x, tile=480, overlap=232)  # 58 px of each overlap side is discarded
    assert restorer.last_run.tile == 480 and (whole - x).abs().max() > 1e-2
    assert (tiled - whole).abs().max() < 1e-4  # float32 rounding of differently sized convs


def test_checkpoint_round_trip_keeps_config_and_outputs(tmp_path: Path) -> None:
    model = _randomised(UMLINConfig(**{**TINY, "coupling": "affine", "affine_clamp": 0.5}))
    path = tmp_path / "uml.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model("uml_in", model))
    meta = read_metadata(path)
    assert meta["arch"] == "uml_in" and json.loads(meta["config"]) == config_of(model)
    loaded = load_checkpoint(path)
    assert loaded.info.size_multiple == 4 and config_of(loaded.model) == config_of(model)
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), model(x))


def test_training_config_is_the_cpu_preset_and_trains_through_the_loop(tmp_path: Path) -> None:
    from _train_data import write_images

    from deblurcli.train.config import load_config
    from deblurcli.train.loop import fit

    path = Path(__file__).resolve().parents[1] / "configs" / "uml_in_cpu.toml"
    cfg = load_config(path)
    assert cfg.model.arch == "uml_in"
    assert UMLINConfig(**cfg.model.config) == preset("cpu")
    assert cfg.data.pack == ".pack/shake_mixed_pairs.safetensors"
    images = tmp_path / "sharp"
    write_images(images, 2, size=(48, 48))
    tiny = {f"model.config.{k}": v for k, v in TINY.items()}
    overrides = {
        "data.kind": '"synthetic"', "data.sharp": f'"{images}"', "data.crop": 32,
        "data.batch_size": 2, "data.kernel_size": 9, "data.kernel_min": 5, "data.frames_prob": 0,
        "run.steps": 2, "run.log_every": 1, "run.val_every": 0, "run.num_threads": 1,
        "data.varying_prob": 0, "data.object_prob": 0, "data.clip_prob": 0,
        "checkpoint.every": 2, "loss.ssim": 0, **tiny,
    }
    cfg = load_config(path, [f"{k}={v}" for k, v in overrides.items()])
    fit(cfg, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["kind"] == "train"]
    assert {"mse", "latent_guidance", "latent_l1"} <= set(train[-1]) and "ssim" not in train[-1]


@pytest.mark.parametrize("ref", ["uml-in@cpu-v1", "uml-in@cpu-v2"])
def test_shipped_weights_stay_invertible_and_change_the_photo(ref: str) -> None:
    """Each released UML-IN checkpoint is the cpu preset, both branches still invert exactly
    after training, and it is not the identity any more."""
    from deblurcli.engine import load_model, load_model_table

    if ref not in {e.ref for e in load_model_table().entries}:
        pytest.skip(f"{ref} is not released")
    model = load_model(ref, device="cpu", offline=True).model.eval()
    assert model.config == preset("cpu")
    torch.manual_seed(0)
    x, _, _ = pad_to_multiple(torch.rand(1, 3, 37, 29), model.size_multiple)
    with torch.no_grad():
        for branch, encode in ((model.sharp, model.encode_sharp), (model.blur, model.encode_blur)):
            assert (branch.inverse(encode(x)) - x).abs().max() < 1e-4
        assert (model(x) - x).abs().mean() > 1e-3
