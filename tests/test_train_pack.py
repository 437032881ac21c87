"""Pair packs, the realistic degradation pipeline, warm starts and their lineage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_data import tiny_config, train_until_killed, write_images
from safetensors.torch import load_file

from deblurcli.degrade import Recipe, synthesize, varying_shake_blur
from deblurcli.engine.checkpoint import sha256_file
from deblurcli.errors import UsageError
from deblurcli.train import checkpointing, data
from deblurcli.train.config import ConfigError
from deblurcli.train.loop import fit

REPO = Path(__file__).resolve().parent.parent
RICH = Recipe(
    size_range=(5, 21),
    varying_prob=0.5,
    object_prob=0.5,
    clip_prob=0.5,
    noise_range=(0.0, 0.02),
    shot_noise_max=0.001,
    jpeg_prob=0.5,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pack") / "sharp"
    write_images(folder, 5)
    return folder


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frames") / "seq"
    write_images(folder, 14, size=(60, 60), seed=3)
    return folder.parent


def _pack_config(images: Path, frames: Path, pack: Path, **values: object):
    return tiny_config(
        images,
        **{
            "data.kind": "pack",
            "data.pack": str(pack),
            "data.pack_count": 12,
            "data.pack_size": 40,
            "data.kernel_size": 9,
            "data.varying_prob": 0.5,
            "data.object_prob": 0.3,
            "data.clip_prob": 0.3,
            "data.shot_noise_max": 0.001,
            "data.noise_max": 0.01,
            "data.jpeg_prob": 0.3,
            "data.frames_root": str(frames),
            "data.frames_prob": 0.3,
            **values,
        },
    )


def test_pack_holds_exactly_the_on_the_fly_pairs(
    images: Path, frames: Path, tmp_path: Path
) -> None:
    pack = tmp_path / "pairs.safetensors"
    cfg = _pack_config(images, frames, pack)
    spec = data.pool_spec_of(cfg)
    meta = data.build_pair_pack(spec, 12, pack, workers=2)
    assert meta["count"] == "12" and json.loads(str(meta["recipe"]))["varying_prob"] == 0.5
    stored = load_file(str(pack))
    assert tuple(stored["blurry"].shape) == (12, 40, 40, 3) and stored["sharp"].dtype == torch.uint8
    for j in range(12):
        blurry, sharp, guide = data.pool_pair(spec, j)
        assert guide is None  # no restoration guides in this recipe
        assert np.array_equal(stored["blurry"][j].numpy(), np.round(blurry * 255).astype(np.uint8))
        assert np.array_equal(stored["sharp"][j].numpy(), np.round(sharp * 255).astype(np.uint8))
    # a single-process build stores the same pairs
    again = tmp_path / "again.safetensors"
    data.build_pair_pack(spec, 12, again, workers=1)
    other = load_file(str(again))
    assert all(torch.equal(other[k], stored[k]) for k in ("blurry", "sharp"))
    # the training dataset crops and flips the stored pairs
    sample = data.make_dataset(cfg.data, seed=0)[3]
    assert sample["blurry"].shape == (3, 32, 32) and sample["sharp"].shape == (3, 32, 32)
    # a config whose degradation differs from the pack's is refused, naming the key
    for key, value, named in (("data.noise_max", 0.02, "noise_range"),
                              ("data.frames_prob", 0.1, "frames_prob")):
        changed = _pack_config(images, frames, pack, **{key: value})
        with pytest.raises(UsageError, match=named):
            data.make_dataset(changed.data, seed=0)


def test_a_guided_pack_stores_each_restorations_guide_aligned_with_it(
    images: Path, tmp_path: Path
) -> None:
    pack = tmp_path / "guided.safetensors"
    guided = {"data.kind": "pack", "data.pack": str(pack), "data.pack_count": 4,
              "data.pack_size": 40, "data.deconvolve_prob": 1.0, "data.deconvolve_guide": True,
              "data.noise_max": 0.01, "model.config.guide_channels": 6,
              "val.deconvolve": True, "val.crop": 32, "run.steps": 2, "run.val_every": 2}
    cfg = tiny_config(images, "nafnet", **guided)
    spec = data.pool_spec_of(cfg)
    data.build_pair_pack(spec, 4, pack, workers=1)
    stored = load_file(str(pack))
    assert tuple(stored["guide"].shape) == (4, 40, 40, 6)
    for j in range(4):
        blurry, sharp, guide = data.pool_pair(spec, j)
        assert guide is not None and guide.shape == (40, 40, 6)
        assert np.array_equal(stored["guide"][j].numpy(), np.round(guide * 255).astype(np.uint8))
        # the guide's first half is the observed photo: blurrier than the restoration
        observed = guide[..., :3]
        assert np.abs(observed - sharp).mean() > 0 and not np.array_equal(observed, blurry)
    # the training crop cuts the guide at the same window as the image (no flips: compare)
    unflipped = replace(cfg.data, flips=False)
    sample = data.make_dataset(unflipped, seed=0)[1]
    assert sample["guide"].shape == (6, 32, 32)
    j = data.make_dataset(unflipped, seed=0)._item(1)
    full = stored["blurry"][j].permute(2, 0, 1).float() / 255
    found = [(y, x) for y in range(9) for x in range(9)
             if torch.equal(full[:, y : y + 32, x : x + 32], sample["blurry"])]
    assert len(found) == 1
    (y, x), whole = found[0], stored["guide"][j].permute(2, 0, 1).float() / 255
    assert torch.equal(whole[:, y : y + 32, x : x + 32], sample["guide"])
    # the training loop feeds the guide and validates on guided restorations
    result = fit(cfg, tmp_path / "run")
    assert result.step == 2
    # a guided model needs guided pairs, and guides need a guided model
    with pytest.raises(ConfigError, match="guide_channels"):
        tiny_config(images, "nafnet", **{**guided, "data.deconvolve_guide": False})
    with pytest.raises(ConfigError, match="deconvolve_guide"):
        tiny_config(images, "nafnet", **{**guided, "model.config.guide_channels": 0})
    with pytest.raises(ConfigError, match="guide_channels"):
        tiny_config(images, "nafnet", **{**guided, "data.deconvolve_prob": 0.5})


def test_pack_config_errors(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.pack"):
        tiny_config(images, **{"data.kind": "pack"})
    cfg = tiny_config(images, **{"data.kind": "pack", "data.pack": str(tmp_path / "none.st")})
    with pytest.raises(Exception, match="train pack"):
        data.make_dataset(cfg.data, seed=0)
    with pytest.raises(ValueError, match="size_range"):
        Recipe(size_range=(11, 9)).check()
    with pytest.raises(ConfigError, match="varying_prob"):
        tiny_config(images, **{"data.varying_prob": 1.5})


def test_synthesize_is_seeded_and_quantised() -> None:
    region = np.random.default_rng(0).random((60, 60, 3)).astype(np.float32)
    a = synthesize(region, np.random.default_rng(5), RICH)
    b = synthesize(region, np.random.default_rng(5), RICH)
    assert a.blurry.shape == a.sharp.shape == (40, 40, 3)
    assert np.array_equal(a.blurry, b.blurry) and np.array_equal(a.sharp, b.sharp)
    assert np.array_equal(np.round(a.blurry * 255) / 255, a.blurry)
    assert abs(float(a.kernel.sum()) - 1.0) < 1e-9


def test_srgb_blur_share_blurs_some_pairs_in_stored_values() -> None:
    # a black/white pattern: blurring in linear light brightens it, in sRGB keeps its mean
    region = (np.indices((60, 60)).sum(0) % 2).astype(np.float32)[..., None].repeat(3, 2)
    plain = replace(Recipe(kinds=("gaussian",), size_range=(9, 9), noise_range=(0.0, 0.0)),
                    linear_light=True)
    mixed = replace(plain, srgb_blur_prob=0.5)
    pairs = [synthesize(region, np.random.default_rng(seed), mixed, margin=0) for seed in range(12)]
    flags = [p.details["linear_light"] for p in pairs]
    assert True in flags and False in flags
    for pair, linear in zip(pairs, flags, strict=True):
        shift = float(pair.blurry.mean() - pair.sharp.mean())
        assert (shift > 0.1) if linear else (abs(shift) < 0.01)
    # without the share no extra random draw: the stream (and the pairs) are unchanged
    a = synthesize(region, np.random.default_rng(3), plain, margin=0)
    b = synthesize(region, np.random.default_rng(3), replace(plain, srgb_blur_prob=0.0), margin=0)
    assert np.array_equal(a.blurry, b.blurry) and a.details["linear_light"] is True


def _psf_at(image: np.ndarray, row: int, col: int, radius: int) -> np.ndarray:
    patch = image[row - radius : row + radius + 1, col - radius : col + radius + 1, 0]
    return patch / patch.sum()


def test_spatially_varying_blur_really_varies() -> None:
    """Point sources in two corners are smeared into different kernels; uniform blur is not."""
    size, radius = 129, 10
    image = np.zeros((size, size, 1), np.float32)
    points = [(15, 15), (size - 16, size - 16), (15, size - 16)]
    for r, c in points:
        image[r, c] = 1.0
    blurred, kernels = varying_shake_blur(image, 21, np.random.default_rng(2), rotation_share=0.8)
    assert len(kernels) == 9 and all(abs(k.sum() - 1) < 1e-9 for k in kernels)
    psfs = [_psf_at(blurred, r, c, radius) for r, c in points]
    assert np.abs(psfs[0] - psfs[1]).sum() > 0.3 and np.abs(psfs[0] - psfs[2]).sum() > 0.3
    # the same measurement on a uniform blur finds one kernel everywhere
    from deblurcli.degrade import convolve

    uniform = convolve(image, kernels[4], boundary="zero")
    same = [_psf_at(uniform, r, c, radius) for r, c in points]
    assert np.abs(same[0] - same[1]).sum() < 1e-5


def test_warm_start_begins_at_the_given_weights_and_records_lineage(
    images: Path, tmp_path: Path
) -> None:
    from deblurcli.train.export import export_run

    parent = fit(tiny_config(images, **{"run.steps": 4, "run.val_every": 0}), tmp_path / "a")
    options = {"run.steps": 3, "run.val_every": 0, "run.init": str(tmp_path / "a"),
               "optim.lr": 0.0}
    child = fit(tiny_config(images, **options), tmp_path / "b")
    a = load_file(str(parent.checkpoint / "model.safetensors"))  # type: ignore[operator]
    b = load_file(str(child.checkpoint / "model.safetensors"))  # type: ignore[operator]
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the weights are exactly the parent's
    init = json.loads((tmp_path / "b" / "run.json").read_text())["sessions"][0]["init"]
    assert init["parent_sha256"] == sha256_file(parent.checkpoint / "model.safetensors")  # type: ignore[operator]
    assert init["parent_steps"] == 4
    entry = export_run(tmp_path / "b", name="tiny", tag="child", weights_dir=tmp_path / "w")
    lineage = entry["training"]["lineage"]
    assert lineage["cumulative_steps"] == 7 and lineage["parent_sha256"] == init["parent_sha256"]
    # an exported file warm-starts a third run, and lineage accumulates
    exported = tmp_path / "w" / entry["file"]
    fit(tiny_config(images, **{**options, "run.init": str(exported)}), tmp_path / "c")
    init_c = json.loads((tmp_path / "c" / "run.json").read_text())["sessions"][0]["init"]
    assert init_c["parent_steps"] == 7 and init_c["parent_sha256"] == sha256_file(exported)


def test_a_resolution_loss_pair_keeps_its_target_and_reports_its_kernel() -> None:
    region = np.random.default_rng(0).random((72, 72, 3), dtype=np.float32)
    plain = replace(RICH, object_prob=0.0, clip_prob=0.0, linear_light=False)
    lens = synthesize(region, np.random.default_rng(5), replace(plain, resample_prob=1.0,
                                                              sharpen_prob=1.0))
    assert lens.details["kind"] == "resample" and "sharpen" in lens.details
    assert 1.5 <= float(lens.details["resample_factor"]) <= 3.5  # type: ignore[arg-type]
    assert lens.kernel.sum() == pytest.approx(1.0) and lens.kernel.shape[0] % 2 == 1
    # the target is the sharp crop either way: neither step touches it
    blur = synthesize(region, np.random.default_rng(5), plain)
    assert np.array_equal(lens.sharp, blur.sharp)
    assert not np.array_equal(lens.blurry, blur.blurry)
    for bad in ((1.0, 2.0), (3.0, 2.0), (2.0,)):
        with pytest.raises(ValueError, match="resample_range"):
            replace(plain, resample_range=bad).check()


def test_warm_start_from_an_exported_model_whose_config_has_lists(
    images: Path, tmp_path: Path
) -> None:
    """NAFNet's block counts are tuples in the dataclass and lists in the file's JSON metadata:
    a warm start with the same architecture must not need ``run.init_grow``."""
    from deblurcli.train.export import export_run

    options = {"run.steps": 2, "run.val_every": 0, "val.crop": 32}
    fit(tiny_config(images, "nafnet", **options), tmp_path / "a")
    entry = export_run(tmp_path / "a", name="tiny", tag="n", weights_dir=tmp_path / "w")
    exported = str(tmp_path / "w" / entry["file"])
    child = fit(tiny_config(images, "nafnet", **options, **{"run.init": exported}), tmp_path / "b")
    assert child.checkpoint is not None


def test_warm_start_from_a_file_written_before_a_config_key_existed(
    images: Path, tmp_path: Path
) -> None:
    """``nafnet@cpu-v4`` was exported before NAFNet had ``guide_channels``: its metadata lacks
    the key, which today's config holds at its default. Same model, so no ``run.init_grow``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from deblurcli.train.export import export_run

    options = {"run.steps": 2, "run.val_every": 0, "val.crop": 32}
    fit(tiny_config(images, "nafnet", **options), tmp_path / "a")
    entry = export_run(tmp_path / "a", name="tiny", tag="n", weights_dir=tmp_path / "w")
    with safe_open(str(tmp_path / "w" / entry["file"]), "pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle)
    config = json.loads(metadata["config"])
    assert config.pop("guide_channels") == 0
    metadata["config"] = json.dumps(config)
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=metadata)
    child = fit(tiny_config(images, "nafnet", **options, **{"run.init": str(old),
                                                            "optim.lr": 0.0}), tmp_path / "b")
    b = load_file(str(child.checkpoint / "model.safetensors"))  # type: ignore[operator]
    assert all(torch.equal(tensors[k], b[k]) for k in tensors)
    init = json.loads((tmp_path / "b" / "run.json").read_text())["sessions"][0]["init"]
    assert "grown_from" not in init
    # a key the architecture does not have is still refused without run.init_grow
    config["no_such_key"] = 1
    metadata["config"] = json.dumps(config)
    save_file(tensors, str(old), metadata=metadata)
    with pytest.raises(ConfigError, match="init_grow"):
        fit(tiny_config(images, "nafnet", **options, **{"run.init": str(old)}), tmp_path / "c")


