"""ref-kernel: the blur kernel measured against a sharp reference (deblurcli.optim.reference)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from deblurcli.errors import UnsupportedImageError, UsageError
from deblurcli.io import hwc_to_tensor, tensor_to_hwc
from deblurcli.optim import ops
from deblurcli.optim.fast import kernel_distance
from deblurcli.optim.reference import (
    ReferenceKernelConfig,
    deblur_with_reference,
    estimate_kernel_from_reference,
    search_similarity,
    solve_kernel,
)

SMALL_GRID = {"scale_steps": 3, "scale_range": (0.9, 1.1), "max_angle": 4.0, "angle_step": 4.0}
"""A 3 × 3 search grid: the tests' transforms lie on it or near it."""


def _scene(size: int, seed: int = 0) -> np.ndarray:
    """A photo-like ``size × size × 3`` image: smooth texture, rectangles with sharp edges."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 3.0)
    base = (base - base.min()) / (base.max() - base.min()) * 0.5 + 0.25
    for _ in range(12):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(6, size // 3, 2)
        base[y : y + h, x : x + w] = rng.uniform(0.05, 0.95, 3)
    return base.astype(np.float32)


def _motion_kernel(size: int) -> np.ndarray:
    k = np.zeros((size, size), np.float64)
    k[size // 2, 1 : size - 1] = 1.0
    k[size // 2 - 1, size - 3 : size - 1] = 1.0
    return k / k.sum()


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    return cv2.filter2D(image, -1, flipped, borderType=cv2.BORDER_REFLECT)


def _pair(size: int = 112, shift: tuple[int, int] = (10, 14), gain: float = 1.3,
          noise: float = 0.003) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(blurry, sharp, reference, true kernel): the reference is a shifted, brighter crop."""
    scene = _scene(size + 40)
    kernel = _motion_kernel(9)
    sharp = scene[20 : 20 + size, 20 : 20 + size]
    rng = np.random.default_rng(1)
    blurry = _blur(scene, kernel)[20 : 20 + size, 20 : 20 + size]
    blurry = np.clip(blurry + rng.normal(0, noise, blurry.shape), 0, 1).astype(np.float32)
    dy, dx = shift
    view = scene[20 + dy : 20 + dy + size, 20 + dx : 20 + dx + size]
    reference = np.clip((view**2.2 * gain) ** (1 / 2.2), 0, 1).astype(np.float32)
    return blurry, sharp, reference, kernel


def test_solve_kernel_recovers_the_kernel_of_noise_free_data_under_a_mask() -> None:
    torch.manual_seed(0)
    x = torch.rand(60 + 8, 60 + 8, dtype=torch.float64)
    k = torch.zeros(9, 9, dtype=torch.float64)
    k[4, 1:8] = 1
    k[3, 6] = 1
    k /= k.sum()
    y = F.conv2d(x[None, None], k[None, None])[0, 0]  # valid correlation
    mask = torch.ones(60, 60, dtype=torch.bool)
    mask[:, :20] = False  # a third of the photo has no reference: it must not matter
    y[:, :20] = 0.5
    found = solve_kernel(y, x, mask, 9, ridge=1e-8, iterations=3000)
    assert torch.allclose(found, k, atol=2e-3)


def test_search_finds_the_shift_between_photo_and_reference() -> None:
    blurry, _, reference, _ = _pair(noise=0.0)
    gray = lambda a: a.mean(axis=2)  # noqa: E731
    ncc, matrix = search_similarity(gray(blurry), gray(reference),
                                    ReferenceKernelConfig(**SMALL_GRID))[0]
    # photo pixel (x, y) shows the scene at reference pixel (x - 14, y - 10)
    assert ncc > 0.9
    assert np.allclose(matrix[:, :2], np.eye(2), atol=1e-6)
    assert np.allclose(matrix[:, 2], [-14, -10], atol=1.5)


