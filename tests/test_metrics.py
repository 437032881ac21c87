"""Metrics against hand computations; the shift-tolerant Levin protocol; kernel error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deblurcli.metrics import (
    SSIM,
    compare_upto_shift,
    error_ratio,
    image_metrics,
    kernel_error,
    mse,
    psnr,
    rgb_to_y,
    ssim,
)


def _ssim_by_hand(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Wang et al.'s formula, one window position at a time, float64, no padding."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (g * pa).sum(), (g * pb).sum()
            va, vb = (g * (pa - ma) ** 2).sum(), (g * (pb - mb) ** 2).sum()
            cov = (g * (pa - ma) * (pb - mb)).sum()
            values.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(values))


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    return a, np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)


def test_psnr_mse_by_hand() -> None:
    x = torch.zeros(4, 4, dtype=torch.float64)
    y = x.clone()
    y[1, 2] = 0.5
    assert mse(x, y).item() == pytest.approx(0.25 / 16)
    assert psnr(x, y).item() == pytest.approx(10 * math.log10(16 / 0.25))
    assert psnr(x * 255, y * 255, data_range=255.0).item() == pytest.approx(psnr(x, y).item())
    assert math.isinf(psnr(y, y).item())
    assert mse(x, y, crop_border=1).shape == (1,)


def test_crop_border_ignores_edges_and_batches() -> None:
    x = torch.rand(2, 3, 8, 8)
    y = x.clone()
    y[..., 0, :] = 0
    assert torch.all(mse(x, y, crop_border=1) == 0)
    assert mse(x, y).shape == (2,) and torch.all(mse(x, y) > 0)


@pytest.mark.parametrize("size", [11, 13])
def test_ssim_matches_hand_formula(size: int) -> None:
    a, b = _pair((size, size))
    got = ssim(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert got == pytest.approx(_ssim_by_hand(a, b), abs=1e-10)
    got255 = ssim(torch.from_numpy(a * 255), torch.from_numpy(b * 255), data_range=255.0).item()
    assert got255 == pytest.approx(got, abs=1e-10)


def test_ssim_constant_patches_is_luminance_term() -> None:
    x, y = torch.full((1, 1, 11, 11), 0.2), torch.full((1, 1, 11, 11), 0.4)
    assert ssim(x, y).item() == pytest.approx((0.16 + 1e-4) / (0.2 + 1e-4), rel=1e-5)


def test_ssim_identity_channel_mean_and_module() -> None:
    a, b = _pair((3, 14, 12), seed=1)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    assert ssim(x, x).item() == pytest.approx(1.0)
    per_channel = [_ssim_by_hand(a[c], b[c]) for c in range(3)]
    assert ssim(x, y).item() == pytest.approx(np.mean(per_channel), abs=1e-10)
    assert SSIM()(x[None], y[None]).item() == pytest.approx(ssim(x, y).item())
    with pytest.raises(ValueError):
        ssim(x[:, :10], y[:, :10])


def test_ssim_is_differentiable() -> None:
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ssim(t, y), (x,), fast_mode=True)


def test_ssim_matlab_downsampling() -> None:
    a, b = _pair((384, 400), seed=2)  # f = round(384 / 256) = 2: means of 2 × 2 blocks
    x, y = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    xd = x.reshape(192, 2, 200, 2).mean(dim=(1, 3))
    yd = y.reshape(192, 2, 200, 2).mean(dim=(1, 3))
    assert ssim(x, y, downsample=True).item() == pytest.approx(ssim(xd, yd).item(), abs=1e-6)


def test_rgb_to_y_coefficients() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    white = torch.ones(1, 3, 1, 1)
    assert rgb_to_y(red, mode="full").item() == pytest.approx(0.299)
    assert rgb_to_y(red, mode="studio").item() == pytest.approx((16 + 65.481) / 255)
    assert rgb_to_y(white, mode="full").item() == pytest.approx(1.0)
    assert rgb_to_y(white, mode="studio").item() == pytest.approx(235 / 255, abs=1e-5)
    assert rgb_to_y(torch.zeros(3, 4, 5), mode="full").shape == (1, 1, 4, 5)
    with pytest.raises(ValueError):
        rgb_to_y(torch.zeros(1, 2, 4, 4), mode="full")


def test_y_channel_metrics_use_luma() -> None:
    x, y = torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12)
    yx, yy = rgb_to_y(x, mode="studio"), rgb_to_y(y, mode="studio")
    assert mse(x, y, y_channel="studio").item() == pytest.approx(mse(yx, yy).item())
    assert psnr(x * 255, y * 255, data_range=255.0, y_channel="studio").item() == pytest.approx(
        psnr(yx, yy).item(), rel=1e-5
    )


def _smooth(h: int, w: int, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy - dy, xx - dx
    return 0.5 + 0.2 * np.sin(0.3 * yy + 0.1 * xx) + 0.2 * np.cos(0.17 * xx - 0.05 * yy)


def test_compare_upto_shift_integer_shift() -> None:
    sharp = np.random.default_rng(0).random((48, 50))
    est = np.roll(sharp, (2, -3), axis=(0, 1))  # est(p) = sharp(p - (2, -3))
    score = compare_upto_shift(est, sharp)
    assert score.shift == (2.0, -3.0)
    assert math.isinf(score.psnr) and score.ssim == pytest.approx(1.0)
    assert score.aligned.shape == (18, 20) and score.ssd == 0


def test_compare_upto_shift_half_pixel_and_colour() -> None:
    score = compare_upto_shift(_smooth(48, 48, 0.5, -1.25), _smooth(48, 48))
    assert score.shift == (0.5, -1.25)
    assert score.psnr > 45
    colour = np.stack([_smooth(48, 48, 0.0, 1.5)] * 3, axis=2)
    assert compare_upto_shift(colour, np.stack([_smooth(48, 48)] * 3, 2)).shift == (0.0, 1.5)


def test_compare_upto_shift_scores_aligned_crop() -> None:
    sharp, est = _pair((45, 45), seed=3)
    score = compare_upto_shift(est, sharp, max_shift=0)
    crop = (slice(15, 30), slice(15, 30))
    assert score.shift == (0.0, 0.0)
    assert score.mse == pytest.approx(np.mean((est[crop] - sharp[crop]) ** 2))
    assert score.ssim == pytest.approx(_ssim_by_hand(est[crop], sharp[crop]), abs=1e-10)
    with pytest.raises(ValueError):
        compare_upto_shift(est, sharp, max_shift=16)


def test_error_ratio() -> None:
    sharp = _smooth(42, 42)
    rng = np.random.default_rng(4)
    blind = sharp + 0.02 * rng.standard_normal(sharp.shape)
    known = sharp + 0.01 * rng.standard_normal(sharp.shape)
    a, b = compare_upto_shift(blind, sharp), compare_upto_shift(known, sharp)
    assert error_ratio(blind, known, sharp) == pytest.approx(a.ssd / b.ssd)
    assert error_ratio(a, b) == pytest.approx(a.ssd / b.ssd)
    assert 2.5 < error_ratio(a, b) < 6
    assert error_ratio(known, known, sharp) == 1.0
    with pytest.raises(ValueError):
        error_ratio(blind, b)


def test_kernel_error_aligned_and_normalised() -> None:
    k = np.random.default_rng(5).random((7, 7))
    shifted = np.zeros((11, 11))
    shifted[1:8, 3:10] = 3 * k  # other size, other position, other scale
    assert kernel_error(shifted, k) == pytest.approx(0.0, abs=1e-12)
    delta, line = np.zeros((3, 3)), np.zeros((3, 3))
    delta[1, 1] = 1
    line[1, 1:] = 1
    assert kernel_error(delta, line) == pytest.approx(0.5)  # (1 - 1/2)² + (1/2)²


def test_image_metrics_matches_tensor_functions() -> None:
    a, b = _pair((16, 18, 3), seed=6)
    got = image_metrics(a, b, y_channel="full")
    x = torch.from_numpy(a.transpose(2, 0, 1).copy())
    y = torch.from_numpy(b.transpose(2, 0, 1).copy())
    assert got["psnr"] == pytest.approx(psnr(x, y, y_channel="full").item())
    assert got["ssim"] == pytest.approx(ssim(x, y, y_channel="full").item())
    assert got["mse"] == pytest.approx(mse(x, y, y_channel="full").item())
    tolerant = image_metrics(_smooth(42, 42, 1.0, 0.0), _smooth(42, 42), shift_tolerant=True)
    assert tolerant["shift_y"] == 1.0 and tolerant["psnr"] > 40
