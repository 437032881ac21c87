"""Reference-based deblurring: matching, transfer, the network, its data and ``deblur-ref``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from deblurcli.archs import REGISTRY, config_of
from deblurcli.archs.ref_deblur import (
    PRESETS,
    RefDeblur,
    RefDeblurConfig,
    block_centres,
    dense_match,
    match,
    match_windowed,
    ncc_descriptors,
    preset,
    transfer,
)
from deblurcli.cli.app import main
from deblurcli.engine import ModelInfo, load_checkpoint, save_checkpoint
from deblurcli.engine.restorer import Restorer

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = REGISTRY["ref_deblur"].tiny_config


def _smooth(h: int, w: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Smooth random texture ``1 × C × h × w`` in [0, 1] (unique patches, blur changes it)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, channels, h // 2 + 1, w // 2 + 1, generator=g)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------ matching


@pytest.mark.parametrize("chunk", [1, 7, 300, 1 << 24])
def test_chunked_matching_equals_dense_matching(chunk: int) -> None:
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(53, 45, generator=g), torch.randn(71, 45, generator=g)
    index, conf = match(q, k, chunk_entries=chunk)
    dense_index, dense_conf = dense_match(q, k)
    assert torch.equal(index, dense_index)
    assert torch.allclose(conf, dense_conf, atol=1e-5)
    # small integers: every similarity is exact in float32, ties are frequent; the chunked
    # running arg-max keeps the first maximum exactly as the dense arg-max does
    qi = torch.randint(-2, 3, (60, 4), generator=g).float()
    ki = torch.randint(-2, 3, (90, 4), generator=g).float()
    index, conf = match(qi, ki, chunk_entries=chunk)
    dense_index, dense_conf = dense_match(qi, ki)
    assert torch.equal(index, dense_index) and torch.equal(conf, dense_conf)


def test_identical_patches_are_found_in_a_shifted_reference() -> None:
    image = _smooth(64, 80)
    reference = torch.roll(image, shifts=(8, -12), dims=(2, 3))  # 2 and -3 positions at 1/4
    model = RefDeblur(RefDeblurConfig(**TINY))
    found = model.match(image, reference)
    assert not found.windowed and found.index.shape == (1, 16 * 20)
    ry, rx = found.index.view(16, 20) // 20, found.index.view(16, 20) % 20
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(20), indexing="ij")
    inner = (slice(1, 13), slice(4, 19))  # away from the borders and the roll's seam
    assert torch.equal(ry[inner], yy[inner] + 2) and torch.equal(rx[inner], xx[inner] - 3)
    core = (slice(3, 11), slice(6, 15))  # whose gradients do not see a border or the seam
    assert found.confidence[0, 0][core].min() > 0.9999  # the same patch: correlation 1


def test_descriptor_ignores_exposure_and_white_balance() -> None:
    image = _smooth(32, 48, seed=3)
    brighter = (image * torch.tensor([1.3, 1.1, 0.9]).view(1, 3, 1, 1) + 0.05)
    a, b = ncc_descriptors(image), ncc_descriptors(brighter)
    assert a.shape == (1, 45, 8, 12)
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(a.norm(dim=1), torch.ones(1, 8, 12), atol=1e-4)


def test_windowed_search_covering_the_reference_equals_global_matching() -> None:
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(45, 11, 13, generator=g), torch.randn(45, 9, 14, generator=g)
    centres = torch.zeros(3, 4, 2)
    index, conf = match_windowed(q, k, centres, block=4, radius=20, chunk_entries=50)
    dense_index, dense_conf = dense_match(q.flatten(1).t(), k.flatten(1).t())
    assert torch.equal(index, dense_index) and torch.allclose(conf, dense_conf, atol=1e-5)


def test_guided_windows_follow_a_large_shift() -> None:
    image = _smooth(128, 192, seed=4)
    reference = torch.roll(image, shifts=(-40, 64), dims=(2, 3))  # -10, +16 positions
    q, k = ncc_descriptors(image)[0], ncc_descriptors(reference)[0]
    centres, pool = block_centres(q, k, block=8, limit=150_000)
    assert pool == 2
    # the content of block (1, 1) (centre 11.5, 11.5) sits 10 up and 16 right in the reference
    assert abs(float(centres[1, 1, 0]) - 1.5) <= 2 and abs(float(centres[1, 1, 1]) - 27.5) <= 2
    index, _ = match_windowed(q, k, centres, block=8, radius=4)
    dense_index, _ = dense_match(q.flatten(1).t(), k.flatten(1).t())
    inner = torch.zeros(32, 48, dtype=torch.bool)
    inner[12:30, 1:30] = True  # away from borders and the roll's seams
    agree = (index.view(32, 48) == dense_index.view(32, 48))[inner].float().mean()
    assert agree > 0.95


# ------------------------------------------------------------------------------ transfer


@pytest.mark.parametrize("scale", [4, 2, 1])
@pytest.mark.parametrize(("hq", "wq", "hr", "wr"), [(5, 7, 6, 4), (3, 9, 7, 5), (1, 1, 1, 2)])
def test_transfer_is_the_fold_of_the_gathered_patches(
    scale: int, hq: int, wq: int, hr: int, wr: int
) -> None:
    g = torch.Generator().manual_seed(scale)
    features = torch.rand(2, 3, scale * hr, scale * wr, generator=g)
    index = torch.randint(0, hr * wr, (2, hq * wq), generator=g)
    moved = transfer(features, index, (hq, wq), scale)
    columns = F.unfold(features, 3 * scale, stride=scale, padding=scale)
    gathered = columns.gather(2, index[:, None, :].expand(-1, columns.shape[1], -1))
    folded = F.fold(gathered, (scale * hq, scale * wq), 3 * scale, stride=scale,
                    padding=scale) / 9
    assert moved.shape == (2, 3, scale * hq, scale * wq)
    assert torch.allclose(moved, folded, atol=1e-6)


# ------------------------------------------------------------------------------- network


def test_paper_preset_has_the_specs_parameter_count() -> None:
    counts = {name: sum(p.numel() for p in RefDeblur(preset(name)).parameters())
              for name in PRESETS}
    assert counts["paper"] == 14_229_949  # models.md §2.2: 14.23 M (paper: 14.09 M)
    assert counts["cpu"] < 1_500_000
    ablation = RefDeblur(preset("paper", reference=False))
    assert ablation.inputs == 1 and RefDeblur(preset("paper")).inputs == 2
    tiny = RefDeblur(RefDeblurConfig(**TINY, reference=False, sffm=False))
    x = _smooth(20, 28)
    assert torch.equal(tiny(x), x) and tiny.inputs == 1  # runs on the blurry image alone


@pytest.mark.parametrize(("h", "w", "hr", "wr"), [(37, 53, 29, 41), (41, 29, 90, 17)])
def test_odd_sizes_run_through_the_restorer_and_start_as_the_identity(
    h: int, w: int, hr: int, wr: int
) -> None:
    model = RefDeblur(RefDeblurConfig(**TINY))
    info = ModelInfo.for_model("ref_deblur", model)
    assert info.inputs == 2 and info.size_multiple == 4
    restorer = Restorer(model, info, device=torch.device("cpu"), dtype=torch.float32)
    x, ref = _smooth(h, w), _smooth(hr, wr, seed=5)
    out = restorer(x, ref, tile=None)
    assert out.shape == x.shape and (out - x).abs().max() < 1e-6  # zero-initialised tail
    gray = restorer(x[:, :1], ref, tile=None)  # gray photo, colour reference
    assert gray.shape == (1, 1, h, w)
    colour = restorer(x, ref[:, :1], tile=None)  # colour photo, gray reference
    assert colour.shape == x.shape
    with pytest.raises(Exception, match="deblur-ref"):
        restorer(x)


def test_tiles_of_the_photo_each_match_against_the_whole_reference() -> None:
    torch.manual_seed(0)
    model = RefDeblur(RefDeblurConfig(**TINY)).eval()
    with torch.no_grad():
        model.tail.weight.normal_(0, 0.05)
    seen: list[tuple[int, ...]] = []
    model.ref_encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    restorer = Restorer(model, ModelInfo.for_model("ref_deblur", model),
                        device=torch.device("cpu"), dtype=torch.float32)
    x, ref = _smooth(96, 120), _smooth(50, 70, seed=9)
    tiled = restorer(x, ref, tile=64, overlap=32)
    assert restorer.last_run.tile == 64 and len(seen) > 1
    assert all(shape[-2:] == (52, 72) for shape in seen)  # the whole reference, padded to ×4
    whole = restorer(x, ref, tile=None)
    assert tiled.shape == whole.shape and (tiled - whole).abs().mean() < 0.01  # measured 1e-4


def test_config_and_inputs_survive_a_checkpoint(tmp_path: Path) -> None:
    for reference in (True, False):
        model = RefDeblur(RefDeblurConfig(**TINY, reference=reference))
        path = tmp_path / f"ref-{reference}.safetensors"
        save_checkpoint(path, model, ModelInfo.for_model("ref_deblur", model))
        loaded = load_checkpoint(path)
        assert config_of(loaded.model) == config_of(model)
        assert loaded.info.inputs == (2 if reference else 1)


def _triplets() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sharp = torch.cat([_smooth(24, 24, seed=s) for s in (10, 11)])
    blurry = F.avg_pool2d(F.pad(sharp, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    reference = torch.roll(sharp, shifts=(4, 8), dims=(2, 3))
    return blurry, sharp, reference


def test_a_tiny_model_overfits_two_triplets() -> None:
    torch.manual_seed(0)
    blurry, sharp, reference = _triplets()
    model = RefDeblur(RefDeblurConfig(width=8, blocks=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = (blurry - sharp).abs().mean().item()
    for _ in range(100):
        loss = (model(blurry, reference) - sharp).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.35 * start  # measured: 0.19 after 100 steps


def test_training_loop_runs_on_synthetic_and_frame_triplets(tmp_path: Path) -> None:
    from _train_data import tiny_config, write_images

    from deblurcli.train.data import make_dataset
    from deblurcli.train.export import export_run
    from deblurcli.train.loop import fit

    images = tmp_path / "sharp"
    write_images(images, 3, size=(80, 96))
    frames = tmp_path / "frames" / "seq"
    write_images(frames, 16, size=(48, 56))
    cfg = tiny_config(
        images, **{"model.arch": "ref_deblur", "model.config": {}, "run.steps": 3,
                   "run.val_every": 3, "checkpoint.every": 3, "data.reference": True,
                   "data.frames_root": str(frames.parent), "data.frames_prob": 0.5,
                   "data.frames": [3, 5], "data.reference_distance": [2, 4],
                   **{f"model.config.{k}": v for k, v in TINY.items()}})
    dataset = make_dataset(cfg.data, 0)
    samples = [dataset[i] for i in range(6)]
    assert all(s["reference"].shape == (3, 32, 32) for s in samples)
    assert not torch.equal(samples[0]["reference"], samples[0]["sharp"])
    import dataclasses

    from deblurcli.train.data import FrameAverages

    held = FrameAverages(dataclasses.replace(cfg.data, root=str(frames), frames_held_back=4), 0)
    assert [len(s) for s in held.sequences] == [12]  # the last 4 frames stay for evaluation
    result = fit(cfg, tmp_path / "run")
    assert result.step == 3 and "psnr" in result.val and "psnr_input" in result.val
    entry = export_run(tmp_path / "run", name="ref", tag="test", weights_dir=tmp_path / "w")
    assert entry["metrics"]["val"]["images"] == 2 and entry["training"]["data"]["reference"]
    with pytest.raises(Exception, match="data.reference"):
        fit(tiny_config(images, **{"model.arch": "ref_deblur", "model.config": {}, **{
            f"model.config.{k}": v for k, v in TINY.items()}}), tmp_path / "run2")


# ----------------------------------------------------------------------------------- CLI


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def _png(path: Path, image: torch.Tensor) -> Path:
    array = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), array[..., ::-1] if array.shape[2] == 3 else array[..., 0])
    return path


@pytest.fixture
def ref_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = RefDeblur(RefDeblurConfig(**TINY))
    with torch.no_grad():
        model.tail.weight.normal_(0, 0.01)  # not the identity, so outputs differ from inputs
    path = tmp_path / "ref-tiny.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model("ref_deblur", model))
    return path


def test_deblur_ref_single_file_gray_and_colour(
    tmp_path: Path, ref_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry = _png(tmp_path / "blurry.png", _smooth(30, 42))
    sharp = _png(tmp_path / "sharp.png", _smooth(36, 36, seed=7))
    gray = _png(tmp_path / "gray.png", _smooth(30, 42)[:, :1])
    out = tmp_path / "out.png"
    code, stdout, err = _run(["deblur-ref", str(blurry), "--ref", str(sharp), "-o", str(out),
                              "--model", str(ref_checkpoint), "--json"], capsys)
    assert code == 0, err
    assert cv2.imread(str(out)).shape == (30, 42, 3)
    doc = json.loads(stdout)
    assert doc["items"][0]["details"]["reference"] == str(sharp)
    code, _, err = _run(["deblur-ref", str(gray), "--ref", str(sharp), "-o",
                         str(tmp_path / "gray_out.png"), "--model", str(ref_checkpoint)], capsys)
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "gray_out.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    # never overwrites: the same command again is a usage error naming the file
    code, _, err = _run(["deblur-ref", str(blurry), "--ref", str(sharp), "-o", str(out),
                         "--model", str(ref_checkpoint)], capsys)
    assert code == 2 and str(out) in err


def test_deblur_ref_missing_or_corrupt_reference_exits_2_naming_it(
    tmp_path: Path, ref_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry = _png(tmp_path / "blurry.png", _smooth(24, 24))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    for ref in (tmp_path / "absent.png", corrupt, tmp_path / "empty_dir"):
        if ref.name == "empty_dir":
            ref.mkdir()
        code, _, err = _run(["deblur-ref", str(blurry), "--ref", str(ref), "-o",
                             str(tmp_path / "o.png"), "--model", str(ref_checkpoint)], capsys)
        assert code == 2 and str(ref) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.png").exists()
    code, _, err = _run(["deblur-ref", str(blurry), "-o", str(tmp_path / "o.png")], capsys)
    assert code == 2 and "--ref" in err


def test_deblur_ref_batch_paired_by_name_goes_on_after_a_bad_reference(
    tmp_path: Path, ref_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shots, refs = tmp_path / "shots", tmp_path / "refs"
    shots.mkdir(), refs.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        _png(shots / f"{name}.png", _smooth(24, 28, seed=i))
    _png(refs / "a.jpg", _smooth(28, 24, seed=20))
    (refs / "b.png").write_bytes(b"not an image at all")
    _png(refs / "c.png", _smooth(20, 20, seed=21))
    out = tmp_path / "out"
    code, stdout, err = _run(["deblur-ref", str(shots), "--ref", str(refs), "-o", str(out),
                              "--model", str(ref_checkpoint), "--json"], capsys)
    assert code == 3, err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    failed = [i for i in json.loads(stdout)["items"] if i["status"] == "failed"]
    assert len(failed) == 1 and str(refs / "b.png") in failed[0]["error"]
    assert str(refs / "b.png") in err
    # one reference for the whole folder
    code, _, err = _run(["deblur-ref", str(shots), "--ref", str(refs / "a.jpg"), "-o",
                         str(tmp_path / "out2"), "--model", str(ref_checkpoint)], capsys)
    assert code == 0 and len(list((tmp_path / "out2").iterdir())) == 3, err
    # a photo without a reference of its name: usage error before any compute
    (refs / "c.png").unlink()
    code, _, err = _run(["deblur-ref", str(shots), "--ref", str(refs), "-o",
                         str(tmp_path / "out3"), "--model", str(ref_checkpoint)], capsys)
    assert code == 2 and "c.png" in err and not (tmp_path / "out3").exists()


def test_deblur_ref_method_and_model_checks(
    tmp_path: Path, tiny_checkpoint: Path, ref_checkpoint: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deblurcli import methods
    from deblurcli.engine import load_model_table

    blurry = _png(tmp_path / "blurry.png", _smooth(24, 24))
    sharp = _png(tmp_path / "sharp.png", _smooth(24, 24, seed=1))
    args = ["deblur-ref", str(blurry), "--ref", str(sharp), "-o", str(tmp_path / "o.png")]
    released = {e.ref for e in load_model_table().entries}
    shipped = tmp_path / "shipped.png"
    code, _, err = _run([*args[:-1], str(shipped), "--offline"], capsys)
    if methods.TABLE["ref"].checkpoint not in released:  # not released yet: exit 4, says how
        assert code == 4 and "train export" in err and "ref@cpu-v1" in err, err
    else:  # the shipped weights run offline and keep the photo's size
        assert code == 0, err
        assert cv2.imread(str(shipped)).shape == (24, 24, 3)
    code, _, err = _run([*args, "--method", "resunet"], capsys)
    assert code == 2 and "deblurcli deblur" in err
    code, _, err = _run([*args, "--model", str(tiny_checkpoint)], capsys)  # a 1-input model
    assert code == 2 and "takes no reference" in err
    out = tmp_path / "plain.png"  # and plain deblur refuses a reference model, writing nothing
    code, _, err = _run(["deblur", str(blurry), "--model", str(ref_checkpoint), "-o", str(out)],
                        capsys)
    assert code == 2 and "deblur-ref" in err and not out.exists()


def test_vgg_descriptor_weights_come_from_a_user_file_and_travel_in_the_checkpoint(
    tmp_path: Path,
) -> None:
    from _train_data import tiny_config, write_images
    from safetensors.torch import load_file, save_file

    from deblurcli.archs.ref_deblur import vgg19_relu3_1
    from deblurcli.train.config import ConfigError
    from deblurcli.train.loop import fit

    vgg = vgg19_relu3_1()
    weights = {f"layers.{k}": v.clone() for k, v in vgg.state_dict().items()}
    weights["layers.12.weight"] = torch.zeros(1)  # beyond relu3_1 (a perceptual-loss file): ignored
    path = tmp_path / "vgg19.safetensors"
    save_file(weights, str(path))
    images = tmp_path / "sharp"
    write_images(images, 2, size=(64, 64))
    values = {"model.arch": "ref_deblur", "model.config": {}, "data.reference": True,
              "run.steps": 1, "run.val_every": 0, "checkpoint.every": 1,
              **{f"model.config.{k}": v for k, v in TINY.items()},
              "model.config.descriptor": "vgg19"}
    with pytest.raises(ConfigError, match="descriptor_weights"):
        tiny_config(images, **values)
    result = fit(tiny_config(images, **values, **{"model.descriptor_weights": str(path)}),
                 tmp_path / "run")
    assert result.model is not None and result.model.descriptor_loaded  # type: ignore[union-attr]
    assert result.checkpoint is not None
    saved = load_file(str(result.checkpoint / "model.safetensors"))
    assert torch.equal(saved["vgg.10.weight"], vgg[10].weight)  # conv3_1, frozen and stored
    model = RefDeblur(RefDeblurConfig(**TINY, descriptor="vgg19"))
    with pytest.raises(ValueError, match="lack"):
        model.load_descriptor({"features.0.weight": vgg[0].weight})
    found = model.match(_smooth(32, 40), _smooth(36, 28, seed=2))
    assert found.index.shape == (1, 80) and found.confidence.abs().max() <= 1 + 1e-5