def test_kernel_from_a_shifted_brighter_reference_is_the_true_kernel() -> None:
    blurry, sharp, reference, kernel = _pair()
    cfg = ReferenceKernelConfig(kernel_size=15, **SMALL_GRID)
    estimate = estimate_kernel_from_reference(blurry, reference, cfg)
    assert estimate.fits, estimate.details
    assert estimate.kernel.shape == (15, 15) and abs(estimate.kernel.sum() - 1) < 1e-6
    assert kernel_distance(estimate.kernel, np.pad(kernel, 3)) < 0.25
    assert np.allclose(estimate.matrix[:, 2], [-14, -10], atol=1.0)
    out = deblur_with_reference(blurry, reference, cfg)
    assert out.image is not None and out.image.shape == blurry.shape
    error = lambda a: float(np.mean((a - sharp)[16:-16, 16:-16] ** 2))  # noqa: E731
    assert error(out.image) < 0.7 * error(blurry)  # closer to the sharp scene than the photo
    # the restoration is moved by the kernel's sub-pixel centre-of-mass offset, and only that
    still = deblur_with_reference(blurry, reference, replace(cfg, register=False))
    assert still.image is not None and still.estimate.details["registration"] == [0.0, 0.0]
    offset = ops.centroid_offset(torch.from_numpy(estimate.kernel))
    assert out.estimate.details["registration"] == pytest.approx(offset, abs=1e-3)
    assert max(abs(v) for v in offset) > 0.02
    moved = np.clip(tensor_to_hwc(ops.translate(hwc_to_tensor(still.image), *offset)), 0, 1)
    # (equal up to where the restoration was clipped before, not after, the move)
    gap = lambda a: float(np.abs(out.image - a)[4:-4, 4:-4].mean())  # noqa: E731
    assert gap(moved) < 1e-3 and gap(moved) < 0.1 * gap(still.image)


def test_flow_alignment_and_robust_passes_keep_the_kernel_of_an_affine_pair() -> None:
    blurry, _, reference, kernel = _pair()
    cfg = ReferenceKernelConfig(kernel_size=15, flow_sigma=8.0, rounds=3, robust_passes=1,
                                **SMALL_GRID)
    estimate = estimate_kernel_from_reference(blurry, reference, cfg)
    assert estimate.fits, estimate.details
    assert kernel_distance(estimate.kernel, np.pad(kernel, 3)) < 0.4  # 2 = disjoint


def test_an_unrelated_reference_does_not_fit_and_gives_no_image() -> None:
    blurry, _, _, _ = _pair()
    other = _scene(112, seed=5)
    cfg = ReferenceKernelConfig(kernel_size=15, **SMALL_GRID)
    out = deblur_with_reference(blurry, other, cfg)
    assert not out.estimate.fits and out.image is None
    assert out.estimate.details["explained"] < cfg.min_explained


def test_config_rejects_bad_settings_and_tiny_photos() -> None:
    for bad in ({"kernel_size": 64}, {"kernel_size": 1}, {"rounds": 0},
                {"scale_range": (1.1, 1.3)}, {"max_misfit": 0.0}, {"min_explained": 1.0}):
        with pytest.raises(UsageError):
            ReferenceKernelConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedImageError, match="the photo is 40×12 px.*16 px"):
        estimate_kernel_from_reference(np.zeros((12, 40, 3), np.float32),
                                       np.zeros((40, 40, 3), np.float32))
    with pytest.raises(UnsupportedImageError, match="the reference is 40×12 px"):
        estimate_kernel_from_reference(np.zeros((40, 40, 3), np.float32),
                                       np.zeros((12, 40, 3), np.float32))


