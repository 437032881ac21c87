"""The blur kernel from a sharp reference photo of the same scene, then a non-blind solve.

A blind method has to guess the sharp image and the kernel together. With a sharp photo of the
same place (another frame of a burst, a second shot on a tripod) the guess is not needed: once
the reference is brought into the blurry photo's frame, ``blurry ≈ k ⋆ reference`` is a linear
least-squares problem in the kernel alone (Yuan et al., *Image deblurring with blurred/noisy
image pairs*, SIGGRAPH 2007, use a noisy short exposure the same way). Steps of
:func:`estimate_kernel_from_reference`:

1. **Similarity search** (:func:`search_similarity`): both luma images, downscaled to
   ``search_side`` px and smoothed, are compared for every scale and rotation of a grid
   (``scale_range``, ``max_angle``); for each, the normalised cross-correlation over the
   overlap of every translation comes from six FFT correlations (masked NCC), so a reference
   that shows only part of the photo still matches. The best few become starting points.
2. **Affine refinement**: OpenCV's ECC maximisation (``cv2.findTransformECC``, invariant to
   the reference's exposure) from each starting point, on smoothed images of at most
   ``ecc_side`` px; the highest correlation wins.
3. **Kernel**: on the most informative crop of the overlap (``crop`` px), the warped reference
   is matched in exposure (one gain in linear light) and the kernel solves
   ``min_k Σ_d ‖M ⊙ (∂_d x ⋆ k − ∂_d y)‖² + ridge·‖k‖²`` over ``k ≥ 0`` (first differences
   ``d``, ``M`` the pixels whose whole kernel footprint lies in the overlap) by accelerated
   projected gradients, then the simplex projection with a relative threshold.
4. **Joint re-registration** (``rounds``): the reference blurred by that kernel has the photo's
   blur, so ECC between the two is no longer biased by it; the kernel is estimated again.
   Optionally (``flow_sigma`` > 0, for bursts with parallax) a smoothed dense optical flow
   then aligns what an affine map cannot, and ``robust_passes`` re-weighted solves discount
   content the reference lacks.
5. **Fit check**: a single kernel must explain the crop: the robust residual of
   ``blurry − gain·(k ⋆ reference)`` at most ``max_misfit`` × the photo's noise and at least
   ``min_explained`` of its variance. Spatially varying blur, moving objects, a wrong
   registration or an unrelated reference fail it (:attr:`ReferenceKernel.fits`).

:func:`deblur_with_reference` then deconvolves every channel with the centred kernel
(:func:`deblurcli.deconv.deconvolve`, hyper-Laplacian, the blind preset's noise rule). Results
and limits: ``docs/deblur_ref.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deblurcli.errors import UnsupportedImageError, UsageError
from deblurcli.optim import ops

__all__ = [
    "ReferenceKernel", "ReferenceKernelConfig", "ReferenceOutput", "deblur_with_reference",
    "estimate_kernel_from_reference", "search_similarity",
]

GAMMA = 2.2
"""Exponent of the linear-light approximation used to match the reference's exposure."""


