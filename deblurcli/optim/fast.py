"""The practical preset: VDIP's variational model, coarse to fine, then a non-blind solve.

The published method fits a 2.4 M-parameter generator to the whole image for 5,500 Adam steps
(about five hours per 255² image on one CPU core). This path keeps the *model* of VDIP-Sparse —
Gaussian likelihood, mean-field Gaussian posterior q(x) with per-pixel mean μ and std σ, log
penalty on horizontal/vertical differences bounded by ½ξ(∂x)² with ξ = 1/E_q[(∂x)²] in closed
form, Gaussian kernel prior — and changes how it is solved:

1. **Kernel estimation on the most informative crop**: the luma window (at most ``crop`` px per
   side) with the most edge energy, clipped highlights and shadows excluded.
2. **Coarse-to-fine**: crop and kernel are downscaled by ``ratio`` per level, from a kernel of
   about ``min_kernel`` px up to full size; each level starts from the previous kernel, which is
   re-centred between levels.
3. **q(x) per pixel instead of a generator** (``image_model="pixels"``, the default for
   vdip-sparse and its σ ≡ 0 ablation dip-sparse): every sweep updates μ (preconditioned
   conjugate gradients on the Gaussian bound), σ² (diagonal of the posterior precision), ξ, the
   noise precision and the kernel (normal equations on the strongest latent edges, FFT
   operators), then projects the kernel on the simplex. Measured on Levin09, a narrow
   16-channel generator fitted by Adam barely moved the kernel within a CPU budget of minutes;
   it remains available (``image_model="generator"``, the default for dip and the other
   variants, with free kernel logits, early stopping, FFT blur and bf16 on CUDA).
4. **The full-resolution image** comes from :func:`deblurcli.deconv.deconvolve` with the
   estimated kernel, on every colour channel, tiled for large photos (bounded memory).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from deblurcli.archs.dip_nets import SkipNetConfig
from deblurcli.io import hwc_to_tensor, tensor_to_hwc
from deblurcli.optim import ops
from deblurcli.optim.vdip import _TRAITS, METHODS, BlindDeconvolutionError, VDIPConfig, fit

__all__ = ["FastConfig", "FastResult", "LevelInfo", "fast_fit", "informative_crop"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastConfig:
    """The fast preset (defaults measured on Levin09, see the module docstring)."""

    method: str = "vdip-sparse"
    """One of :data:`deblurcli.optim.vdip.METHODS`."""
    kernel_size: tuple[int, int] = (31, 31)
    """Requested kernel size ``(h, w)``, odd."""
    kernel_margin: int = 6
    """Extra rows/columns of kernel support during estimation (room to drift). The returned
    kernel is cropped back to ``kernel_size`` after centring (renormalised), with a warning when
    more than ``SPILL_WARNING`` of its mass lay in the margin (the blur is larger than asked)."""
    image_model: str = "auto"
    """``pixels``: per-pixel Gaussian q(x) (μ, σ) solved by closed-form variational updates;
    ``generator``: the narrow skip-net fitted by Adam; ``auto``: pixels for the sparse-prior
    methods (vdip-sparse, dip-sparse), generator for the others."""
    crop: int = 512
    """Largest side of the kernel-estimation crop (0: the whole image). Measured on two
    1024² regions of a 12 MP photo with a 31-px shake (blurred 31.5 and 39.7 dB): 256 px gave
    30.3 and 38.1 dB (worse than the input), 512 px gave 34.7 and 40.0 dB, for about 3× the
    estimation time (~100 s). Images up to 512 px (Levin09) are used whole either way."""
    ratio: float = math.sqrt(2)
    """Scale factor between pyramid levels."""
    min_kernel: int = 5
    """Kernel side at the coarsest level (about)."""
    # --- pixels (variational coordinate updates) ---
    alpha: float = 0.5
    """Weight of the log-sparse gradient prior, ρ(s) = α·log|s| (ξ = α / E[s²])."""
    outer: int = 30
    """Variational sweeps (x, σ, ξ, noise, kernel) per level."""
    cg: int = 15
    """Conjugate-gradient iterations of each x-step and k-step."""
    grad_quantile: float = 0.9
    """The kernel step uses only the strongest ``1 - grad_quantile`` of the latent gradients."""
    kernel_ridge: float = 1e-3
    """Gaussian kernel prior (ridge) weight in the k-step."""
    variance_weight: float = 0.0
    """Weight of the posterior-variance term E_q in the k-step (1 = the full expectation)."""
    beta_max: float = 1e6
    """Upper bound of the estimated noise precision (1/σ_n²)."""
    # --- generator (Adam) ---
    width: int = 16
    """Channels of the narrow generator (down and up)."""
    skip: int = 4
    """Skip channels of the narrow generator."""
    prefit: int = 50
    """Pre-fit steps per level (μ → previous estimate, σ → 0, k → previous kernel)."""
    iters: int = 150
    """Variational (or MSE for dip) steps per level, before early stopping."""
    ssim_iters: int = 0
    """Extra ``1 − SSIM`` steps per level (the paper's third phase); 0 in the fast preset."""
    lam: float | None = None
    """KL weight; None: 1e-3 (sparse), 1e-5 (extreme)."""
    lr_image: float = 1e-2
    """Adam learning rate of the generator."""
    lr_kernel: float = 5e-2
    """Adam learning rate of the kernel logits."""
    patience: int = 30
    """Early-stopping window (steps) on the data term; 0 disables."""
    tol: float = 2e-3
    """Relative data-term improvement below which a level stops."""
    blur: str = "auto"
    """Forward operator of the generator path: conv, fft or auto (FFT above 15×15)."""
    bf16: bool = True
    """bfloat16 autocast for the generator on CUDA (ignored on CPU and in the pixel model)."""
    # --- both ---
    nonblind: str = "hyperlaplacian"
    """Final non-blind solver (:data:`deblurcli.deconv.METHODS`)."""
    nonblind_params: dict[str, float] = field(default_factory=lambda: {"weight": 3e-4})
    """Keyword parameters of the final solver."""
    kernel_threshold: float = 0.05
    """Kernel entries below this fraction of the peak are zeroed after every kernel update."""
    variants: tuple[tuple[tuple[str, object], ...], ...] = ()
    """Extra kernel estimates with these field overrides (e.g. ``(("alpha", 1.0),)``); with any,
    the kernel closest to all others (medoid under the shift-invariant kernel distance) wins.
    Blind estimates fail in idiosyncratic ways, so agreement is a usable no-reference vote."""
    estimation_threads: int | None = 1
    """CPU intra-op threads while estimating the kernel (None: leave torch's setting). The
    crop-sized FFTs gain nothing from a second thread, and on a busy 2-core machine two threads
    made the estimate 3× slower (58 s vs 161 s wall on a Levin image); the final full-size
    solve uses the caller's setting."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BlindDeconvolutionError(f"unknown method {self.method!r}")
        if any(s % 2 == 0 or s < 3 for s in self.kernel_size):
            raise BlindDeconvolutionError(f"kernel size must be odd ≥ 3, got {self.kernel_size}")
        if self.image_model not in ("auto", "pixels", "generator"):
            raise BlindDeconvolutionError("image_model must be auto, pixels or generator")
        if self.resolved_image_model == "pixels" and self.method not in PIXEL_METHODS:
            raise BlindDeconvolutionError(
                f"the pixel image model supports {', '.join(PIXEL_METHODS)}, not {self.method}"
            )

    @property
    def resolved_image_model(self) -> str:
        """``pixels`` or ``generator`` after resolving ``auto``."""
        if self.image_model != "auto":
            return self.image_model
        return "pixels" if self.method in PIXEL_METHODS else "generator"


PIXEL_METHODS = tuple(m for m in METHODS if _TRAITS[m][1] == "sparse")
"""Methods the per-pixel variational solver implements, the sparse-prior ones (``vdip-sparse``
with σ, and ``dip-sparse``, its σ ≡ 0 MAP ablation)."""


@dataclass
class LevelInfo:
    """Progress report of the fast path: one step of one pyramid level."""

    level: int
    """0 = coarsest."""
    levels: int
    """Number of levels."""
    step: int
    """Step (generator) or sweep (pixels) within the level, 0-based."""
    steps: int
    """Steps or sweeps planned for the level (early stopping may end it sooner)."""
    loss: float
    """Current loss (generator) or data misfit per pixel (pixels)."""


@dataclass
class FastResult:
    """Outcome of :func:`fast_fit`."""

    image: np.ndarray
    """Deblurred full image, ``H×W×C`` float32 in [0, 1]."""
    kernel: np.ndarray
    """Kernel in true-convolution orientation, centred, sum 1 (``h×w`` float64)."""
    crop_box: tuple[int, int, int, int]
    """``(top, left, height, width)`` of the kernel-estimation crop."""
    levels: list[dict[str, object]]
    """Per level: scale, image and kernel size, steps run, seconds."""
    warnings: list[str]
    """Warnings (delta kernel, small image, ...)."""
    seconds: float
    """Wall-clock time."""
    collapse: tuple[str, ...] = ()
    """Degenerate solutions detected (``"delta-kernel"``)."""


def _luma(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[2] == 1:
        return pixels[..., 0]
    return pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def informative_crop(luma: np.ndarray, size: int, *, margin: int = 0) -> tuple[int, int, int, int]:
    """The ``size×size`` window with the most usable edge energy (saturation excluded).

    Edge energy is the gradient magnitude of the lightly smoothed luma; pixels within a few px
    of clipped highlights (≥ 0.98) or crushed shadows (≤ 0.02) do not count, because a linear
    blur model does not hold there. The search runs on a grid of stride ``size/8``.

    Returns:
        ``(top, left, height, width)``; the whole image when it is not larger than ``size``.
    """
    h, w = luma.shape
    if size <= 0 or (h <= size and w <= size):
        return 0, 0, h, w
    ch, cw = min(size, h), min(size, w)
    t = torch.from_numpy(np.ascontiguousarray(luma, dtype=np.float32))[None, None]
    step = max(1, min(ch, cw) // 8)
    factor = max(1, step // 4)  # work on a downscaled map for speed on large photos
    small = F.avg_pool2d(t, factor) if factor > 1 else t
    gy = small[..., 1:, :-1] - small[..., :-1, :-1]
    gx = small[..., :-1, 1:] - small[..., :-1, :-1]
    energy = torch.sqrt(gy * gy + gx * gx)
    bad = ((small > 0.98) | (small < 0.02)).float()
    bad = F.max_pool2d(bad, 5, stride=1, padding=2)[..., :-1, :-1] > 0
    energy = torch.where(bad, torch.zeros_like(energy), energy)
    wh, ww = max(1, ch // factor), max(1, cw // factor)
    sums = F.avg_pool2d(energy, (min(wh, energy.shape[-2]), min(ww, energy.shape[-1])),
                        stride=max(1, step // factor))
    idx = int(torch.argmax(sums.flatten()))
    r, c = divmod(idx, sums.shape[-1])
    top = min(r * max(1, step // factor) * factor, h - ch)
    left = min(c * max(1, step // factor) * factor, w - cw)
    return top, left, ch, cw


def _resize(img: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)


def _plan(cfg: FastConfig, shape: tuple[int, int], ksize: tuple[int, int]
          ) -> list[tuple[float, tuple[int, int], tuple[int, int]]]:
    """Levels as ``(scale, image size, kernel size)``, coarsest first."""
    kh, kw = ksize
    n = max(1, 1 + int(math.floor(math.log(max(kh, kw) / cfg.min_kernel) / math.log(cfg.ratio))))
    plan = []
    for i in reversed(range(n)):
        s = cfg.ratio ** (-i)
        ksz = (ops.odd(kh * s), ops.odd(kw * s))
        isz = (max(16, round(shape[0] * s)), max(16, round(shape[1] * s)))
        plan.append((s, isz, ksz))
    return plan


# ---------------------------------------------------------------------------------------------
# Pixel image model: closed-form variational updates (the VDIP-Sparse ELBO with q(x) per pixel)
# ---------------------------------------------------------------------------------------------


def _dh_t(d: Tensor) -> Tensor:
    """Adjoint of :func:`ops.diff_h`."""
    return F.pad(d, (1, 0)) - F.pad(d, (0, 1))


def _dv_t(d: Tensor) -> Tensor:
    """Adjoint of :func:`ops.diff_v`."""
    return F.pad(d, (0, 0, 1, 0)) - F.pad(d, (0, 0, 0, 1))


def _pcg(apply: Callable[[Tensor], Tensor], b: Tensor, x: Tensor, precond: Tensor,
         iters: int) -> Tensor:
    """Jacobi-preconditioned conjugate gradients for a symmetric positive definite operator."""
    r = b - apply(x)
    z = precond * r
    p = z.clone()
    rz = (r * z).sum()
    for _ in range(iters):
        ap = apply(p)
        step = rz / (p * ap).sum().clamp_min(1e-30)
        x = x + step * p
        r = r - step * ap
        z = precond * r
        rz_next = (r * z).sum()
        p = z + (rz_next / rz.clamp_min(1e-30)) * p
        rz = rz_next
    return x


class _Grid:
    """Real FFTs on a fixed grid; valid correlation ``A`` and its adjoints by products."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape

    def f(self, t: Tensor) -> Tensor:
        return torch.fft.rfft2(t, s=self.shape)

    def i(self, t: Tensor) -> Tensor:
        return torch.fft.irfft2(t, s=self.shape)


def _vb_level(y: Tensor, k: Tensor, cfg: FastConfig, *, with_sigma: bool,
              report: Callable[[int, float], None]) -> tuple[Tensor, Tensor]:
    """Variational sweeps on one level; returns the kernel (correlation orientation) and μ.

    Model (``specs/vdip.md`` §3 with q(x) = Π N(μ_i, s_i²) per pixel instead of a generator):
    ``y = A(x, k) + n``, n ~ N(0, 1/β); log prior α·log|∂x| on horizontal and vertical
    differences, bounded by ½ξ(∂x)² with ξ = α / E_q[(∂x)²] recomputed every sweep. One sweep:
    x-step (PCG on βAᵀA + ∂ᵀΞ∂), diagonal posterior variance s² = 1/diag(precision) (0 for the
    σ ≡ 0 MAP ablation), noise precision β = N / E_q‖y − A(x,k)‖², kernel step (PCG on the
    gradient-domain normal equations with the strongest latent edges, ridge, variance term),
    projection on the simplex.

    Shape:
        - y: :math:`(H, W)`; k: :math:`(h, w)`; returned μ: :math:`(H+h-1, W+w-1)`
    """
    kh, kw = k.shape
    ho, wo = y.shape
    hl, wl = ho + kh - 1, wo + kw - 1
    grid = _Grid((hl, wl))
    top, left = (kh - 1) // 2, (kw - 1) // 2
    mu = F.pad(y[None, None], (left, kw - 1 - left, top, kh - 1 - top), mode="replicate")[0, 0]
    s2 = torch.full_like(mu, 1e-4 if with_sigma else 0.0)
    beta = 1e3
    y_f = grid.f(y)
    ones_f = grid.f(torch.ones_like(y))
    # Gradient-domain observations for the kernel step, cropped to one common grid.
    y_g = torch.stack([ops.diff_h(y)[:-1, :], ops.diff_v(y)[:, :-1]])
    hg, wg = y_g.shape[-2:]
    grid_g = _Grid((hl - 1, wl - 1))
    y_gf = grid_g.f(y_g)
    ones_gf = grid_g.f(torch.ones(hg, wg, dtype=y.dtype, device=y.device))
    n_obs = y.numel()
    for sweep in range(cfg.outer):
        k_f = grid.f(k)
        diag_a = grid.i(ones_f * grid.f(k * k)).clamp_min(0)
        e_h = ops.diff_h(mu).square() + s2[:, 1:] + s2[:, :-1]
        e_v = ops.diff_v(mu).square() + s2[1:, :] + s2[:-1, :]
        xi_h = cfg.alpha / (e_h.clamp_max(1.0) + 1e-8)
        xi_v = cfg.alpha / (e_v.clamp_max(1.0) + 1e-8)

        def precision(g: Tensor, k_f: Tensor = k_f, xi_h: Tensor = xi_h, xi_v: Tensor = xi_v,
                      beta: float = beta) -> Tensor:
            ag = grid.i(grid.f(g) * k_f.conj())[:ho, :wo]
            return (beta * grid.i(grid.f(ag) * k_f) + _dh_t(xi_h * ops.diff_h(g))
                    + _dv_t(xi_v * ops.diff_v(g)))

        diag_p = (beta * diag_a + F.pad(xi_h, (1, 0)) + F.pad(xi_h, (0, 1))
                  + F.pad(xi_v, (0, 0, 1, 0)) + F.pad(xi_v, (0, 0, 0, 1)))
        mu = _pcg(precision, beta * grid.i(y_f * k_f), mu, 1.0 / diag_p, cfg.cg).clamp(-0.5, 1.5)
        if with_sigma:
            s2 = 1.0 / diag_p
        residual = grid.i(grid.f(mu) * k_f.conj())[:ho, :wo] - y
        spread = grid.i(grid.f(s2) * ones_f.conj())[:kh, :kw]
        misfit = float(residual.square().sum() + (spread * k * k).sum())
        beta = min(n_obs / max(misfit, 1e-12), cfg.beta_max)
        # Kernel step on the strongest edges of the latent image.
        g = torch.stack([ops.diff_h(mu)[:-1, :], ops.diff_v(mu)[:, :-1]])
        if cfg.grad_quantile > 0:
            mag = g.square().sum(0).sqrt()
            sample = mag.flatten()[:: max(1, mag.numel() // 20000)]
            g = g * (mag >= torch.quantile(sample, cfg.grad_quantile))
        g_f = grid_g.f(g)
        var = 0.0
        if with_sigma and cfg.variance_weight > 0:
            v = torch.stack([(s2[:, 1:] + s2[:, :-1])[:-1, :], (s2[1:, :] + s2[:-1, :])[:, :-1]])
            var = cfg.variance_weight * grid_g.i(grid_g.f(v) * ones_gf.conj())[..., :kh, :kw].sum(0)
        rhs = grid_g.i(g_f * y_gf.conj())[..., :kh, :kw].sum(0)

        def normal(kk: Tensor, g_f: Tensor = g_f, var: Tensor | float = var) -> Tensor:
            ak = grid_g.i(g_f * grid_g.f(kk).conj())[..., :hg, :wg]
            back = grid_g.i(g_f * grid_g.f(ak).conj())[..., :kh, :kw].sum(0)
            return back + var * kk + cfg.kernel_ridge * kk

        energy = float(g.square().sum()) * hg * wg / ((hl - 1) * (wl - 1))
        k_pre = 1.0 / (var + energy + cfg.kernel_ridge) * torch.ones_like(k)
        k = ops.project_kernel(_pcg(normal, rhs, k, k_pre, cfg.cg),
                               rel_threshold=cfg.kernel_threshold)
        report(sweep, misfit / n_obs)
    return k, mu


# ---------------------------------------------------------------------------------------------
# Generator image model: the narrow skip-net, Adam (deblurcli.optim.vdip.fit per level)
# ---------------------------------------------------------------------------------------------


def _net_for(cfg: FastConfig, padded_side: int) -> SkipNetConfig:
    scales = 5
    while 2**scales + 1 > padded_side and scales > 1:
        scales -= 1
    return SkipNetConfig(
        down_channels=(cfg.width,) * scales, up_channels=(cfg.width,) * scales,
        skip_channels=(cfg.skip,) * scales, nonlocal_from=None,
    )


def _level_config(cfg: FastConfig, ksz: tuple[int, int], isz: tuple[int, int]) -> VDIPConfig:
    _, prior, _ = _TRAITS[cfg.method]
    lam = cfg.lam if cfg.lam is not None else (1e-5 if prior == "extreme" else 1e-3)
    padded = min(isz[0] + ksz[0] - 1, isz[1] + ksz[1] - 1)
    dip = cfg.method == "dip"
    return VDIPConfig(
        method=cfg.method, kernel_size=ksz, iters=cfg.iters + cfg.ssim_iters, prefit=cfg.prefit,
        ssim_from=cfg.iters, lam=lam, lam_every=10**9, kernel_prior_weight=0.0,
        lr_image=cfg.lr_image, lr_kernel=cfg.lr_kernel, milestones=(),
        reg_noise=1e-3 if dip else 0.0, input_channels=8 if dip else 3,
        net=_net_for(cfg, padded), kernel_param="logits",
        blur=cfg.blur,  # type: ignore[arg-type]
        bf16=cfg.bf16, min_side=16, patience=cfg.patience, tol=cfg.tol,
        extreme_window=min(35, padded - 2) if prior == "extreme" else 35,
    )


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def fast_fit(
    pixels: np.ndarray,
    cfg: FastConfig,
    *,
    on_step: Callable[[LevelInfo], None] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> FastResult:
    """Blind deconvolution of one photo with the fast preset.

    Args:
        pixels: Blurry image, ``H×W×C`` float in [0, 1] (C = 1 or 3), any size.
        cfg: The preset.
        on_step: Progress callback (level and step within it).
        seed: Seeds the generator path (level ``i`` uses ``seed + i``); the pixel model is
            deterministic.
        device: Where the kernel estimation and the non-blind solve run.

    Returns:
        The :class:`FastResult`.

    Raises:
        BlindDeconvolutionError: bad layout, or an image too small for the kernel.

    Shape:
        - pixels: :math:`(H, W, C)`; result image: :math:`(H, W, C)`
    """
    from deblurcli.deconv import deconvolve
    from deblurcli.engine.device import resolve_device

    started = time.perf_counter()
    dev = resolve_device(device) if isinstance(device, str) else device
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise BlindDeconvolutionError(f"pixels must be H×W×1 or H×W×3, got {pixels.shape}")
    luma = _luma(pixels)
    kh, kw = (s + cfg.kernel_margin for s in cfg.kernel_size)
    need = max(2 * kh, 2 * kw, 32)
    if min(luma.shape) < need:
        raise BlindDeconvolutionError(
            f"image {luma.shape[1]}×{luma.shape[0]} is too small for a {kh}×{kw} kernel "
            f"(need at least {need} px per side)"
        )
    box = informative_crop(luma, max(cfg.crop, 2 * need) if cfg.crop else 0)
    top, left, ch, cw = box
    y_full = torch.from_numpy(np.ascontiguousarray(luma[top : top + ch, left : left + cw]))
    y_full = y_full[None, None].float().to(dev)
    plan = _plan(cfg, (ch, cw), (kh, kw))
    model = cfg.resolved_image_model
    threads = torch.get_num_threads()
    if cfg.estimation_threads and dev.type == "cpu":
        torch.set_num_threads(min(threads, cfg.estimation_threads))
    try:
        kernel, levels = _estimate(y_full, plan, cfg, model, dev, seed, on_step)
        if cfg.variants:
            kernel, levels = _vote(kernel, levels, y_full, (ch, cw), cfg, dev, seed, on_step)
    finally:
        torch.set_num_threads(threads)
    warnings: list[str] = []
    kernel, _ = ops.center_kernel(kernel)
    kernel, spill = _crop_kernel(kernel, cfg.kernel_size)
    if spill > SPILL_WARNING:
        warnings.append(
            f"{spill:.0%} of the estimated kernel lay outside the requested "
            f"{cfg.kernel_size[0]}x{cfg.kernel_size[1]} and was cut off; the blur may be larger: "
            "try a larger --kernel-size")
    collapse = ("delta-kernel",) if float(kernel.max()) > 0.9 else ()
    if collapse:
        warnings.append(f"kernel collapsed to a near-delta (max {float(kernel.max()):.2f}); "
                        "the image may stay blurry; try a larger --kernel-size")
    planes = hwc_to_tensor(pixels).to(dev)
    restored = deconvolve(planes, kernel, method=cfg.nonblind, **cfg.nonblind_params)
    image = tensor_to_hwc(restored).astype(np.float32)
    for message in warnings:
        log.warning(message)
    return FastResult(
        image=image, kernel=kernel.double().cpu().numpy(), crop_box=box, levels=levels,
        warnings=warnings, seconds=time.perf_counter() - started, collapse=collapse,
    )


SPILL_WARNING = 0.05
"""Kernel mass cut off with the estimation margin above which a warning says so."""


def _crop_kernel(kernel: Tensor, size: tuple[int, int]) -> tuple[Tensor, float]:
    """Crop a centred kernel to ``size`` and renormalise; also return the mass cut off.

    Shape:
        - kernel: :math:`(h + m, w + m)`; output: :math:`(h, w)`.
    """
    kh, kw = kernel.shape
    h, w = min(size[0], kh), min(size[1], kw)
    top, left = (kh - h) // 2, (kw - w) // 2
    inner = kernel[top : top + h, left : left + w]
    total = float(inner.sum())
    spill = 1.0 - total / float(kernel.sum())
    if total <= 0:  # nothing inside: keep a delta rather than divide by zero
        inner = torch.zeros_like(inner)
        inner[h // 2, w // 2] = 1.0
        return inner, spill
    return inner / total, spill


def _vote(kernel: Tensor, levels: list[dict[str, object]], y_full: Tensor, shape: tuple[int, int],
          cfg: FastConfig, dev: torch.device, seed: int,
          on_step: Callable[[LevelInfo], None] | None) -> tuple[Tensor, list[dict[str, object]]]:
    """Estimate again with every variant; keep the medoid kernel."""
    from dataclasses import replace

    from deblurcli.metrics import kernel_error

    kernels, stats = [kernel], [levels]
    for variant in cfg.variants:
        vcfg = replace(cfg, variants=(), **dict(variant))  # type: ignore[arg-type]
        ksz = tuple(s + vcfg.kernel_margin for s in vcfg.kernel_size)
        plan = _plan(vcfg, shape, ksz)  # type: ignore[arg-type]
        k, lv = _estimate(y_full, plan, vcfg, vcfg.resolved_image_model, dev, seed, on_step)
        kernels.append(k)
        stats.append(lv)
    arrays = [k.double().cpu().numpy() for k in kernels]
    cost = [sum(kernel_error(a, b) for b in arrays) for a in arrays]
    best = int(np.argmin(cost))
    summary = [{"variant": dict(v) if i else {}, "levels": lv, "distance": round(c, 6),
                "chosen": i == best}
               for i, (v, lv, c) in enumerate(zip(((),) + cfg.variants, stats, cost, strict=True))]
    return kernels[best], summary  # type: ignore[return-value]


def _estimate(y_full: Tensor, plan: list[tuple[float, tuple[int, int], tuple[int, int]]],
              cfg: FastConfig, model: str, dev: torch.device, seed: int,
              on_step: Callable[[LevelInfo], None] | None
              ) -> tuple[Tensor, list[dict[str, object]]]:
    """Coarse-to-fine kernel estimate (convolution orientation) and per-level statistics."""
    kernel: Tensor | None = None  # convolution orientation between levels
    estimate: Tensor | None = None
    levels: list[dict[str, object]] = []
    for i, (scale, isz, ksz) in enumerate(plan):
        y = _resize(y_full, isz)
        t0 = time.perf_counter()
        steps = cfg.outer if model == "pixels" else cfg.prefit + cfg.iters + cfg.ssim_iters

        def report(step: int, loss: float, i: int = i, steps: int = steps) -> None:
            if on_step is not None:
                on_step(LevelInfo(level=i, levels=len(plan), step=step, steps=steps, loss=loss))

        if model == "pixels":
            if kernel is None:
                r = torch.arange(ksz[0], device=dev) - (ksz[0] - 1) / 2
                c = torch.arange(ksz[1], device=dev) - (ksz[1] - 1) / 2
                k0 = torch.exp(-(r[:, None] ** 2 + c[None, :] ** 2) / 2)
                k_corr = k0 / k0.sum()
            else:
                k_corr = ops.to_convolution(ops.resize_kernel(kernel, ksz))
            k_corr, _ = _vb_level(y[0, 0], k_corr, cfg, with_sigma=cfg.method == "vdip-sparse",
                                  report=report)
            kernel = ops.to_convolution(ops.center_kernel(k_corr)[0])
            n_steps = cfg.outer
        else:
            init_image = None if estimate is None else _resize(estimate, isz)
            result = fit(y, _level_config(cfg, ksz, isz), seed=seed + i, device=dev,
                         init_kernel=kernel, init_image=init_image,
                         on_step=lambda info, report=report: report(info.step, info.loss))
            kernel = ops.project_kernel(result.kernel, rel_threshold=cfg.kernel_threshold)
            estimate = result.image.to(dev)
            n_steps = len(result.history)
        levels.append({
            "scale": round(scale, 4), "image": list(isz), "kernel": list(ksz),
            "steps": n_steps, "seconds": round(time.perf_counter() - t0, 2),
        })
    assert kernel is not None
    return kernel, levels