def _write(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
    return path


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from deblurcli.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_default_method_measures_the_kernel_and_reports_the_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry, _, reference, _ = _pair()
    photo, ref = _write(tmp_path / "photo.png", blurry), _write(tmp_path / "ref.png", reference)
    out = tmp_path / "out.png"
    code, stdout, err = _run(["deblur-ref", str(photo), "--ref", str(ref), "-o", str(out),
                              "--param", "kernel_size=15", "--param", "fallback=none",
                              "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["method"] == "ref-kernel" and doc["params"]["kernel_size"] == 15
    details = doc["items"][0]["details"]
    assert details["kernel_fits"] and details["restored_by"] == "kernel"
    assert cv2.imread(str(out)).shape == blurry.shape


def test_cli_without_fallback_leaves_an_unexplained_photo_unchanged_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry, _, _, _ = _pair()
    photo = _write(tmp_path / "photo.png", blurry)
    ref = _write(tmp_path / "other.png", _scene(112, seed=5))
    out = tmp_path / "out.png"
    code, stdout, err = _run(["deblur-ref", str(photo), "--ref", str(ref), "-o", str(out),
                              "--param", "kernel_size=15", "--param", "fallback=none",
                              "--json"], capsys)
    assert code == 0, err
    assert "does not explain" in err and str(photo) in err
    assert "x the noise" in err and "None" not in err  # the measured fit, readable
    assert json.loads(stdout)["items"][0]["details"]["restored_by"] == "none"
    assert np.array_equal(cv2.imread(str(out)), cv2.imread(str(photo)))


def test_cli_says_why_when_the_reference_cannot_be_aligned_at_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry, _, _, _ = _pair()
    photo = _write(tmp_path / "photo.png", blurry)
    ref = _write(tmp_path / "tiny.png", _scene(112, seed=5)[:20, :20])
    code, stdout, err = _run(["deblur-ref", str(photo), "--ref", str(ref), "-o",
                              str(tmp_path / "out.png"), "--param", "kernel_size=15",
                              "--param", "fallback=none", "--json"], capsys)
    assert code == 0, err
    fit = json.loads(stdout)["items"][0]["details"]["kernel_fit"]
    assert fit["misfit"] is None
    assert "no kernel could be measured" in err and "None" not in err


def test_cli_a_photo_too_small_for_a_kernel_fails_alone_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry, _, reference, _ = _pair(size=48)
    photo, ref = _write(tmp_path / "photo.png", blurry), _write(tmp_path / "ref.png", reference)
    tiny = _write(tmp_path / "tiny.png", blurry[:12, :40])
    out = tmp_path / "out"
    code, _, err = _run(["deblur-ref", str(tiny), str(photo), "--ref", str(ref), "-o", str(out),
                         "--param", "kernel_size=15", "--param", "fallback=none"], capsys)
    assert code == 3, err
    assert f"{tiny} (reference {ref}): the photo is 40×12 px" in err
    assert sorted(p.name for p in out.iterdir()) == ["photo.png"]
    code, _, err = _run(["deblur-ref", str(photo), "--ref", str(tiny), "-o",
                         str(tmp_path / "o.png"), "--param", "fallback=none"], capsys)
    assert code == 3 and "the reference is 40×12 px" in err and str(tiny) in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--param", "kernel_size=64"], "odd"),
    (["--param", "fallback=maybe"], "fallback"),
    (["--param", "colour=1"], "unknown key"),
    (["--param", "flow=-1"], "flow"),
    (["--method", "ref", "--param", "fallback=none"], "--param is for ref-kernel"),
    (["--method", "vdip-sparse"], "deconvolve-blind"),
])
def test_cli_bad_method_options_exit_2_before_any_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    blurry, _, reference, _ = _pair(size=48)
    photo, ref = _write(tmp_path / "photo.png", blurry), _write(tmp_path / "ref.png", reference)
    out = tmp_path / "out.png"
    code, _, err = _run(["deblur-ref", str(photo), "--ref", str(ref), "-o", str(out), *extra],
                        capsys)
    assert code == 2 and message in err and not out.exists(), err


def test_bench_refuses_ref_kernel_for_want_of_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blurry, sharp, _, _ = _pair(size=48)
    (tmp_path / "b").mkdir(), (tmp_path / "s").mkdir()
    _write(tmp_path / "b" / "x.png", blurry), _write(tmp_path / "s" / "x.png", sharp)
    code, _, err = _run(["bench", "quality", "--blurred", str(tmp_path / "b"), "--sharp",
                         str(tmp_path / "s"), "--method", "ref-kernel"], capsys)
    assert code == 2 and "eval_ref.py" in err, err