@dataclass(frozen=True)
class ReferenceKernelConfig:
    """Settings of :func:`estimate_kernel_from_reference` (defaults: docs/deblur_ref.md)."""

    kernel_size: int = 65
    """Side of the estimated kernel (odd); clamped to half the photo's shorter side."""
    crop: int = 512
    """Side of the estimation crop of the blurry photo."""
    search_side: int = 128
    """Longest side of the images in the similarity grid search."""
    scale_range: tuple[float, float] = (0.75, 4 / 3)
    """Scales of the reference relative to the photo that the search tries."""
    scale_steps: int = 15
    max_angle: float = 10.0
    """Rotations of ±``max_angle`` degrees are searched, in steps of ``angle_step``."""
    angle_step: float = 2.0
    min_overlap: float = 0.15
    """Smallest overlap, as a fraction of the photo, that a match may have."""
    candidates: int = 3
    """Grid-search winners refined by ECC."""
    ecc_side: int = 1024
    """Longest side of the images the first ECC refinement runs on."""
    ridge: float = 10.0
    threshold: float = 0.05
    """Relative threshold of the kernel's simplex projection."""
    iterations: int = 300
    """Accelerated projected-gradient steps of one kernel solve."""
    robust_passes: int = 0
    """Re-weighted solves after the first (see :func:`solve_kernel`)."""
    flow_sigma: float = 0.0
    """After the first round, align the reference by a dense optical flow smoothed with this
    Gaussian (px); 0: the affine map only."""
    rounds: int = 2
    """Kernel estimates; each after the first follows a re-registration against the reblurred
    reference."""
    max_misfit: float = 4.0
    min_explained: float = 0.95
    register: bool = True
    """Move the restoration by the kernel's sub-pixel centre-of-mass offset
    (:func:`deblurcli.optim.ops.register_to_kernel`), as the blind fast preset does."""

    def __post_init__(self) -> None:
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise UsageError(f"kernel_size must be odd and >= 3, got {self.kernel_size}")
        if self.rounds < 1 or self.iterations < 1 or self.candidates < 1:
            raise UsageError("rounds, iterations and candidates must be >= 1")
        if not 0 < self.scale_range[0] <= 1 <= self.scale_range[1]:
            raise UsageError(f"scale_range must contain 1, got {self.scale_range}")
        if self.max_misfit <= 0 or not 0 <= self.min_explained < 1:
            raise UsageError("max_misfit must be > 0 and min_explained in [0, 1)")


@dataclass
class ReferenceKernel:
    """What :func:`estimate_kernel_from_reference` found."""

    kernel: np.ndarray
    """``(k, k)`` float64, sums to 1, true-convolution orientation, centre of mass centred
    (all zeros when the overlap was too small to estimate any)."""
    matrix: np.ndarray
    """``2 × 3`` affine map from photo pixel coordinates (x, y) to reference coordinates."""
    fits: bool
    """The single-kernel model explains the crop (see the module docstring, step 5)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Scores of every step, for ``--json``: ``search_ncc``, ``ecc``, ``misfit``,
    ``explained``, ``overlap``, ``crop_box``, ``noise_sigma``, ``seconds``."""

    @property
    def why_not_fit(self) -> str:
        """Why the single kernel was rejected, in words, against the step-5 thresholds ("" when
        it fits)."""
        if self.fits:
            return ""
        misfit, cfg = self.details["misfit"], self.details["config"]
        if misfit is None:  # no kernel: too little aligned, or an all-zero solve
            return ("no kernel could be measured: too little of the reference lines up with the "
                    "photo")
        return (f"residual {misfit:.1f}x the noise, {self.details['explained']:.0%} of its "
                f"variance explained; a fit needs at most {cfg['max_misfit']:g}x and "
                f"{cfg['min_explained']:.0%}")


@dataclass
class ReferenceOutput:
    """What :func:`deblur_with_reference` returns."""

    image: np.ndarray | None
    """``H × W × C`` float32 in [0, 1]; None when the kernel did not fit (the caller decides
    what to do instead)."""
    estimate: ReferenceKernel


# ----------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------


def _luma(pixels: np.ndarray) -> np.ndarray:
    """Luma of an ``H × W`` or ``H × W × C`` image, float32 (the blind preset's weights)."""
    from deblurcli.optim.fast import _luma as luma_of

    image = pixels if pixels.ndim == 3 else pixels[..., None]
    return np.asarray(luma_of(image), dtype=np.float32)


def _rescaled(matrix: np.ndarray, factor: float) -> np.ndarray:
    """The map between images downscaled by ``factor`` as a map between the full images
    (pixel centres: ``small = (full + 0.5) / factor − 0.5``)."""
    a, b = matrix[:, :2], matrix[:, 2]
    offset = (0.5 / factor - 0.5) * np.ones(2)
    return np.concatenate([a, (factor * (a @ offset + b + 0.5) - 0.5)[:, None]], axis=1)


