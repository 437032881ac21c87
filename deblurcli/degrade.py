"""Image degradations for synthetic training pairs: convolution, noise, JPEG, frame averaging.

Images are ``H × W × C`` (or ``H × W``) float32 numpy arrays in [0, 1]; results keep the input's
layout and are float32. The functions are fast enough for data-loader workers on 256 × 256 crops
(OpenCV does the convolution, switching to the DFT for large kernels).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from deblurcli.errors import UsageError

Boundary = Literal["reflect", "replicate", "wrap", "zero"]
"""How pixels beyond the image are defined for :func:`convolve`:

* ``reflect``: mirrored without repeating the edge pixel (``d c b | a b c d | c b a``), as numpy's
  and torch's ``reflect``;
* ``replicate``: the edge pixel repeated;
* ``wrap``: periodic (the circular convolution an FFT model assumes);
* ``zero``: zeros (the image darkens near the border).
"""

_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "wrap": "wrap", "zero": "constant"}
_CV_BORDERS = {
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
    "zero": cv2.BORDER_CONSTANT,
}
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def convolve(
    image: np.ndarray, kernel: np.ndarray, *, boundary: Boundary = "reflect"
) -> np.ndarray:
    """True 2-D convolution of every channel with ``kernel``; the output has the input's size.

    ``out[y, x] = sum_{i, j} kernel[i, j] * image[y - i + ci, x - j + cj]`` with the kernel
    centre ``(ci, cj) = (kh // 2, kw // 2)``, so a delta at the centre is the identity and a delta
    one pixel right of it moves the image one pixel right.

    Args:
        image: ``H × W`` or ``H × W × C`` float image.
        kernel: 2-D kernel (any size; not re-normalised here).
        boundary: Border handling, see :data:`Boundary`.

    Returns:
        float32 array of the input's shape.
    """
    if boundary not in _PAD_MODES:
        raise ValueError(f"boundary must be one of {tuple(_PAD_MODES)}, got {boundary!r}")
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {kernel.shape}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be H×W or H×W×C, got shape {image.shape}")
    kh, kw = kernel.shape
    ci, cj = kh // 2, kw // 2
    h, w = image.shape[:2]
    top, left = kh - 1 - ci, kw - 1 - cj  # out[y] reads image[y - top .. y + ci]
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # OpenCV correlates
    anchor = (left, top)  # (x, y) of the flipped kernel's centre
    if boundary != "wrap" and max(top, ci) < h and max(left, cj) < w:
        source, border, (oy, ox) = image, _CV_BORDERS[boundary], (0, 0)
    else:  # OpenCV has no periodic border; kernels wider than the image also go this way
        pad = [(top, ci), (left, cj)] + [(0, 0)] * (image.ndim - 2)
        source = np.pad(image, pad, mode=_PAD_MODES[boundary])  # type: ignore[call-overload]
        border, (oy, ox) = cv2.BORDER_CONSTANT, (top, left)

    def filt(plane: np.ndarray) -> np.ndarray:
        out = cv2.filter2D(plane, cv2.CV_32F, flipped, anchor=anchor, borderType=border)
        return out[oy : oy + h, ox : ox + w]

    if image.ndim == 2 or image.shape[2] <= 4:
        return filt(source).reshape(image.shape)
    return np.stack([filt(source[..., c]) for c in range(image.shape[2])], axis=2)


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma`` (on the [0, 1] scale) and clip.

    The signal-independent case of :func:`add_signal_dependent_noise`.

    Returns:
        float32 array of the input's shape, clipped to [0, 1].
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    return add_signal_dependent_noise(image, sigma, 0.0, rng)


def apply_kernel(
    image: np.ndarray,
    kernel: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: float = 0.0,
    jpeg: int | None = None,
    boundary: Boundary = "reflect",
) -> np.ndarray:
    """Blur by a known kernel, add Gaussian noise ``noise``, optionally JPEG: ``blur``'s and
    the benchmark presets' degradation (the tail of :func:`synthesize` with a fixed kernel).

    Returns:
        float32 array of the input's shape, in [0, 1].
    """
    blurred = convolve(image, kernel, boundary=boundary)
    if noise > 0:
        blurred = add_gaussian_noise(blurred, noise, rng)
    if jpeg is not None:
        blurred = jpeg_degrade(blurred, jpeg)
    return np.clip(blurred, 0.0, 1.0).astype(np.float32)


def jpeg_degrade(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through 8-bit JPEG at ``quality`` (1–100, libjpeg scale, 4:2:0 for colour).

    Accepts grey (``H × W`` or ``H × W × 1``), RGB and RGBA (alpha passes through untouched).

    Returns:
        float32 array of the input's shape, values on the 8-bit grid.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ValueError(f"JPEG needs 1, 3 or 4 channels, got {image.shape[2]}")
    colour = image.ndim == 3 and image.shape[2] >= 3
    rgb = image[..., :3] if colour else image.reshape(image.shape[:2])
    u8 = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    if colour:
        u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if colour:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    out = decoded.astype(np.float32) / 255.0
    if colour and image.shape[2] == 4:
        return np.concatenate([out, image[..., 3:]], axis=2)
    return out.reshape(image.shape)


def resolution_loss(image: np.ndarray, factor: float) -> np.ndarray:
    """Lose resolution as a shorter focal length or a smaller sensor does, at the same size.

    The image is reduced by ``factor`` with pixel-area averaging (each low-resolution pixel
    integrates the light that falls on it, which also aliases the finest detail) and brought back
    to its size with bicubic interpolation. Detail well below ``0.5 / factor`` cycles per pixel
    passes nearly unchanged and almost nothing passes above it, the shape the City100 pairs show
    (docs/training.md, stage 5), unlike a Gaussian's gradual roll-off.

    Args:
        image: ``H × W`` or ``H × W × C`` float32 in [0, 1].
        factor: Linear reduction, > 1 (2 halves the resolution).

    Returns:
        float32 array of the input's shape.
    """
    if not factor > 1.0:
        raise ValueError(f"resolution factor must be > 1, got {factor}")
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    low = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    back = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(back.reshape(image.shape), 0.0, 1.0)


def unsharp_mask(image: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """In-camera sharpening: ``image + amount · (image − Gaussian_σ(image))``, clipped to [0, 1].

    Shape: ``H × W`` or ``H × W × C`` float32 in, the same out.
    """
    image = np.asarray(image, dtype=np.float32)
    smooth = cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)
    return np.clip(image + amount * (image - smooth.reshape(image.shape)), 0.0, 1.0)


def average_frames(frames: Sequence[np.ndarray], *, gamma: float | None = 2.2) -> np.ndarray:
    """GoPro-style blur: the mean of consecutive sharp frames, computed in (approximately)
    linear light.

    Each frame's stored (gamma-encoded) values are raised to ``gamma``, averaged, and encoded back
    with ``1 / gamma``, as a sensor integrates light over the exposure. ``gamma=None`` (or 1)
    averages the stored values directly. On the bundled ``gopro_dev`` pairs of sequence
    GOPR0477_11_00, ``gamma=2.2`` reproduces three of the four blurred images to about 50.6 dB
    (the JPEG floor of the stored frames); the fourth matches the plain average instead.

    Shape:
        - frames: N arrays of one shape (``H × W`` or ``H × W × C``), N ≥ 1; returns that shape.
    """
    if len(frames) == 0:
        raise ValueError("average_frames needs at least one frame")
    first = np.asarray(frames[0])
    acc = np.zeros(first.shape, dtype=np.float64)
    linear = gamma is not None and gamma != 1
    for frame in frames:
        frame = np.asarray(frame, dtype=np.float64)
        if frame.shape != first.shape:
            raise ValueError(f"frames differ in shape: {frame.shape} vs {first.shape}")
        acc += np.clip(frame, 0.0, 1.0) ** gamma if linear else frame  # type: ignore[operator]
    acc /= len(frames)
    if linear:
        acc = acc ** (1.0 / gamma)  # type: ignore[operator]
    return acc.astype(np.float32)


def _natural_key(path: Path) -> list[object]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def read_frame_sequence(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a frame folder, in natural order (``frame2`` before ``frame10``).

    Raises:
        UsageError: ``folder`` is not a directory or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a directory of frames")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise UsageError(f"{folder}: no frame images ({', '.join(FRAME_SUFFIXES)})")
    return sorted(files, key=_natural_key)


# ------------------------------------------------------------------ the degradation pipeline


def add_signal_dependent_noise(
    image: np.ndarray, read_sigma: float, shot_gain: float, rng: np.random.Generator
) -> np.ndarray:
    """Add heteroscedastic (Poisson–Gaussian-like) sensor noise and clip to [0, 1].

    The variance at a pixel of value ``x`` is ``read_sigma**2 + shot_gain * x``: a constant read
    noise plus shot noise that grows with brightness, as in a raw sensor (Foi et al. 2008).

    Returns:
        float32 array of the input's shape, clipped to [0, 1].
    """
    if read_sigma < 0 or shot_gain < 0:
        raise ValueError("noise parameters must be >= 0")
    image = np.asarray(image, dtype=np.float32)
    std = np.sqrt(np.float32(read_sigma) ** 2 + np.float32(shot_gain) * np.clip(image, 0, 1))
    noise = rng.standard_normal(image.shape, dtype=np.float32) * std
    return np.clip(image + noise, 0.0, 1.0)


def quantize8(image: np.ndarray) -> np.ndarray:
    """Round to the 8-bit grid (what a saved photo holds); float32, same shape."""
    return (np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


@dataclass(frozen=True)
class Recipe:
    """The random degradation :func:`synthesize` draws: one recipe object for train, bench, blur.

    Every field has a plain meaning; a field at 0 (or an empty range) turns its step off.
    """

    kinds: tuple[str, ...] = ("motion", "gaussian", "defocus")
    """Camera-blur families (:data:`deblurcli.kernels.KERNEL_KINDS`), drawn by ``kind_weights``."""
    kind_weights: tuple[float, ...] = ()
    """Relative weights of ``kinds`` (empty: uniform)."""
    size_range: tuple[int, int] = (7, 65)
    """Odd kernel canvas side drawn uniformly from the odd numbers in [low, high] (pixels)."""
    smooth_max: int = 25
    """Largest canvas for Gaussian and defocus blur (camera shake uses the full range)."""
    varying_prob: float = 0.0
    """Probability that camera shake varies across the frame (small camera rotations)."""
    object_prob: float = 0.0
    """Probability of an object moving across the (camera-blurred) background."""
    clip_prob: float = 0.0
    """Probability that highlights are brightened ×U(1.5, 4) in linear light and clip."""
    linear_light: bool = True
    """Blur in linear light (values raised to 2.2), as a sensor integrates light."""
    srgb_blur_prob: float = 0.0
    """With ``linear_light``, the probability that a pair is blurred in its stored (sRGB)
    values instead, as synthetic benchmarks (and ``--preset shake``) blur: a model trained on
    linear-light blur alone gains +1.04 dB on linear-light shake but +0.13 dB on the sRGB
    preset (docs/training.md, stage 3)."""
    noise_range: tuple[float, float] = (0.0, 0.01)
    """Read-noise sigma drawn from U(low, high) (on [0, 1])."""
    shot_noise_max: float = 0.0
    """Shot-noise variance gain drawn from U(0, max) (see :func:`add_signal_dependent_noise`)."""
    jpeg_prob: float = 0.0
    """Probability of a JPEG round trip at the end."""
    jpeg_quality: tuple[int, int] = (60, 95)
    """JPEG quality range [low, high]."""
    resample_prob: float = 0.0
    """Probability that the camera blur is replaced by a loss of resolution
    (:func:`resolution_loss`), the lens/resolution blur of real pairs such as City100."""
    resample_range: tuple[float, float] = (1.5, 3.5)
    """Reduction factor of the resolution loss, drawn from U(low, high)."""
    sharpen_prob: float = 0.0
    """Probability of in-camera sharpening of the blurry image after the noise
    (:func:`unsharp_mask`, σ ~ U(0.6, 1.6), amount ~ U(0.2, 1.0)); the target stays unsharpened."""
    deconvolve_prob: float = 0.0
    """Probability that the network input is not the blurry image but its non-blind restoration
    with an imperfect copy of the kernel (:func:`imperfect_kernel`, hyper-Laplacian at
    ``deconvolve_weight_factor`` times :func:`deblurcli.deconv.noise_weight` of the read noise,
    at least :data:`RESTORE_MIN_WEIGHT`): what blind deconvolution hands a finishing network."""
    kernel_error_max: float = 1.0
    """Largest :func:`imperfect_kernel` strength; each pair draws U(0, max)."""
    deconvolve_weight_factor: float = 2.0
    """Prior weight of that restoration over the true-kernel rule (the fast blind preset's 2)."""
    deconvolve_guide: bool = False
    """With a restoration, also return its :func:`restoration_guide` (the observed photo and the
    restoration blurred again with the kernel it used) for a guided finishing network."""

    @property
    def margin(self) -> int:
        """Pixels of real image content a crop needs on each side so the blur sees no padding."""
        return self.size_range[1] // 2

    def check(self) -> None:
        """Raise ValueError for an impossible recipe (checked before any data is touched)."""
        from deblurcli.kernels import KERNEL_KINDS

        low, high = self.size_range
        if low < 5 or high < low or low % 2 == 0 or high % 2 == 0:
            raise ValueError(f"size_range must be odd, 5 <= low <= high, got {self.size_range}")
        if not self.kinds or set(self.kinds) - set(KERNEL_KINDS):
            raise ValueError(f"kinds must be a non-empty subset of {KERNEL_KINDS}: {self.kinds}")
        if self.kind_weights and len(self.kind_weights) != len(self.kinds):
            raise ValueError("kind_weights must have one weight per kind")
        for name in ("varying_prob", "object_prob", "clip_prob", "jpeg_prob", "srgb_blur_prob",
                     "resample_prob", "sharpen_prob", "deconvolve_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        factors = tuple(self.resample_range)
        if len(factors) != 2 or not 1.0 < factors[0] <= factors[1] <= 8.0:
            raise ValueError(f"resample_range must satisfy 1 < low <= high <= 8, "
                             f"got {self.resample_range}")
        if self.kernel_error_max < 0 or self.deconvolve_weight_factor <= 0:
            raise ValueError("kernel_error_max must be >= 0 and deconvolve_weight_factor > 0")


RESTORE_MIN_WEIGHT = 3e-4
"""Floor of that restoration's prior weight (the fast blind preset's ``min_weight``)."""


SHAKE_BENCH_RECIPE = Recipe(
    kinds=("motion",),
    size_range=(15, 51),
    linear_light=False,
    noise_range=(0.01, 0.01),
)
"""The fixed ``bench --preset shake`` degradation: camera shake of 15–51 px, σ = 0.01 noise."""


@dataclass
class DegradedPair:
    """One synthetic pair: ``H × W × C`` float32 images in [0, 1] and what made them."""

    blurry: np.ndarray
    sharp: np.ndarray
    kernel: np.ndarray
    """The (centre) blur kernel, true-convolution orientation, sum 1."""
    details: dict[str, object] = field(default_factory=dict)
    guide: np.ndarray | None = None
    """``H × W × 2C`` :func:`restoration_guide` of a restored pair (``Recipe.deconvolve_guide``)."""


def restoration_guide(observed: np.ndarray, restored: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """What a guided finishing network reads beside a restoration: the photo that was observed
    and the restoration blurred again with the kernel it was made with, stacked on channels.

    Where the kernel was right the two agree up to noise; where it was wrong their difference
    shows the structure the restoration failed to explain (ghost edges, ringing, residual blur).

    Args:
        observed: The blurry photo, ``H × W × C`` in [0, 1].
        restored: Its non-blind restoration with ``kernel``, same shape (clipped to [0, 1] here).
        kernel: The kernel of that restoration, true-convolution orientation, sum 1.

    Returns:
        ``H × W × 2C`` float32: ``observed`` then ``kernel ∗ restored``, in [0, 1].
    """
    reblurred = np.clip(convolve(np.clip(restored, 0.0, 1.0), kernel), 0.0, 1.0)
    if reblurred.ndim == 2:
        reblurred = reblurred[..., None]
    observed = np.asarray(observed, dtype=np.float32).reshape(reblurred.shape)
    return np.concatenate([observed, reblurred], axis=2)


def _odd_between(rng: np.random.Generator, low: int, high: int) -> int:
    return low + 2 * int(rng.integers((high - low) // 2 + 1))


def _line_kernel(length: float, angle: float, size: int) -> np.ndarray:
    """A centred straight streak of ``length`` pixels (an object moving at constant speed)."""
    from deblurcli.kernels import rasterize_path

    t = np.linspace(-0.5, 0.5, max(2, int(4 * length) + 2))[:, None]
    points = t * length * np.array([[math.sin(angle), math.cos(angle)]])
    return rasterize_path(points, size)


def varying_shake_blur(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    *,
    rotation_share: float | None = None,
    grid: int = 3,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Spatially varying camera shake: one random trajectory of translations *and* small rotations.

    The camera follows a Boracchi–Foi translation path plus a smooth in-plane rotation path (both
    with zero mean, so the average pose is the sharp frame). A point at offset ``p`` from the
    image centre moves by ``T(t) + θ(t) · p⊥``, so its blur kernel depends on where it is. The
    kernels are rendered on a ``grid × grid`` lattice of points and the result blends the images
    blurred by each kernel with bilinear weights (an efficient-filter-flow approximation).

    Args:
        image: ``H × W × C`` float image (linear light).
        size: Odd kernel canvas; every kernel of the field fits in it.
        rng: Source of randomness.
        rotation_share: Fraction of the blur extent at the corners that comes from rotation;
            default ``U(0.3, 0.8)``.
        grid: Lattice points per side (≥ 2).

    Returns:
        The blurred image (input's shape) and the ``grid²`` kernels, row-major from top-left.
    """
    from deblurcli.kernels import rasterize_path, shake_trajectory

    h, w = image.shape[:2]
    steps = 400
    translation = shake_trajectory(steps, rng=rng)
    translation -= translation.mean(axis=0)
    walk = np.cumsum(rng.standard_normal(steps))
    walk = np.convolve(walk, np.ones(25) / 25, mode="same")
    theta = walk - walk.mean()
    share = rng.uniform(0.3, 0.8) if rotation_share is None else rotation_share
    radius = math.hypot(h / 2, w / 2)
    t_reach = max(np.abs(translation).max(), 1e-9)
    r_reach = max(np.abs(theta).max() * radius, 1e-9)
    half = (size - 1) / 2 - 1
    extent = rng.uniform(0.5, 1.0) * half
    translation *= (1 - share) * extent / t_reach
    theta *= share * extent / r_reach
    rows = np.linspace(-(h - 1) / 2, (h - 1) / 2, grid)
    cols = np.linspace(-(w - 1) / 2, (w - 1) / 2, grid)
    kernels, blurred = [], []
    for r in rows:
        for c in cols:
            # small rotation by theta about the centre moves (r, c) by theta * (c, -r)
            path = translation + theta[:, None] * np.array([[c, -r]])
            reach = np.abs(path).max()
            if reach > half:
                path *= half / reach
            k = rasterize_path(path, size)
            kernels.append(k)
            blurred.append(convolve(image, k))
    wy = _hat_weights(h, grid)
    wx = _hat_weights(w, grid)
    out = np.zeros_like(np.asarray(image, dtype=np.float32))
    for i in range(grid):
        for j in range(grid):
            weight = (wy[i][:, None] * wx[j][None, :]).astype(np.float32)
            out += blurred[i * grid + j] * (weight[..., None] if out.ndim == 3 else weight)
    return out, kernels


def _hat_weights(n: int, grid: int) -> list[np.ndarray]:
    """Piecewise-linear interpolation weights of ``grid`` evenly spaced nodes over ``n`` pixels."""
    x = np.linspace(0, grid - 1, n)
    return [np.clip(1 - np.abs(x - g), 0, 1) for g in range(grid)]


def imperfect_kernel(kernel: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A plausible blind estimate of ``kernel``, the errors growing with ``strength`` (0: exact).

    The errors seen in the fast blind preset's estimates on ``shake`` photos: the trajectory a
    little scaled and rotated, part of it missing, smeared, with isolated speckles and uneven
    mass along the path. Each is drawn with a size proportional to ``strength``; the result
    keeps the canvas and the centre of mass (to the pixel) of ``kernel``, sums to 1 and has
    no entry below 5 % of its peak.

    Shape:
        - kernel: :math:`(h, w)`, true-convolution orientation; returns the same shape (float64)
    """
    k = np.asarray(kernel, dtype=np.float64)
    k = k / k.sum()
    if strength <= 0:
        return k
    h, w = k.shape
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    cy, cx = float((k.sum(1) * rows).sum()), float((k.sum(0) * cols).sum())
    scale = math.exp(rng.normal(0.0, 0.12 * strength))
    angle = float(rng.normal(0.0, 10.0 * strength))
    warp = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    out = cv2.warpAffine(k, warp, (w, h), flags=cv2.INTER_LINEAR)
    if out.sum() <= 0:
        out = k.copy()
    if rng.random() < 0.6 * strength:  # a stretch of the path is missing
        flat = out.ravel() / out.sum()
        at = int(rng.choice(flat.size, p=flat))
        py, px = divmod(at, w)
        support = np.argwhere(out > 0.05 * out.max())
        reach = float(np.ptp(support, axis=0).max() + 1) if len(support) else 1.0
        radius = rng.uniform(0.1, 0.35) * reach
        yy, xx = np.mgrid[0:h, 0:w]
        kept = out * (((yy - py) ** 2 + (xx - px) ** 2) > radius * radius)
        if kept.sum() > 0.4 * out.sum():
            out = kept
    out = out * np.clip(1.0 + rng.normal(0.0, 0.4 * strength, out.shape), 0.0, None)
    smear = rng.uniform(0.0, 1.2 * strength)
    if smear > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), smear)
    support = np.argwhere(out > 0.05 * out.max())
    if len(support) and strength > 0:
        low, high = support.min(0), support.max(0)
        for _ in range(int(rng.poisson(6.0 * strength))):
            y = int(np.clip(rng.integers(low[0] - 3, high[0] + 4), 0, h - 1))
            x = int(np.clip(rng.integers(low[1] - 3, high[1] + 4), 0, w - 1))
            out[y, x] += rng.uniform(0.1, 0.4) * strength * out.max()
    out[out < 0.05 * out.max()] = 0.0
    out /= out.sum()
    ny, nx = float((out.sum(1) * rows).sum()), float((out.sum(0) * cols).sum())
    dy, dx = int(round(cy - ny)), int(round(cx - nx))
    if dy or dx:  # back onto the true kernel's centre (blind estimates are centred by mass)
        shifted = np.zeros_like(out)
        shifted[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
            out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        out = shifted / shifted.sum() if shifted.sum() > 0 else out
    return out


def synthesize(
    region: np.ndarray, rng: np.random.Generator, recipe: Recipe, *, margin: int | None = None
) -> DegradedPair:
    """Degrade a sharp crop with one random draw of ``recipe``: the one pipeline of the project.

    Order: (linear light) → highlight boost → camera blur (uniform or spatially varying) or loss of
    resolution → moving object → clip and back to the stored encoding → crop the margin →
    signal-dependent noise → in-camera sharpening → JPEG → 8-bit quantisation (→ with
    ``deconvolve_prob``: a restoration with an imperfect kernel, then the margin). The sharp target
    gets the same highlight boost and object, without blur, noise or sharpening, and is quantised
    the same way.

    Args:
        region: ``H × W × C`` float32 sharp pixels in [0, 1], carrying ``margin`` pixels of real
            content on each side.
        rng: Source of randomness; the pair is a pure function of its state.
        recipe: What to draw.
        margin: Border cropped off both outputs (default ``recipe.margin``); with 0 the blur uses
            a reflecting border (whole images, e.g. benchmark sets).

    Returns:
        A :class:`DegradedPair` of ``(H - 2·margin) × (W - 2·margin) × C`` images.
    """
    from deblurcli.kernels import motion_kernel, random_kernel

    margin = recipe.margin if margin is None else margin
    region = np.asarray(region, dtype=np.float32)
    linear_light = recipe.linear_light and not (
        recipe.srgb_blur_prob and rng.random() < recipe.srgb_blur_prob
    )
    gamma = 2.2 if linear_light else 1.0
    linear = np.clip(region, 0.0, 1.0) ** gamma if gamma != 1 else region.copy()
    details: dict[str, object] = {"linear_light": bool(linear_light)}
    if recipe.clip_prob and rng.random() < recipe.clip_prob:
        gain = float(rng.uniform(1.5, 4.0))
        luma = linear.mean(axis=2, keepdims=True) if linear.ndim == 3 else linear
        lift = np.clip((luma - 0.5) / 0.4, 0.0, 1.0)  # 0 below mid-grey, 1 from 0.9 up
        linear = linear * (1.0 + (gain - 1.0) * lift * lift)
        details["highlight_gain"] = gain
    weights = np.asarray(recipe.kind_weights or [1.0] * len(recipe.kinds), dtype=np.float64)
    kind = recipe.kinds[int(rng.choice(len(recipe.kinds), p=weights / weights.sum()))]
    size = _odd_between(rng, *recipe.size_range)
    if kind != "motion":
        size = min(size, max(recipe.smooth_max, recipe.size_range[0]))
    if recipe.resample_prob and rng.random() < recipe.resample_prob:
        kind = "resample"
    details.update(kind=kind, size=size)
    if kind == "resample":
        factor = float(rng.uniform(*recipe.resample_range))
        blurred = resolution_loss(linear, factor)
        side = 2 * math.ceil(2 * factor) + 1
        delta = np.zeros((side, side), dtype=np.float32)
        delta[side // 2, side // 2] = 1.0
        kernel = resolution_loss(delta, factor).astype(np.float64)  # the centre's response
        kernel /= kernel.sum()
        details.update(resample_factor=factor, size=side)
    elif kind == "motion" and recipe.varying_prob and rng.random() < recipe.varying_prob:
        blurred, field_kernels = varying_shake_blur(linear, size, rng)
        kernel = field_kernels[len(field_kernels) // 2]
        details["varying"] = True
    else:
        if kind == "motion":
            kernel = motion_kernel(size, rng=rng)
        else:
            kernel = random_kernel(rng, kinds=(kind,), max_size=size)
        blurred = convolve(linear, kernel)
    if recipe.object_prob and rng.random() < recipe.object_prob and linear.ndim == 3:
        h, w = linear.shape[:2]
        shift = (int(rng.integers(h)), int(rng.integers(w)))
        obj = np.roll(linear, shift, axis=(0, 1))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
        dist = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        mask = np.clip((1.2 - dist) / 0.4, 0.0, 1.0)[..., None]
        length = float(rng.uniform(5, recipe.size_range[1] - 4))
        streak = _line_kernel(length, float(rng.uniform(0, math.pi)), recipe.size_range[1])
        blurred = (1 - convolve(mask, streak)) * blurred + convolve(obj * mask, streak)
        linear = (1 - mask) * linear + obj * mask
        details["object_streak"] = length
    blurry = np.clip(blurred, 0.0, 1.0)
    sharp = np.clip(linear, 0.0, 1.0)
    if gamma != 1:
        blurry, sharp = blurry ** (1 / gamma), sharp ** (1 / gamma)
    # a restoration needs the content around the crop: the margin goes after it
    restore = bool(recipe.deconvolve_prob) and rng.random() < recipe.deconvolve_prob
    guide: np.ndarray | None = None
    inner = (slice(margin, -margin), slice(margin, -margin))
    if margin and not restore:
        blurry, sharp = blurry[inner], sharp[inner]
    read = float(rng.uniform(*recipe.noise_range))
    shot = float(rng.uniform(0, recipe.shot_noise_max)) if recipe.shot_noise_max else 0.0
    if read or shot:
        blurry = add_signal_dependent_noise(blurry, read, shot, rng)
    details.update(noise=read, shot=shot)
    if recipe.sharpen_prob and rng.random() < recipe.sharpen_prob:
        sigma, amount = float(rng.uniform(0.6, 1.6)), float(rng.uniform(0.2, 1.0))
        blurry = unsharp_mask(blurry, sigma, amount)
        details["sharpen"] = (sigma, amount)
    if recipe.jpeg_prob and rng.random() < recipe.jpeg_prob:
        quality = int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1))
        blurry = jpeg_degrade(blurry, quality)
        details["jpeg"] = quality
    if restore:
        from deblurcli.deconv import deconvolve, noise_weight

        strength = float(rng.uniform(0.0, recipe.kernel_error_max))
        guess = imperfect_kernel(kernel, rng, strength)
        weight = recipe.deconvolve_weight_factor * noise_weight(max(read, 1e-3))
        weight = max(RESTORE_MIN_WEIGHT, weight)
        observed = quantize8(blurry)
        blurry = deconvolve(observed, guess, method="hyperlaplacian", weight=weight)
        details.update(restored=True, kernel_error=strength, restore_weight=weight)
        if recipe.deconvolve_guide:
            guide = quantize8(restoration_guide(observed, blurry, guess))
        if margin:
            blurry, sharp = blurry[inner], sharp[inner]
            guide = None if guide is None else np.ascontiguousarray(guide[inner])
    return DegradedPair(
        quantize8(blurry), quantize8(np.ascontiguousarray(sharp)), np.asarray(kernel), details,
        guide,
    )


__all__ = [
    "FRAME_SUFFIXES",
    "SHAKE_BENCH_RECIPE",
    "Boundary",
    "DegradedPair",
    "Recipe",
    "add_gaussian_noise",
    "add_signal_dependent_noise",
    "apply_kernel",
    "average_frames",
    "convolve",
    "imperfect_kernel",
    "jpeg_degrade",
    "quantize8",
    "read_frame_sequence",
    "resolution_loss",
    "restoration_guide",
    "synthesize",
    "unsharp_mask",
    "varying_shake_blur",
]