def test_warm_start_refuses_another_architecture_config(images: Path, tmp_path: Path) -> None:
    fit(tiny_config(images, **{"run.steps": 2, "run.val_every": 0}), tmp_path / "a")
    cfg = tiny_config(images, **{"run.init": str(tmp_path / "a"), "model.config.width": 8})
    with pytest.raises(ConfigError, match="run.init"):
        fit(cfg, tmp_path / "b")


def test_resume_after_sigkill_is_bit_identical_with_a_pack(
    images: Path, frames: Path, tmp_path: Path
) -> None:
    pack = tmp_path / "pairs.safetensors"
    options = {"run.steps": 12, "run.val_every": 0, "checkpoint.every": 6,
               "data.kind": "pack", "data.pack": str(pack), "data.pack_size": 40,
               "data.varying_prob": 0.5, "data.noise_max": 0.01,
               "data.frames_root": str(frames), "data.frames_prob": 0.3}
    cfg = tiny_config(images, **options)
    data.build_pair_pack(data.pool_spec_of(cfg), 12, pack, workers=1)
    reference = fit(cfg, tmp_path / "whole")
    train_until_killed(images, tmp_path / "killed", options, kill_at=9)
    assert checkpointing.latest_checkpoint(tmp_path / "killed").name == "step_00000006"  # type: ignore[union-attr]
    resumed = fit(cfg, tmp_path / "killed", resume=True)
    for name in ("model", "ema"):
        a = load_file(str(reference.checkpoint / f"{name}.safetensors"))  # type: ignore[operator]
        b = load_file(str(resumed.checkpoint / f"{name}.safetensors"))  # type: ignore[operator]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_export_records_preset_measurements(images: Path, tmp_path: Path) -> None:
    from deblurcli.train.export import export_run

    write_images(tmp_path / "data" / "sharp_val", 2, size=(64, 64))
    fit(tiny_config(images, **{"run.steps": 2, "run.val_every": 0}), tmp_path / "run")
    entry = export_run(tmp_path / "run", name="tiny", tag="p", weights_dir=tmp_path / "w",
                       presets=["shake"], data_root=tmp_path / "data")
    shake = entry["metrics"]["presets"]["shake"]
    assert shake["images"] == 2 and shake["set"] == "shake@0"
    assert {"psnr_input", "psnr_output", "ssim_input", "ssim_output"} <= set(shake)
    assert json.loads((tmp_path / "w" / "manifest.json").read_text())["models"][0]["metrics"][
        "presets"]["shake"] == shake
