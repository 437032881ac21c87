"""Degradations: convolution orientation and borders, noise, JPEG, GoPro-style frame averaging."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from deblurcli.degrade import (
    Recipe,
    add_gaussian_noise,
    average_frames,
    convolve,
    imperfect_kernel,
    jpeg_degrade,
    read_frame_sequence,
    resolution_loss,
    synthesize,
    unsharp_mask,
)
from deblurcli.errors import UsageError

DATA = Path(__file__).resolve().parents[2] / "shared/data"


def _image(h: int = 12, w: int = 10, c: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((h, w, c), dtype=np.float32)


def test_centre_delta_is_identity_and_shape_kept() -> None:
    img = _image()
    k = np.zeros((5, 5))
    k[2, 2] = 1
    out = convolve(img, k)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, atol=1e-6)
    np.testing.assert_allclose(convolve(img[..., 0], k), img[..., 0], atol=1e-6)


def test_off_centre_delta_moves_image_right_and_down() -> None:
    img = _image()
    k = np.zeros((3, 3))
    k[1, 2] = 1  # one right of centre
    np.testing.assert_allclose(convolve(img, k)[:, 1:], img[:, :-1], atol=1e-6)
    k = np.zeros((3, 3))
    k[2, 1] = 1  # one below centre
    np.testing.assert_allclose(convolve(img, k)[1:], img[:-1], atol=1e-6)


@pytest.mark.parametrize("boundary", ["reflect", "replicate", "wrap", "zero"])
@pytest.mark.parametrize("kshape", [(4, 3), (13, 15), (21, 5)])  # even; DFT path; > image
def test_matches_direct_true_convolution(boundary: str, kshape: tuple[int, int]) -> None:
    img = _image(9, 11, 1)[..., 0].astype(np.float64)
    k = np.random.default_rng(1).random(kshape)
    ci, cj = kshape[0] // 2, kshape[1] // 2
    mode = {"reflect": "reflect", "replicate": "edge", "wrap": "wrap", "zero": "constant"}
    big = np.pad(img, 20, mode=mode[boundary])  # type: ignore[call-overload]
    expected = np.zeros_like(img)
    for i in range(kshape[0]):
        for j in range(kshape[1]):  # out[y, x] += k[i, j] * img[y - i + ci, x - j + cj]
            expected += k[i, j] * big[20 - i + ci : 29 - i + ci, 20 - j + cj : 31 - j + cj]
    out = convolve(img, k, boundary=boundary)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("boundary", "beyond"), [("reflect", 2.0), ("replicate", 3.0), ("wrap", 0.0), ("zero", 0.0)]
)
def test_boundary_modes(boundary: str, beyond: float) -> None:
    row = np.array([[0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    k = np.array([[1.0, 0.0, 0.0]])  # out[x] = row[x + 1]: the last pixel reads beyond the edge
    out = convolve(row, k, boundary=boundary)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, [[1.0, 2.0, 3.0, beyond]])


def test_large_kernel_and_many_channels() -> None:
    img = _image(20, 16, 6)
    k = np.random.default_rng(2).random((15, 15))
    k /= k.sum()
    out = convolve(img, k)
    for c in (0, 5):
        np.testing.assert_allclose(out[..., c], convolve(img[..., c], k), atol=1e-5)
    with pytest.raises(ValueError):
        convolve(img, k, boundary="mirror")  # type: ignore[arg-type]


def test_gaussian_noise_deterministic_and_clipped() -> None:
    img = np.full((64, 64, 1), 0.5, dtype=np.float32)
    a = add_gaussian_noise(img, 0.05, np.random.default_rng(3))
    b = add_gaussian_noise(img, 0.05, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and abs(float((a - img).std()) - 0.05) < 0.005
    assert add_gaussian_noise(img, 2.0, np.random.default_rng(0)).min() == 0.0
    np.testing.assert_array_equal(add_gaussian_noise(img, 0.0, np.random.default_rng(0)), img)


@pytest.mark.parametrize("channels", [0, 1, 3, 4])
def test_jpeg_degrade_layouts(channels: int) -> None:
    yy, xx = np.mgrid[0:32, 0:32]
    base = (0.5 + 0.4 * np.sin(xx / 3.0) * np.cos(yy / 5.0)).astype(np.float32)
    img = base if channels == 0 else np.repeat(base[..., None], channels, axis=2)
    hi, lo = jpeg_degrade(img, 95), jpeg_degrade(img, 5)
    assert hi.shape == img.shape and hi.dtype == np.float32
    assert np.abs(hi - img).mean() < np.abs(lo - img).mean()
    if channels == 4:
        np.testing.assert_array_equal(hi[..., 3], img[..., 3])
    with pytest.raises(ValueError):
        jpeg_degrade(img, 0)


def test_average_frames_domains() -> None:
    frames = [np.zeros((2, 2, 3), np.float32), np.ones((2, 2, 3), np.float32)]
    np.testing.assert_allclose(average_frames(frames, gamma=None), 0.5)
    np.testing.assert_allclose(average_frames(frames), 0.5 ** (1 / 2.2), rtol=1e-6)
    with pytest.raises(ValueError):
        average_frames([frames[0], np.zeros((3, 2, 3))])


def test_read_frame_sequence_natural_order(tmp_path: Path) -> None:
    for name in ("f10.png", "f2.png", "f1.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in read_frame_sequence(tmp_path)] == ["f1.jpg", "f2.png", "f10.png"]
    with pytest.raises(UsageError):
        read_frame_sequence(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError):
        read_frame_sequence(tmp_path / "empty")


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "gopro_dev").is_dir(), reason="shared data absent")
def test_average_reproduces_gopro_dev_pair() -> None:
    """``st_frame-S_n_avg-N`` = files S+1 .. S+N (1-based names); gt = file S+1+N//2."""
    start, n = 165, 8
    files = read_frame_sequence(DATA / "gopro_frames/GOPR0477_11_00")[start : start + n]

    def load(p: Path) -> np.ndarray:
        return cv2.imread(str(p))[200:456, 400:656].astype(np.float32) / 255

    blurred = load(DATA / f"gopro_dev/GOPR0477_11_00_st_frame-{start}_n_avg-{n}.png")
    sharp = load(DATA / f"gopro_dev/GOPR0477_11_00_st_frame-{start}_n_avg-{n}_gt.png")
    avg = average_frames([load(p) for p in files])
    psnr = 10 * np.log10(1 / np.mean((avg - blurred) ** 2))
    assert psnr > 45
    assert 10 * np.log10(1 / np.mean((load(files[n // 2]) - sharp) ** 2)) > 40


def _band_energy(image: np.ndarray, low: float, high: float) -> float:
    """Power of a grey image between ``low`` and ``high`` cycles per pixel (radial)."""
    spectrum = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    radius = np.hypot(fy, fx)
    return float(spectrum[(radius >= low) & (radius < high)].sum())


def test_resolution_loss_keeps_coarse_detail_and_removes_fine_detail() -> None:
    noise = np.random.default_rng(1).random((128, 128), dtype=np.float32)
    lost = resolution_loss(noise, 3.0)
    assert lost.shape == noise.shape and lost.dtype == np.float32
    # below a quarter of the new Nyquist frequency (0.5 / 3) most power survives ...
    assert _band_energy(lost, 0.0, 0.04) > 0.5 * _band_energy(noise, 0.0, 0.04)
    # ... and from the new Nyquist frequency up almost none does
    assert _band_energy(lost, 0.2, 0.5) < 0.05 * _band_energy(noise, 0.2, 0.5)
    with pytest.raises(ValueError, match="> 1"):
        resolution_loss(noise, 1.0)


def test_unsharp_mask_adds_fine_detail_and_zero_amount_is_identity() -> None:
    image = _image(64, 64, 1)[..., 0] * 0.2 + 0.4  # white noise, far from the clipping limits
    assert np.array_equal(unsharp_mask(image, 1.0, 0.0), image)
    sharpened = unsharp_mask(image, 1.0, 1.0)
    assert sharpened.shape == image.shape
    assert _band_energy(sharpened, 0.2, 0.5) > 2.0 * _band_energy(image, 0.2, 0.5)


def _centroid(k: np.ndarray) -> tuple[float, float]:
    rows, cols = np.arange(k.shape[0]), np.arange(k.shape[1])
    return float((k.sum(1) * rows).sum() / k.sum()), float((k.sum(0) * cols).sum() / k.sum())


def test_imperfect_kernel_is_a_nearby_kernel_on_the_same_centre() -> None:
    from deblurcli.kernels import motion_kernel
    from deblurcli.optim.fast import kernel_distance

    k = motion_kernel(31, rng=np.random.default_rng(4))
    np.testing.assert_allclose(imperfect_kernel(k, np.random.default_rng(0), 0.0), k / k.sum())
    distances = []
    for seed in range(6):
        guess = imperfect_kernel(k, np.random.default_rng(seed), 1.0)
        assert guess.shape == k.shape and guess.min() >= 0
        assert guess.sum() == pytest.approx(1.0)
        assert (guess[guess > 0] >= 0.05 * guess.max() - 1e-12).all()
        assert np.allclose(_centroid(guess), _centroid(k), atol=1.0)
        distances.append(kernel_distance(guess, k))
    assert min(distances) > 0.02  # always wrong somewhere, yet mostly the same blur
    assert np.median(distances) < 1.0


def test_deconvolve_recipe_hands_over_a_restoration_that_errs_with_the_kernel() -> None:
    photo = cv2.imread(str(DATA / "sharp_val/bsds500_val/101085.jpg"))
    if photo is None:
        pytest.skip("shared data not present")
    region = (photo[:200, :200, ::-1] / np.float32(255)).astype(np.float32)
    base = Recipe(kinds=("motion",), size_range=(21, 31), linear_light=False,
                  noise_range=(0.005, 0.005))

    def psnr(recipe: Recipe) -> tuple[float, dict[str, object]]:
        pair = synthesize(region, np.random.default_rng(7), recipe)
        assert pair.blurry.shape == pair.sharp.shape == (170, 170, 3)
        err = np.mean((pair.blurry.astype(np.float64) - pair.sharp) ** 2)
        return float(10 * np.log10(1 / err)), pair.details

    blurred, plain = psnr(base)
    exact, details = psnr(replace(base, deconvolve_prob=1.0, kernel_error_max=0.0))
    wrong, _ = psnr(replace(base, deconvolve_prob=1.0, kernel_error_max=1.5))
    assert "restored" not in plain and details["restored"] is True
    assert exact > blurred + 2 and wrong < exact
    with pytest.raises(ValueError, match="kernel_error_max"):
        Recipe(kernel_error_max=-1.0).check()
