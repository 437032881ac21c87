"""Full-reference image metrics: MSE, PSNR, SSIM, and the shift-tolerant Levin/Lai protocol.

The tensor metrics (:func:`mse`, :func:`psnr`, :func:`ssim`) work on any device, accept
``N × C × H × W`` (also ``C × H × W`` and ``H × W``) float tensors and return one value per image.
They are differentiable, so a training loss can use ``1 - ssim(x, y)`` directly (or the
:class:`SSIM` module).

SSIM follows Wang et al. (2004) and their reference ``ssim.m``: an 11 × 11 Gaussian window with
σ = 1.5, K = (0.01, 0.03), local statistics with **'valid'** filtering (no padding, so the map is
``(H - 10) × (W - 10)``), the map's mean per channel, then the mean over channels.

The numpy side reproduces the blind-deconvolution evaluation of Levin et al. (2009), as extended by
Ren et al. for SelfDeblur: :func:`compare_upto_shift`, :func:`error_ratio`, plus
:func:`kernel_error` and the :func:`image_metrics` convenience used by ``bench``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from deblurcli.io import hwc_to_tensor

YMode = Literal["full", "studio"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)

# BT.601 luma weights; "studio" is MATLAB rgb2ycbcr on [0, 1] input: Y in [16, 235] / 255.
_Y_FULL = (0.299, 0.587, 0.114)
_Y_STUDIO = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_STUDIO_OFFSET = 16.0 / 255.0


def _as_nchw(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    elif x.ndim != 4:
        raise ValueError(f"expected N×C×H×W, C×H×W or H×W, got shape {tuple(x.shape)}")
    return x if x.is_floating_point() else x.float()


def rgb_to_y(x: Tensor, *, mode: YMode) -> Tensor:
    """BT.601 luma of an RGB image on the [0, 1] scale.

    ``mode="full"``: ``Y = 0.299 R + 0.587 G + 0.114 B`` (OpenCV, full range). ``mode="studio"``:
    MATLAB ``rgb2ycbcr``, ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` (range
    [16, 235] / 255), the Lai et al. protocol. A single-channel input is returned unchanged.

    Shape:
        - x: ``N × 3 × H × W`` (or ``3 × H × W`` / ``N × 1 × H × W``)
        - returns: ``N × 1 × H × W``
    """
    x = _as_nchw(x)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y needs 1 or 3 channels, got {x.shape[1]}")
    if mode == "full":
        weights, offset = _Y_FULL, 0.0
    elif mode == "studio":
        weights, offset = _Y_STUDIO, _Y_STUDIO_OFFSET
    else:
        raise ValueError(f"mode must be 'full' or 'studio', got {mode!r}")
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True) + offset


def _prepare(
    x: Tensor, y: Tensor, crop_border: int, y_channel: YMode | None, data_range: float
) -> tuple[Tensor, Tensor]:
    x, y = _as_nchw(x), _as_nchw(y)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    if y_channel is not None:
        x = rgb_to_y(x / data_range, mode=y_channel) * data_range
        y = rgb_to_y(y / data_range, mode=y_channel) * data_range
    if crop_border < 0:
        raise ValueError("crop_border must be >= 0")
    if crop_border:
        c = crop_border
        if x.shape[-2] <= 2 * c or x.shape[-1] <= 2 * c:
            raise ValueError(f"crop_border={c} leaves nothing of a {tuple(x.shape[-2:])} image")
        x, y = x[..., c:-c, c:-c], y[..., c:-c, c:-c]
    return x, y


def mse(x: Tensor, y: Tensor, *, crop_border: int = 0, y_channel: YMode | None = None) -> Tensor:
    """Mean squared error per image.

    Args:
        x: Image batch.
        y: Reference batch, same shape.
        crop_border: Pixels removed from every side before measuring.
        y_channel: Compare the BT.601 luma only (``"full"`` or ``"studio"``, see
            :func:`rgb_to_y`); inputs must then be on the [0, 1] scale.

    Shape:
        - x, y: ``N × C × H × W`` (or ``C × H × W`` / ``H × W``, treated as N = 1)
        - returns: ``(N,)``
    """
    x, y = _prepare(x, y, crop_border, y_channel, 1.0)
    return (x - y).pow(2).mean(dim=(1, 2, 3))


def psnr(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: YMode | None = None,
) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range² / MSE)`` in dB per image (inf if equal).

    Args:
        x: Image batch.
        y: Reference batch, same shape.
        data_range: Peak value: 1.0 for [0, 1] images, 255.0 for 8-bit scale.
        crop_border: Pixels removed from every side before measuring.
        y_channel: Compare luma only, see :func:`mse`.

    Shape:
        - x, y: ``N × C × H × W`` (or ``C × H × W`` / ``H × W``)
        - returns: ``(N,)``
    """
    x, y = _prepare(x, y, crop_border, y_channel, data_range)
    err = (x - y).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / err)


def gaussian_window(
    size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalised 1-D Gaussian window (MATLAB ``fspecial('gaussian')`` is its outer product).

    Shape:
        - returns: ``(size,)``
    """
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _pad_symmetric(x: Tensor, before: int, after: int) -> Tensor:
    """Pad H and W with mirrored copies that repeat the edge pixel (MATLAB 'symmetric')."""
    if before == after == 0:
        return x
    parts_h = [x[..., :before, :].flip(-2), x, x[..., x.shape[-2] - after :, :].flip(-2)]
    x = torch.cat(parts_h, dim=-2)
    parts_w = [x[..., :before].flip(-1), x, x[..., x.shape[-1] - after :].flip(-1)]
    return torch.cat(parts_w, dim=-1)


def _matlab_downsample(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``ssim.m``'s automatic step: f = max(1, round(min(H, W) / 256)); f × f box filter with
    symmetric borders ('same', MATLAB's even-size centre), then every f-th pixel."""
    f = max(1, round(min(x.shape[-2:]) / 256))
    if f == 1:
        return x, y
    before = (f + 1) // 2 - 1
    out = []
    for img in (x, y):
        padded = _pad_symmetric(img, before, f - 1 - before)
        out.append(F.avg_pool2d(padded, f, stride=1)[..., ::f, ::f])
    return out[0], out[1]


def ssim(
    x: Tensor,
    y: Tensor,
    *,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: YMode | None = None,
    downsample: bool = False,
) -> Tensor:
    """Structural similarity (Wang et al. 2004) per image, differentiable.

    11 × 11 Gaussian window (σ = 1.5), ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²`` with
    ``L = data_range``; local means, variances and covariance use **'valid'** filtering (no
    padding), as Wang's ``ssim.m``; the SSIM map is averaged per channel and then over channels.

    Args:
        x: Image batch.
        y: Reference batch, same shape; both at least 11 × 11 after cropping.
        data_range: Dynamic range L of the images (1.0 or 255.0).
        crop_border: Pixels removed from every side first.
        y_channel: Compare luma only, see :func:`mse`.
        downsample: Apply ``ssim.m``'s automatic downsampling (factor
            ``round(min(H, W) / 256)``, box filter) first; needed to match MATLAB numbers on
            images larger than about 384 px. Off by default.

    Shape:
        - x, y: ``N × C × H × W`` (or ``C × H × W`` / ``H × W``)
        - returns: ``(N,)``
    """
    x, y = _prepare(x, y, crop_border, y_channel, data_range)
    if downsample:
        x, y = _matlab_downsample(x, y)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW}")
    channels = x.shape[1]
    g = gaussian_window(dtype=x.dtype).to(x.device)
    win = (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, win, groups=channels)

    c1 = (SSIM_K[0] * data_range) ** 2
    c2 = (SSIM_K[1] * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.pow(2)
    var_y = blur(y * y) - mu_y.pow(2)
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=(2, 3)).mean(dim=1)


class SSIM(nn.Module):
    """Module form of :func:`ssim` (per-image values; wrap as ``1 - SSIM()(x, y).mean()``)."""

    def __init__(self, *, data_range: float = 1.0, y_channel: YMode | None = None) -> None:
        super().__init__()
        self.data_range = data_range
        self.y_channel: YMode | None = y_channel

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Shape: x, y ``N × C × H × W``; returns ``(N,)``."""
        return ssim(x, y, data_range=self.data_range, y_channel=self.y_channel)


# --------------------------------------------------------------------------- numpy protocol


@dataclass
class ShiftAlignedScore:
    """Result of :func:`compare_upto_shift`."""

    psnr: float
    """PSNR in dB (peak 1) of the aligned, cropped pair."""
    ssim: float
    """SSIM (``ssim.m`` conventions, with its automatic downsampling) of the aligned pair."""
    mse: float
    """Mean squared error of the aligned pair."""
    shift: tuple[float, float]
    """``(dy, dx)``: the estimate is displaced by this much relative to the reference, i.e.
    ``estimate(p) ≈ sharp(p - shift)``; multiples of 0.25 px."""
    aligned: np.ndarray
    """The resampled estimate on the cropped reference grid (float64, 2-D)."""

    @property
    def ssd(self) -> float:
        """Sum of squared differences of the aligned pair (Levin's ``ssde``)."""
        return self.mse * self.aligned.size


def _to_gray(img: np.ndarray, y_channel: YMode, name: str) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[2] == 3:
        img = rgb_to_y(hwc_to_tensor(img), mode=y_channel)[0, 0].numpy()
    elif img.ndim != 2:
        raise ValueError(f"{name} must be H×W, H×W×1 or H×W×3, got shape {img.shape}")
    return img


def _lerp_axis(img: np.ndarray, frac: float, axis: int) -> np.ndarray:
    """Samples at ``p + frac`` along ``axis`` for p = 0 .. n-1 (n-2 when frac > 0)."""
    if frac == 0:
        return img
    lo = np.take(img, np.arange(img.shape[axis] - 1), axis=axis)
    hi = np.take(img, np.arange(1, img.shape[axis]), axis=axis)
    return (1.0 - frac) * lo + frac * hi


def _box_sums(values: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sums of every h × w window (valid positions)."""
    c = np.pad(values, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def _valid_correlation(big: np.ndarray, small: np.ndarray) -> np.ndarray:
    """``out[o] = sum_p big[p + o] * small[p]`` for every valid offset o (via the FFT)."""
    shape = big.shape
    spec = np.fft.rfft2(big) * np.conj(np.fft.rfft2(small, s=shape))
    full = np.fft.irfft2(spec, s=shape)
    return full[: shape[0] - small.shape[0] + 1, : shape[1] - small.shape[1] + 1]


def _ssim_np(a: np.ndarray, b: np.ndarray) -> float:
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return float(ssim(ta, tb, data_range=1.0, downsample=True)[0])


def compare_upto_shift(
    estimate: np.ndarray,
    sharp: np.ndarray,
    *,
    max_shift: int = 5,
    crop: int = 15,
    y_channel: YMode = "studio",
) -> ShiftAlignedScore:
    """Score an estimate against the sharp image up to a sub-pixel translation (Levin et al.).

    The protocol of Levin's ``comp_upto_shift`` (also in SelfDeblur's statistics scripts):

    1. crop ``sharp`` by ``crop`` px on every side;
    2. crop ``estimate`` by ``crop - max_shift`` px, keeping a margin for the search;
    3. for every shift in ``-max_shift .. max_shift`` (both axes) in 0.25 px steps, bilinearly
       resample the estimate at the cropped grid plus the shift;
    4. keep the shift with the smallest sum of squared differences (SSD);
    5. report PSNR (peak 1), SSIM (``ssim.m`` conventions incl. its downsampling) and MSE of the
       aligned pair.

    The search is exhaustive but fast: the 16 fractional offsets are resampled once each and the
    SSD over all integer offsets comes from one FFT correlation per fractional offset.

    Args:
        estimate: Restored image, float in [0, 1]; ``H × W`` grey. ``H × W × 3`` colour is
            converted to BT.601 luma with ``y_channel`` (``"studio"``, MATLAB ``rgb2ycbcr``, is
            the Lai protocol), ``H × W × 1`` is squeezed.
        sharp: Ground truth, same shape as ``estimate``.
        max_shift: Largest shift searched, in whole pixels (5 for Levin, 10 for Lai).
        crop: Border removed from the ground truth; must be ≥ ``max_shift``.
        y_channel: Luma conversion for colour input.

    Returns:
        The scores, the shift found and the aligned estimate.
    """
    est = _to_gray(estimate, y_channel, "estimate")
    ref = _to_gray(sharp, y_channel, "sharp")
    if est.shape != ref.shape:
        raise ValueError(f"shape mismatch: {est.shape} vs {ref.shape}")
    if not 0 <= max_shift <= crop:
        raise ValueError(f"need 0 <= max_shift <= crop, got max_shift={max_shift}, crop={crop}")
    h, w = ref.shape
    if h - 2 * crop < SSIM_WINDOW or w - 2 * crop < SSIM_WINDOW:
        raise ValueError(f"image {ref.shape} is too small for crop={crop}")
    m = max_shift
    target = ref[crop : h - crop, crop : w - crop]
    source = est[crop - m : h - crop + m, crop - m : w - crop + m]
    th, tw = target.shape
    target_energy = float((target**2).sum())
    fracs = (0.0, 0.25, 0.5, 0.75) if m > 0 else (0.0,)
    best = (math.inf, 0.0, 0.0)
    for fy in fracs:
        rows = _lerp_axis(source, fy, 0)
        for fx in fracs:
            shifted = _lerp_axis(rows, fx, 1)
            ssd = (
                _box_sums(shifted**2, th, tw)
                - 2.0 * _valid_correlation(shifted, target)
                + target_energy
            )
            oy, ox = np.unravel_index(int(np.argmin(ssd)), ssd.shape)
            if ssd[oy, ox] < best[0]:
                best = (float(ssd[oy, ox]), float(oy - m + fy), float(ox - m + fx))
    _, dy, dx = best
    iy, ix = math.floor(dy) + m, math.floor(dx) + m
    rows = _lerp_axis(source, dy - math.floor(dy), 0)
    aligned = _lerp_axis(rows, dx - math.floor(dx), 1)[iy : iy + th, ix : ix + tw]
    err = float(((aligned - target) ** 2).mean())
    value = math.inf if err == 0 else 10.0 * math.log10(1.0 / err)
    return ShiftAlignedScore(
        psnr=value, ssim=_ssim_np(aligned, target), mse=err, shift=(dy, dx), aligned=aligned
    )


def error_ratio(
    estimate: np.ndarray | ShiftAlignedScore,
    known_kernel_result: np.ndarray | ShiftAlignedScore,
    sharp: np.ndarray | None = None,
    *,
    max_shift: int = 5,
    crop: int = 15,
) -> float:
    """Levin et al.'s error ratio: ``SSD(aligned estimate) / SSD(aligned known-kernel result)``.

    Both SSDs are the squared L2 distances to the sharp image after :func:`compare_upto_shift`
    (so the ratio is ``‖x̂ − x‖² / ‖x̂_k − x‖²``; its square root is the ratio of norms). The
    denominator is the non-blind deconvolution with the ground-truth kernel, so 1 means "as good
    as knowing the kernel"; Levin et al. count ratios ≤ 3 as visually acceptable.

    Args:
        estimate: The blind result (image), or its :class:`ShiftAlignedScore`.
        known_kernel_result: The known-kernel result (image), or its score.
        sharp: The ground truth; required when either of the first two is an image.
        max_shift: Passed to :func:`compare_upto_shift` for images.
        crop: Passed to :func:`compare_upto_shift` for images.

    Returns:
        The ratio (inf if only the denominator is 0; 1.0 if both are).
    """

    def score(item: np.ndarray | ShiftAlignedScore) -> ShiftAlignedScore:
        if isinstance(item, ShiftAlignedScore):
            return item
        if sharp is None:
            raise ValueError("error_ratio needs `sharp` to align images")
        return compare_upto_shift(item, sharp, max_shift=max_shift, crop=crop)

    num, den = score(estimate).ssd, score(known_kernel_result).ssd
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def kernel_error(k_est: np.ndarray, k_true: np.ndarray) -> float:
    """Aligned kernel error: ``min_t ‖shift_t(k̂) − k‖²`` over integer translations t.

    Both kernels are clipped at 0 and normalised to sum 1, zero-padded (they may differ in size,
    centres aligned), and the estimate is translated by every integer offset that keeps any
    overlap; the smallest sum of squared differences is returned. This removes the translation
    ambiguity of blind deconvolution. VDIP's "average kernel recovery error" (from Zhang et al.
    2017) is of the same kind but its exact definition is not published; do not compare the two
    numerically.

    Shape:
        - k_est: ``(h1, w1)``; k_true: ``(h2, w2)``
    """
    a = np.clip(np.asarray(k_est, dtype=np.float64), 0, None)
    b = np.clip(np.asarray(k_true, dtype=np.float64), 0, None)
    if a.ndim != 2 or b.ndim != 2 or a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("kernels must be 2-D with a positive sum")
    a, b = a / a.sum(), b / b.sum()
    # Translations never lose mass in the full (zero-padded) plane, so minimising the SSD is
    # maximising the full cross-correlation.
    shape = (a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1)
    corr = np.fft.irfft2(np.fft.rfft2(a, s=shape) * np.conj(np.fft.rfft2(b, s=shape)), s=shape)
    return max(0.0, float((a**2).sum() + (b**2).sum() - 2.0 * corr.max()))


def _hwc_tensor(img: np.ndarray) -> Tensor:
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected H×W or H×W×C, got shape {arr.shape}")
    return hwc_to_tensor(arr)


def image_metrics(
    restored: np.ndarray,
    sharp: np.ndarray,
    *,
    crop_border: int = 0,
    y_channel: YMode | None = None,
    shift_tolerant: bool = False,
    max_shift: int = 5,
    crop: int = 15,
) -> dict[str, float]:
    """PSNR, SSIM and MSE of two ``H × W × C`` (or ``H × W``) numpy images in [0, 1].

    Computed in float64. With ``shift_tolerant=True`` the Levin protocol
    (:func:`compare_upto_shift`; colour is reduced to ``y_channel`` luma, ``"studio"`` if None)
    is used instead, and ``shift_y``/``shift_x`` are added.

    Returns:
        ``{"psnr": ..., "ssim": ..., "mse": ...}`` (+ shifts when shift-tolerant).
    """
    if shift_tolerant:
        score = compare_upto_shift(
            restored, sharp, max_shift=max_shift, crop=crop, y_channel=y_channel or "studio"
        )
        return {"psnr": score.psnr, "ssim": score.ssim, "mse": score.mse,
                "shift_y": score.shift[0], "shift_x": score.shift[1]}
    x, y = _hwc_tensor(restored), _hwc_tensor(sharp)
    kw = {"crop_border": crop_border, "y_channel": y_channel}
    return {
        "psnr": float(psnr(x, y, **kw)[0]),  # type: ignore[arg-type]
        "ssim": float(ssim(x, y, **kw)[0]),  # type: ignore[arg-type]
        "mse": float(mse(x, y, **kw)[0]),  # type: ignore[arg-type]
    }


__all__ = [
    "SSIM",
    "ShiftAlignedScore",
    "compare_upto_shift",
    "error_ratio",
    "gaussian_window",
    "image_metrics",
    "kernel_error",
    "mse",
    "psnr",
    "rgb_to_y",
    "ssim",
]