def _downscaled(image: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    if factor <= 1:
        return np.ascontiguousarray(image, dtype=np.float32)
    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _correlate(a_conj_f: Tensor, b: Tensor, shape: tuple[int, int]) -> Tensor:
    """``c(u) = Σ_x a(x)·b(x + u)`` for every shift (circular on ``shape``, zero-padded)."""
    return torch.fft.irfft2(a_conj_f * torch.fft.rfft2(b, s=shape), s=shape)


def search_similarity(blurry: np.ndarray, reference: np.ndarray, cfg: ReferenceKernelConfig
                      ) -> list[tuple[float, np.ndarray]]:
    """Best similarity transforms (scale, rotation, translation) from the photo to the reference.

    Args:
        blurry: Luma of the blurry photo, ``H × W`` float32.
        reference: Luma of the reference, ``H' × W'`` float32.
        cfg: Search grid (``scale_range``, ``scale_steps``, ``max_angle``, ``angle_step``,
            ``search_side``, ``min_overlap``, ``candidates``).

    Returns:
        Up to ``cfg.candidates`` pairs ``(ncc, matrix)``, best first: ``matrix`` (2 × 3) maps
        photo pixel coordinates (x, y) to reference coordinates; ``ncc`` is the masked
        normalised cross-correlation of the smoothed, downscaled images over their overlap.
    """
    import cv2

    factor = max(1.0, max(*blurry.shape, *reference.shape) / cfg.search_side)

    def prepare(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(_downscaled(image, factor), (0, 0), 2.0).astype(np.float64)

    f, g0 = prepare(blurry), prepare(reference)
    hf, wf = f.shape
    hg, wg = g0.shape
    lo, hi = cfg.scale_range
    scales = np.exp(np.linspace(math.log(lo), math.log(hi), cfg.scale_steps))
    scales = np.union1d(scales, [1.0])  # an unscaled reference is the common case
    n_angles = int(round(cfg.max_angle / cfg.angle_step))
    angles = cfg.angle_step * np.arange(-n_angles, n_angles + 1)
    side = int(math.ceil(max(hg, wg) * hi * 1.5)) + 2  # holds the reference at any angle/scale
    shape = (hf + side - 1, wf + side - 1)
    ft = torch.from_numpy(f)
    f1 = torch.fft.rfft2(ft, s=shape).conj()
    f2 = torch.fft.rfft2(ft * ft, s=shape).conj()
    fm = torch.fft.rfft2(torch.ones_like(ft), s=shape).conj()
    centre_g = np.array([(wg - 1) / 2, (hg - 1) / 2])
    centre_c = np.array([(side - 1) / 2, (side - 1) / 2])
    found: list[tuple[float, np.ndarray]] = []
    for scale in scales:
        for angle in angles:
            t = math.radians(angle)
            a = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) / scale
            canvas_to_ref = np.concatenate([a, (centre_g - a @ centre_c)[:, None]], axis=1)
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            g = cv2.warpAffine(g0.astype(np.float32), canvas_to_ref, (side, side), flags=flags,
                               borderMode=cv2.BORDER_CONSTANT)
            m = cv2.warpAffine(np.ones_like(g0, dtype=np.float32), canvas_to_ref, (side, side),
                               flags=flags, borderMode=cv2.BORDER_CONSTANT)
            mg = torch.from_numpy((m > 0.999).astype(np.float64))
            gt = torch.from_numpy(g.astype(np.float64)) * mg
            n = _correlate(fm, mg, shape)
            sf, sff = _correlate(f1, mg, shape), _correlate(f2, mg, shape)
            sg, sgg = _correlate(fm, gt, shape), _correlate(fm, gt * gt, shape)
            sfg = _correlate(f1, gt, shape)
            nc = n.clamp_min(1.0)
            var = (sff - sf * sf / nc).clamp_min(0) * (sgg - sg * sg / nc).clamp_min(0)
            ncc = (sfg - sf * sg / nc) / var.sqrt().clamp_min(1e-9)
            ncc[n < cfg.min_overlap * hf * wf] = -1.0
            value, index = ncc.flatten().max(0)
            uy, ux = divmod(int(index), shape[1])
            uy -= shape[0] if uy > shape[0] - hf else 0
            ux -= shape[1] if ux > shape[1] - wf else 0
            # photo (small) x -> canvas x + u -> reference (small)
            small = np.concatenate(
                [a, (a @ np.array([ux, uy], dtype=np.float64) + canvas_to_ref[:, 2])[:, None]],
                axis=1)
            found.append((float(value), _rescaled(small, factor)))
    found.sort(key=lambda item: -item[0])
    return found[: cfg.candidates]


def _ecc(template: np.ndarray, image: np.ndarray, matrix: np.ndarray, sigma: float,
         mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Affine ECC refinement of ``matrix`` (template coords → image coords); (matrix, -1) when
    it does not converge."""
    import cv2

    t = cv2.GaussianBlur(np.ascontiguousarray(template, dtype=np.float32), (0, 0), sigma)
    i = cv2.GaussianBlur(np.ascontiguousarray(image, dtype=np.float32), (0, 0), sigma)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    try:
        cc, warp = cv2.findTransformECC(t, i, matrix.astype(np.float32), cv2.MOTION_AFFINE,
                                        criteria, mask, 1)
    except cv2.error:
        return matrix, -1.0
    return warp.astype(np.float64), float(cc)


def _warp(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], origin: tuple[int, int]
          ) -> tuple[np.ndarray, np.ndarray]:
    """``image`` sampled on the photo grid of ``shape`` whose pixel (0, 0) is photo pixel
    ``origin`` (x, y); and the mask of pixels that lie inside ``image``."""
    import cv2

    m = matrix.copy()
    m[:, 2] = m[:, 2] + m[:, :2] @ np.asarray(origin, dtype=np.float64)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    size = (shape[1], shape[0])
    out = cv2.warpAffine(np.ascontiguousarray(image, dtype=np.float32), m, size, flags=flags,
                         borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.warpAffine(np.ones(image.shape[:2], dtype=np.float32), m, size,
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT)
    return out, inside > 0.999


def _exposure_matched(x: np.ndarray, y: np.ndarray, mask: np.ndarray, margin: int = 0
                      ) -> np.ndarray:
    """``x`` with one gain in linear light so that its mean over ``mask`` matches ``y``'s
    (``x`` may extend ``margin`` pixels beyond ``y`` on every side). Between a sharp ``x`` and
    a blurry ``y`` the gain is biased (blur lowers the mean of the linear values); the kernel
    step works on gradients and is normalised afterwards, so only comparisons of two equally
    blurred images need it exact."""
    lin = np.clip(x, 0.0, 1.0) ** GAMMA
    core = lin[margin : margin + y.shape[0], margin : margin + y.shape[1]]
    gain = float((np.clip(y, 0, 1)[mask] ** GAMMA).sum() / max(core[mask].sum(), 1e-6))
    return (np.clip(gain * lin, 0.0, 1.0) ** (1 / GAMMA)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# kernel
# ----------------------------------------------------------------------------------------------


def solve_kernel(y: Tensor, x: Tensor, mask: Tensor, size: int, *, ridge: float,
                 iterations: int, robust_passes: int = 0) -> Tensor:
    """Non-negative least-squares kernel in the gradient domain (valid correlation).

    Minimises ``Σ_d ‖W ⊙ (∂_d x ⋆ k − ∂_d y)‖² + ridge·‖k‖²`` over ``k ≥ 0`` by accelerated
    projected gradient descent (FISTA, step from a power iteration), from a flat kernel. ``W``
    is the mask; each of ``robust_passes`` further solves (warm-started) also down-weights
    pixels by a Cauchy weight of their residual, so content that is not in the reference (a
    moving person, parallax) stops pulling the kernel.

    Shape:
        - y: :math:`(H, W)`; x: :math:`(H+k-1, W+k-1)`; mask: :math:`(H, W)` bool;
          output: :math:`(k, k)`, correlation orientation, not normalised.
    """
    from deblurcli.optim.fast import _Grid

    dy = torch.stack([ops.diff_h(y)[:-1, :], ops.diff_v(y)[:, :-1]])
    inside = (mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:]).to(y.dtype)
    hg, wg = dy.shape[-2:]
    grid = _Grid((y.shape[0] + size - 2, y.shape[1] + size - 2))
    dx_f = grid.f(torch.stack([ops.diff_h(x)[:-1, :], ops.diff_v(x)[:, :-1]]))

    def predict(k: Tensor) -> Tensor:
        return grid.i(dx_f * grid.f_small(k).conj())[..., :hg, :wg]

    k = torch.full((size, size), 1.0 / size**2, dtype=y.dtype)
    weight = inside
    for pass_ in range(robust_passes + 1):
        if pass_ > 0:
            magnitude = (predict(k) - dy).square().sum(0).sqrt()
            scale = 2.5 * 1.4826 * float(magnitude[inside > 0].median()) + 1e-12
            weight = inside / (1 + (magnitude / scale).square())
        # both directions summed before the (linear) inverse transform
        rhs = grid.i_corner((dx_f * grid.f(weight * dy).conj()).sum(0), (size, size))

        def normal(kk: Tensor, weight: Tensor = weight) -> Tensor:
            return (grid.i_corner((dx_f * grid.f(predict(kk) * weight).conj()).sum(0),
                                  (size, size))
                    + ridge * kk)

        v = torch.ones(size, size, dtype=y.dtype) / size
        lipschitz = 1.0
        for _ in range(20):
            v = normal(v)
            lipschitz = float(v.norm())
            v = v / max(lipschitz, 1e-30)
        step = 1.0 / max(lipschitz, 1e-30)
        z, t = k.clone(), 1.0
        for _ in range(iterations):
            k_next = (z - step * (normal(z) - rhs)).clamp_min(0)
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = k_next + ((t - 1) / t_next) * (k_next - k)
            k, t = k_next, t_next
    return k


def _flow_aligned(x: np.ndarray, y: np.ndarray, kernel: np.ndarray, margin: int, sigma: float
                  ) -> np.ndarray:
    """``x`` moved by the smooth optical flow that aligns ``kernel ∗ x`` with ``y`` (parallax
    and other motion an affine map leaves; both sides carry the same blur, so the flow sees
    geometry only). ``x`` extends ``margin`` pixels beyond ``y`` on every side."""
    import cv2

    h, w = y.shape
    predicted = _blur(x, kernel)[margin : margin + h, margin : margin + w]
    predicted = _exposure_matched(predicted, y, np.ones_like(y, dtype=bool))

    def u8(a: np.ndarray) -> np.ndarray:
        return np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(u8(y), u8(predicted), None)
    flow = cv2.GaussianBlur(flow, (0, 0), sigma)
    flow = np.pad(flow, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    rows, cols = np.mgrid[0 : x.shape[0], 0 : x.shape[1]].astype(np.float32)
    return cv2.remap(x, cols + flow[..., 0], rows + flow[..., 1], cv2.INTER_CUBIC,
                     borderMode=cv2.BORDER_REFLECT)


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``image`` convolved (true convolution) with an odd ``kernel``, borders mirrored with the
    edge pixel repeated (OpenCV's ``BORDER_REFLECT``; :func:`deblurcli.degrade.convolve` offers
    only the mirror without it, which would move the measured numbers near the borders)."""
    import cv2

    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    return cv2.filter2D(np.ascontiguousarray(image, dtype=np.float32), -1, flipped,
                        borderType=cv2.BORDER_REFLECT)


def estimate_kernel_from_reference(
    blurry: np.ndarray, reference: np.ndarray, cfg: ReferenceKernelConfig | None = None
) -> ReferenceKernel:
    """The uniform blur kernel of ``blurry``, measured against a sharp ``reference``.

    Args:
        blurry: The blurry photo, ``H × W × C`` (or ``H × W``) float in [0, 1].
        reference: A sharp photo of the same scene, any size, framing within the search grid
            (scale ``cfg.scale_range``, rotation ±``cfg.max_angle``°), any exposure.
        cfg: Settings; defaults when None.

    Returns:
        The :class:`ReferenceKernel`; check :attr:`ReferenceKernel.fits` before using it.

    Raises:
        UnsupportedImageError: the photo or the reference is too small for any kernel (a side
            below 16 px); the message says which, without a file name.

    Shape:
        - blurry: :math:`(H, W, C)`; reference: :math:`(H', W', C')`; kernel :math:`(k, k)`
    """
    import cv2

    from deblurcli.noise import estimate_noise_sigma
    from deblurcli.optim.fast import informative_crop

    cfg = cfg or ReferenceKernelConfig()
    started = time.perf_counter()
    y_full, r_full = _luma(np.asarray(blurry)), _luma(np.asarray(reference))
    h, w = y_full.shape
    for what, (rows, cols) in (("photo", (h, w)), ("reference", r_full.shape)):
        if min(rows, cols) < 16:
            raise UnsupportedImageError(f"the {what} is {cols}×{rows} px; measuring a kernel "
                                        "needs at least 16 px per side")
    limit = min(h, w) // 2
    size = max(3, min(cfg.kernel_size, limit - 1 + limit % 2))  # odd, at most half the photo

    # 1-2: similarity grid, then affine ECC from each winner on a bounded working size
    candidates = search_similarity(y_full, r_full, cfg)
    factor = max(1.0, max(h, w, *r_full.shape) / cfg.ecc_side)
    y_small, r_small = _downscaled(y_full, factor), _downscaled(r_full, factor)
    inverse = 1.0 / factor
    best_matrix, best_cc = candidates[0][1], -1.0
    for _, matrix in candidates:
        small = _rescaled(matrix, inverse)
        refined, cc = _ecc(y_small, r_small, small, 4.0)
        if cc > best_cc:
            best_matrix, best_cc = _rescaled(refined, factor), cc
    matrix = best_matrix

    # 3: the estimation crop, inside the overlap
    _, inside = _warp(r_full, matrix, (h, w), (0, 0))
    overlap = float(inside.mean())
    masked = np.where(inside, y_full, 0.5).astype(np.float32)
    top, left, ch, cw = informative_crop(masked, cfg.crop)
    y_crop = y_full[top : top + ch, left : left + cw]
    margin = size // 2
    sigma = max(estimate_noise_sigma(np.asarray(blurry, dtype=np.float32)), 0.002)
    kernel_corr = torch.zeros(size, size, dtype=torch.float64)
    ecc_refined = best_cc
    valid = np.zeros_like(y_crop, dtype=bool)
    for round_ in range(cfg.rounds):
        if round_ > 0:  # 4: register against the reference blurred like the photo
            conv = ops.to_convolution(kernel_corr).numpy()
            crop_to_ref = matrix.copy()
            crop_to_ref[:, 2] += matrix[:, :2] @ np.array([left, top], dtype=np.float64)
            refined, cc = _ecc(y_crop, _blur(r_full, conv), crop_to_ref, 1.0)
            if cc > 0:
                matrix = refined.copy()
                matrix[:, 2] -= refined[:, :2] @ np.array([left, top], dtype=np.float64)
                ecc_refined = cc
        x, inside = _warp(r_full, matrix, (ch + 2 * margin, cw + 2 * margin),
                          (left - margin, top - margin))
        valid = cv2.erode(inside.astype(np.uint8), np.ones((size, size), np.uint8))
        valid = valid[margin : margin + ch, margin : margin + cw] > 0
        if valid.sum() < 64:
            break
        x = _exposure_matched(x, y_crop, valid, margin)
        if round_ > 0 and cfg.flow_sigma > 0:
            x = _flow_aligned(x, y_crop, ops.to_convolution(kernel_corr).numpy(), margin,
                              cfg.flow_sigma)
        kernel_corr = solve_kernel(torch.from_numpy(y_crop).double(), torch.from_numpy(x).double(),
                                   torch.from_numpy(valid), size, ridge=cfg.ridge,
                                   iterations=cfg.iterations, robust_passes=cfg.robust_passes)
        kernel_corr = ops.project_kernel(kernel_corr, rel_threshold=cfg.threshold)

    # 5: does one kernel explain the crop?
    misfit, explained = math.inf, 0.0
    if valid.sum() >= 64 and float(kernel_corr.sum()) > 0:
        conv = ops.to_convolution(kernel_corr).numpy()
        predicted = _blur(x, conv)[margin : margin + ch, margin : margin + cw]
        predicted = _exposure_matched(predicted, y_crop, valid)  # blurred: an unbiased gain
        residual = (y_crop - predicted)[valid]
        misfit = float(np.median(np.abs(residual)) / 0.6745 / sigma)
        centred = y_crop[valid] - y_crop[valid].mean()
        explained = float(1 - (residual**2).sum() / max((centred**2).sum(), 1e-12))
    fits = misfit <= cfg.max_misfit and explained >= cfg.min_explained
    kernel = (ops.center_kernel(ops.to_convolution(kernel_corr))[0]
              if float(kernel_corr.sum()) > 0 else kernel_corr)
    details = {
        "search_ncc": round(candidates[0][0], 4), "ecc": round(ecc_refined, 4),
        "misfit": round(misfit, 3) if math.isfinite(misfit) else None,
        "explained": round(explained, 4), "overlap": round(overlap, 3),
        "crop_box": [top, left, ch, cw], "kernel_size": size, "noise_sigma": round(sigma, 5),
        "matrix": [[round(float(v), 5) for v in row] for row in matrix],
        "seconds": round(time.perf_counter() - started, 3), "config": asdict(cfg),
    }
    return ReferenceKernel(kernel.numpy().astype(np.float64), matrix, fits, details)


def deblur_with_reference(
    blurry: np.ndarray, reference: np.ndarray, cfg: ReferenceKernelConfig | None = None, *,
    device: str | torch.device = "cpu",
) -> ReferenceOutput:
    """Deblur ``blurry`` with the kernel measured against ``reference``.

    Args:
        blurry: ``H × W × C`` float in [0, 1].
        reference: Sharp photo of the same scene (see :func:`estimate_kernel_from_reference`).
        cfg: Kernel-estimation settings.
        device: Where the non-blind solve runs.

    Returns:
        The :class:`ReferenceOutput`; its image is None when the kernel does not fit.

    Shape:
        - blurry: :math:`(H, W, C)`; output image: :math:`(H, W, C)`
    """
    from deblurcli.deconv import deconvolve, noise_weight
    from deblurcli.io import hwc_to_tensor, tensor_to_hwc
    from deblurcli.optim.fast import FastConfig

    cfg = cfg or ReferenceKernelConfig()
    pixels = np.asarray(blurry, dtype=np.float32)
    estimate = estimate_kernel_from_reference(pixels, reference, cfg)
    if not estimate.fits:
        return ReferenceOutput(None, estimate)
    started = time.perf_counter()
    rule = FastConfig()
    sigma = estimate.details["noise_sigma"]
    weight = max(rule.min_weight, rule.weight_factor * noise_weight(sigma))
    planes = hwc_to_tensor(pixels).to(device)
    kernel = torch.from_numpy(estimate.kernel).float()
    restored = deconvolve(planes, kernel, method="hyperlaplacian", weight=weight)
    registration = (0.0, 0.0)
    if cfg.register:
        restored, registration = ops.register_to_kernel(restored, kernel)
    image = tensor_to_hwc(restored)
    estimate.details["registration"] = [round(v, 3) for v in registration]
    estimate.details["nonblind_weight"] = weight
    estimate.details["deconvolution_seconds"] = round(time.perf_counter() - started, 3)
    return ReferenceOutput(np.clip(image, 0, 1).astype(np.float32), estimate)
