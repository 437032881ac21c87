"""The practical preset: VDIP's variational model, coarse to fine, then a non-blind solve.

The published method fits a 2.4 M-parameter generator to the whole image for 5,500 Adam steps
(about five hours per 255² image on one CPU core). This path keeps the *model* of VDIP-Sparse —
Gaussian likelihood, mean-field Gaussian posterior q(x) with per-pixel mean μ and std σ, log
penalty on horizontal/vertical differences bounded by ½ξ(∂x)² with ξ = 1/E_q[(∂x)²] in closed
form, Gaussian kernel prior — and changes how it is solved:

1. **Kernel estimation on the most informative crop**: the luma window (at most ``crop`` px per
   side) with the most edge energy, clipped highlights and shadows excluded.
2. **Coarse-to-fine**: crop and kernel are downscaled by ``ratio`` per level, from a kernel of
   about ``min_kernel`` px up to ``top_scale`` (all but the full-resolution level); each level
   starts from the previous kernel, which is re-centred between levels. The automatic kernel
   size comes from the same sweeps on the coarse levels (:func:`probe_kernel_size`), and the
   estimate starts from the probe's kernel where the probe stopped (``reuse_probe``).
3. **q(x) per pixel instead of a generator** (``image_model="pixels"``, the default for
   vdip-sparse and its σ ≡ 0 ablation dip-sparse): every sweep updates μ (preconditioned
   conjugate gradients on the Gaussian bound), σ² (diagonal of the posterior precision), ξ, the
   noise precision and the kernel (normal equations on the strongest latent edges, FFT
   operators), then projects the kernel on the simplex. Measured on Levin09, a narrow
   16-channel generator fitted by Adam barely moved the kernel within a CPU budget of minutes;
   it remains available (``image_model="generator"``, the default for dip and the other
   variants, with free kernel logits, early stopping, FFT blur and bf16 on CUDA).
4. **Refinement at full resolution** (``refine_iters``, pixel model): the kernel, resampled
   to full size, goes through the kernel step against the MAP latent of the hyper-Laplacian
   solver instead of the variational mean, whose smoothness leaves the kernel a blob; the
   latent's prior weight falls over the alternations (``refine_start``). Optionally
   (``keep_unrefined``) the unrefined kernel goes through steps 5–7 as well, and the ending
   that explains the photo better is kept.
5. **The kernel measured again on the photo** (``photo_solve``): non-negative least squares on
   the gradients over the photo's centre, against its luma restored with the estimated kernel
   at a weaker prior (a sharper latent).
6. **The full-resolution image** comes from :func:`deblurcli.deconv.deconvolve` with the
   estimated kernel, on every colour channel, tiled for large photos (bounded memory).
7. **The finishing network** (``finish``) cleans the restoration of what a slightly wrong
   kernel leaves; its output, a sharper latent still, is what the kernel is measured against
   once more (``finish_resolve``) before a last restoration and finish.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from deblurcli.archs.dip_nets import SkipNetConfig
from deblurcli.deconv import fast_fft_size
from deblurcli.degrade import convolve
from deblurcli.errors import UsageError
from deblurcli.io import hwc_to_tensor, tensor_to_hwc
from deblurcli.optim import ops
from deblurcli.optim.vdip import _TRAITS, METHODS, BlindDeconvolutionError, VDIPConfig, fit

__all__ = ["FastConfig", "FastResult", "LevelInfo", "fast_fit", "informative_crop"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


DEFAULT_FINISH = "nafnet-finish@cpu-v2,nafnet-finish@cpu-v3"
"""The default finishing networks (``FastConfig.finish``): the mean of the two."""
RESTART_FINISH = "nafnet-finish@cpu-v3"
"""The finishing network of a restart when ``finish`` is the default (``restart_finish``)."""


@dataclass(frozen=True)
class FastConfig:
    """The fast preset (defaults measured on Levin09, see the module docstring)."""

    method: str = "vdip-sparse"
    """One of :data:`deblurcli.optim.vdip.METHODS`."""
    kernel_size: tuple[int, int] | None = None
    """Kernel size ``(h, w)``, odd; None: estimated from the photo (:func:`probe_kernel_size`)."""
    max_kernel: int = 61
    """Canvas of the automatic size's probe: the largest blur it measures (also bounded by the
    photo's size)."""
    size_factor: float = 2.0
    """The automatic size is ``odd(size_factor·extent + 5)``: room around the blur helps the
    estimate (on four ``shake`` photos a canvas of 2.5× the blur's extent gave 23.7 dB mean,
    one of 1.25× 22.1)."""
    crops: int = 2
    """Kernel estimates on this many informative crops (ranked, overlapping at most half); the
    others' distance to the first crop's kernel is reported (:attr:`FastResult.crop_distance`;
    informational: on 40 ``shake`` photos a disagreement above 0.6 came with a gain on 10 of
    the 11 photos it flagged). Which kernel is used is ``kernel_choice``."""
    kernel_choice: str = "misfit"
    """``first``: the first (most informative) crop's kernel; ``misfit``: every crop's kernel
    restores the photo and the one whose restoration, blurred again, best reproduces the photo
    (lowest :func:`reblur_misfit`, measured on at most ``choice_side``² central pixels) wins.
    On the first 24 ``shake`` photos ``misfit`` gave 23.34 dB against 23.24 (two photos the
    first crop's kernel failed on restored instead of returned unchanged); Levin09 31.73
    against 30.83."""
    choice_side: int = 1024
    """Side of the central region the kernel choice restores and compares (0: whole photo)."""
    size_probe_scale: float = 0.5
    """The automatic size runs the coarse-to-fine estimate on a ``max_kernel`` canvas up to
    this scale and measures the extent of the kernel found there."""
    reuse_probe: bool = True
    """An estimate on a crop the size probe already ran on starts from the probe's kernel at the
    probe's last scale (``size_probe_scale``), cut to the estimate's kernel size, instead of
    running those coarse levels again. The probe's levels are the same coarse-to-fine sweeps on
    the same pixels, with room for a larger kernel. With ``top_scale`` = 0.75 and
    ``refine_iters`` = 12 (all three since 2026-12-06, session 13; docs/blind.md): on the 114
    ``shake`` photos 25.07 / 0.6723 against 25.05 / 0.6673 before, 37.7 s per single-attempt
    photo against 52.7, the worst photo 0.501 dB below its input (foreman; 0.32 before); one
    attempt of ``u030`` (0.5 MP) 57.3 and 74.0 s against 100.0 and 108.5 s (alternating)."""
    size_probe_crops: int = 2
    """The size probe runs on this many informative crops and keeps the smallest extent: a
    coarse estimate on noise sometimes grows a spurious trail (on 11 ``shake`` photos one crop
    measured 57 and 55 px for blurs of 24 and 34 px, the other crop 37 and 33), while a real
    blur is as long in every crop."""
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
    top_scale: float = 0.75
    """The variational sweeps run on the pyramid levels up to this scale (pixel image model); a
    kernel estimated below full resolution is resampled to the full kernel size, and the
    full-resolution refinement (``refine_iters``) takes it from there. 1: every level (the
    default until 2026-12-06); 0.75: all but the full-resolution one, whose 30 sweeps on the
    largest grid were half the estimate's time. Measured with ``refine_iters`` = 12 and
    ``reuse_probe``, see ``reuse_probe``."""
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
    kernel_normal: str = "exact"
    """The k-step's normal operator. ``exact``: the valid correlation and its adjoint, four
    crop-sized FFTs per conjugate-gradient iteration and gradient direction;
    ``autocorrelation``: the selected edges' autocorrelation up to the kernel's extent,
    computed once per k-step, each iteration then a kernel-sized product, and the blurred edges
    that fall outside the crop predicted with the current kernel (one expectation-maximisation
    step, so that the sweeps converge to the exact normal equations). Eight FFTs per k-step
    instead of about 120: on ``u030`` (0.5 MP, alternating runs) the estimate took 38–42 s
    instead of 54–72 s and the attempt 72–75 s instead of 78–108 s. On all 114 ``shake``
    photos the mean is level (24.98 against 25.05 dB), but two photos end more than 0.5 dB
    below their input (foreman −1.39, 253055 −1.16) and ``b05.png`` is returned unchanged
    (docs/blind.md, session 12), so it is not the default. A fit with unobserved pixels
    (``mask_clipped``) and the full-resolution refinement always use ``exact``."""
    beta_max: float = 1e6
    """Upper bound of the estimated noise precision (1/σ_n²)."""
    refine_iters: int = 12
    """Alternations of a full-resolution refinement of the chosen kernel on the most
    informative crop: the latent image from the hyper-Laplacian non-blind solver with the
    current kernel (weight falling to ``refine_weight``, see ``refine_start``), then the kernel
    step on its strongest edges. The variational mean μ is a smooth latent, and a kernel fitted
    to it stays a blob; the MAP latent has the steep edges that pin down a trajectory. Pixel
    image model only; 0: off. 7 until 2026-12-06, when the variational sweeps stopped below
    full resolution (``top_scale``): the refinement is now the estimate's only full-resolution
    stage (on four ``shake`` photos 7 alternations then left 102061, 106024, 108005 and 12084
    0.3–0.5 dB below the full estimate, and 12 left them 0.1 below to 2.7 dB above it). See
    docs/blind.md."""
    refine_weight: float = -1.0
    """Prior weight of the refinement's latent image at the last alternation; negative:
    ``5·σ²`` of the photo's noise σ (per channel), at least ``REFINE_MIN_WEIGHT`` (5e-4 at
    σ = 0.01)."""
    refine_start: float = 64.0
    """The first alternation's latent weight is this multiple of ``refine_weight``; it falls
    geometrically to ``refine_weight`` at the last (by 64^(1/11) ≈ 1.46× per alternation at the
    defaults; halving over the 7 alternations before 2026-12-06). A strong
    prior first keeps only the main edges, which fix the trajectory's overall shape; weaker ones
    then resolve its detail. 1: a constant weight. Against a constant weight (five alternations)
    on ``shake`` photos 1–24, 41–64 and the first 20 of 65–114: 23.44 → 23.86, 23.11 → 23.37
    and 23.58 → 23.61 dB; 16× over eight alternations gave 23.64 (photos 1–19, against 23.74
    for this default there) and 23.43 (see docs/blind.md)."""
    refine_support: float = 0.25
    """How far the refinement may reach beyond the kernel it starts from, as a fraction of the
    kernel canvas side: entries of at least 5 % of the peak, dilated by ``⌊fraction · side⌋``
    px (chessboard), bound each step's kernel, which is then re-centred by whole pixels as
    before; negative: anywhere on the canvas (the default until 2026-12-05). On the 114
    ``shake`` photos (docs/blind.md, *Measured*) 24.05 → 24.08 dB, and two of the three photos
    that ended more than 0.5 dB below their input (8023, foreman; texture streaks pulled into
    the kernel) no longer do; a fixed 4 px had fixed those too but blocked the completion of
    long trajectories that the coarse-to-fine estimate only half found (106024 −6.33,
    101087 −4.79 dB)."""
    keep_unrefined: bool = False
    """Carry the chosen kernel *before* the refinement to the end as well (re-solve on the
    photo, restoration, checks, finishing network, ``finish_resolve``) and return whichever of
    the two endings the degeneracy checks pass with the lower :func:`reblur_misfit`. The
    refinement sharpens most kernels, but on photos of repeated texture it pulls parallel
    streaks into them (``shake`` 8023: 26.97 dB with this option, 22.83 without, input
    23.36). Off by default: on all 114 ``shake`` photos the unrefined ending won on 30, 11
    photos rose and 20 fell (the misfits differ by a few per cent at most), the mean rose by
    0.02 dB, and 253027 ended 0.77 dB below its input: its refined ending was degenerate,
    and the unrefined one stood in for the restart (2026-12-06, session 15; docs/blind.md).
    Pixel image model with ``refine_iters`` > 0 only; one more ending per attempt (about
    7 % more time)."""
    photo_solve: bool = True
    """After the restoration, measure the kernel once more on the whole photo (its central
    ``choice_side``² pixels at most), against a latent restored with the estimated kernel
    (``photo_solve_latent``): non-negative least squares on the gradients
    (:func:`deblurcli.optim.reference.solve_kernel`, the solver of ``deblur-ref``), then restore
    again with that kernel. The estimation crop holds a fraction of the photo's edges; the photo
    holds all of them. Pixel image model only. On ``shake`` photos 1–24 it took the mean from
    24.02 to 24.23 dB (21 photos up, 3 down, the worst by 0.41 dB; docs/blind.md); on
    Levin09 from 32.69 to 32.77 dB."""
    photo_solve_latent: float = 1.0
    """Prior weight of the latent image that re-solve measures against, as a multiple of the
    noise rule (:func:`deblurcli.deconv.noise_weight`; the restoration itself uses
    ``weight_factor`` times it): a sharper latent than the restoration pins the kernel better.
    On ``shake`` photos 1–8 (a throwaway script over the estimates before the re-solve):
    23.73 dB without it, 23.93 against the restoration (factor 2), 24.16 at 1, 24.19 at 0.5,
    24.05 at 0.25, 23.87 at 4."""
    photo_solve_ridge: float = 10.0
    """Ridge weight of that solve (on gradients of values in [0, 1])."""
    photo_solve_iterations: int = 100
    """Iterations of that solve (accelerated projected gradient from a flat kernel). On
    ``u030`` (0.5 MP, 43-px canvas) 100 gave the 3,000-iteration kernel to 8e-4 (relative
    norm) in 2.6 s, 300 to 1e-5 in 7.0 s; after the threshold the two differ by 5e-4 (L1)."""
    photo_solve_threshold: float = 0.05
    """Kernel entries below this fraction of the peak are zeroed after that solve."""
    finish: str = DEFAULT_FINISH
    """The network that finishes the restoration (model reference: ``name@tag``, name or a
    ``.safetensors`` file; several separated by commas: the mean of their outputs; empty or
    ``none``: off). Trained on colour photos restored with
    imperfect kernels (``configs/nafnet_finish_guided.toml``), it removes what a slightly wrong
    kernel leaves: ringing, ghost edges, amplified noise. Both networks also read the photo and
    the restoration blurred again with the kernel (:func:`deblurcli.degrade.restoration_guide`);
    ``cpu-v3`` was trained on kernels up to twice as wrong and falls back on the photo where the
    restoration does not explain it, ``cpu-v2`` trusts a good restoration more. Their mean
    keeps every ``shake`` photo within 0.5 dB of its input (``cpu-v2`` alone: two photos 0.58
    and 0.59 dB below) at 0.02 dB of the mean, 24.33 → 24.31 dB over the 114 photos
    (docs/blind.md). Not applied when the estimate is degenerate (the photo is then returned
    unchanged), nor to grayscale photos unless ``finish_gray``."""
    finish_resolve: int = 1
    """Rounds of the kernel measured once more on the photo against the *finished* restoration
    (the network's output is a sharper, cleaner latent than the solver's), the photo restored
    with that kernel and finished again. A round is kept only when its restoration explains the
    photo about as well as before (:func:`reblur_misfit` at most ``RESOLVE_MISFIT_SLACK`` times
    the previous one); else the rounds stop. 0: off. Colour photos that the network finishes
    only. On ``shake`` photos 1–24 (fast preset's restorations, one throwaway script over them,
    docs/blind.md) 24.53 → 24.78 dB with one round, 24.74 with two; photos 25–40 23.98 →
    24.05 (24.10 with two)."""
    restart_finish: str = "auto"
    """The finishing network(s) of a restart (``attempt`` > 0: an earlier estimate of the photo
    was degenerate), in ``finish``'s syntax; ``auto``: ``nafnet-finish@cpu-v3`` alone
    (:data:`RESTART_FINISH`) when ``finish`` is the default, else ``finish`` itself
    (:attr:`resolved_restart_finish`). A restart's estimate is less trustworthy, and
    ``cpu-v3``, trained on kernels up to twice as wrong, keeps a wrong restoration nearer the
    photo. On the 13 ``shake`` photos whose restart was kept (since 2026-12-06, session 15;
    docs/blind.md) the worst against its input went from −0.52 dB (8023) to −0.33, at
    −0.78 dB summed over the 13 (106024 +8.35 → +8.07, zebra +0.85 → +0.56)."""
    finish_gray: bool = False
    """Also finish grayscale photos (one channel, or equal channels). Off: on the grayscale
    Levin09 set the network lowered the restoration on 30 of 32 images, 32.77 → 31.27 dB
    (27.97 → 27.36 with σ = 0.01 noise added), while it raised every colour set it was
    measured on."""
    mask_clipped: bool = True
    """Leave blown highlights (:func:`observed_mask`) out of every kernel fit of the pixel image
    model: the size probe, the estimate, the refinement and the photo-wide solve. A photo
    without a blown block runs exactly as with False."""
    register: bool = True
    """Move the restoration by the final kernel's sub-pixel centre-of-mass offset (about half a
    pixel per axis at most, as the kernel is centred by whole pixels), so that it registers
    with the photo as a blur of zero mean displacement would leave it: a bicubic translation
    (:func:`deblurcli.optim.ops.translate`). The kernel written is not moved. Not applied when
    the photo is returned unchanged. On the 114 ``shake`` photos (docs/blind.md, *Measured*)
    24.08 → 24.33 dB, 78 photos up, 33 down (the worst by 0.97 dB)."""
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
    nonblind_params: dict[str, float] = field(default_factory=dict)
    """Keyword parameters of the final solver; without ``weight`` the hyper-Laplacian weight
    follows the noise (:func:`deblurcli.deconv.noise_weight`)."""
    min_weight: float = 3e-4
    """Floor of the final hyper-Laplacian weight when it follows the noise: an estimated kernel
    is never exact, and a weaker prior lets its errors ring (the fast preset's old fixed weight;
    on the first 16 Levin09 images, σ ≈ 0.001, the bare noise rule's 1e-4 gave 30.26 dB, this
    floor 30.83)."""
    weight_factor: float = 2.0
    """The final weight is ``weight_factor`` times the true-kernel rule
    :func:`deblurcli.deconv.noise_weight` (at least ``min_weight``): an estimated kernel's
    error acts like extra noise. On 40 ``shake`` photos (σ = 0.01, the same kernels) factor 1,
    2 and 3 gained +1.20, +1.33 and +1.29 dB mean, worst photo −1.50, −0.79 and −0.42 dB."""
    kernel_threshold: float = -1.0
    """Kernel entries below this fraction of the peak are zeroed after every kernel update;
    negative: from the noise, ``15·σ_luma`` within 0.05…0.2 (:func:`auto_kernel_threshold`)."""
    variants: tuple[tuple[tuple[str, object], ...], ...] = ()
    """Extra kernel estimates with these field overrides (e.g. ``(("alpha", 1.0),)``); with any,
    the kernel closest to all others (medoid under the shift-invariant kernel distance) wins.
    Blind estimates fail in idiosyncratic ways, so agreement is a usable no-reference vote."""
    noise_sigma: float | None = None
    """Standard deviation of the photo's noise on [0, 1]; None: estimated from the photo
    (:func:`deblurcli.noise.estimate_noise_sigma`)."""
    prefilter: float = -1.0
    """Gaussian std (px) applied to the estimation crop before the kernel is estimated; the
    kernel is unchanged by it (``g * y = k * (g * x)``) while the noise drops. Negative: chosen
    from the noise (:func:`auto_prefilter`)."""
    fixed_beta_above: float = 0.002
    """Hold the noise precision at 1/σ² of the (prefiltered, downscaled) level, from the noise
    estimate, instead of re-estimating it from the misfit each sweep, when the photo's luma
    noise exceeds this (0: always, 1: never). Clean photos keep the old estimate (estimated
    precision, no prefilter); on Levin09 (σ ≈ 0.001) both gave the same, 30.82 and 30.87 dB."""
    estimation_threads: int | None = 1
    """CPU intra-op threads while estimating the kernel (None: leave torch's setting). The
    crop-sized FFTs gain nothing from a second thread, and on a busy 2-core machine two threads
    made the estimate 3× slower (58 s vs 161 s wall on a Levin image); the final full-size
    solve uses the caller's setting."""

    parallel_crops: bool = True
    """Estimate the crops of the size probe and of the crop check at the same time, one
    ``estimation_threads`` each, when the caller's thread count allows (CPU, pixel model). Each
    estimate runs single-threaded either way, so the result is bit for bit the same; only the
    wall time changes."""

    @property
    def resolved_restart_finish(self) -> str:
        """``restart_finish`` with ``auto`` resolved."""
        if self.restart_finish != "auto":
            return self.restart_finish
        return RESTART_FINISH if self.finish == DEFAULT_FINISH else self.finish

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BlindDeconvolutionError(f"unknown method {self.method!r}")
        if self.kernel_size is not None and any(s % 2 == 0 or s < 3 for s in self.kernel_size):
            raise BlindDeconvolutionError(f"kernel size must be odd ≥ 3, got {self.kernel_size}")
        if not math.isfinite(self.refine_support):
            raise BlindDeconvolutionError("refine_support must be a finite number")
        if not 0 < self.top_scale <= 1:
            raise BlindDeconvolutionError(f"top_scale must be within (0, 1], got {self.top_scale}")
        if not self.refine_start > 0:
            raise BlindDeconvolutionError(f"refine_start must be > 0, got {self.refine_start}")
        if self.kernel_normal not in ("exact", "autocorrelation"):
            raise BlindDeconvolutionError("kernel_normal must be exact or autocorrelation")
        if self.kernel_choice not in ("first", "misfit"):
            raise BlindDeconvolutionError("kernel_choice must be first or misfit")
        if not (self.photo_solve_latent > 0 and self.photo_solve_ridge >= 0
                and 0 <= self.photo_solve_threshold < 1):
            raise BlindDeconvolutionError(
                "photo_solve_latent must be > 0, photo_solve_ridge >= 0 and "
                "photo_solve_threshold within [0, 1)")
        if self.photo_solve_iterations < 1:
            raise BlindDeconvolutionError(
                f"photo_solve_iterations must be >= 1, got {self.photo_solve_iterations}")
        if self.finish_resolve < 0:
            raise BlindDeconvolutionError(
                f"finish_resolve must be >= 0, got {self.finish_resolve}")
        try:
            finishing_references(self.finish)
            finishing_references(self.resolved_restart_finish)
        except UsageError as exc:
            raise BlindDeconvolutionError(str(exc)) from None
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
    """``(top, left, height, width)`` of the first (most informative) kernel-estimation crop."""
    levels: list[dict[str, object]]
    """Per level: scale, image and kernel size, steps run, seconds."""
    warnings: list[str]
    """Warnings (delta kernel, small image, ...)."""
    seconds: float
    """Wall-clock time."""
    collapse: tuple[str, ...] = ()
    """Degenerate solutions detected (``"delta-kernel"``)."""
    kernel_size: tuple[int, int] | None = None
    """The kernel size used (given, or chosen by :func:`probe_kernel_size`)."""
    size_probe: dict[str, object] = field(default_factory=dict)
    """What the automatic size measured (empty when the size was given)."""
    noise_sigma: float | None = None
    """The photo's noise std used (given or estimated)."""
    prefilter: float = 0.0
    """Gaussian std of the estimation prefilter."""
    weight: float | None = None
    """Weight of the final hyper-Laplacian solve."""
    sharpening: float = 1.0
    """:func:`edge_sharpness` of the restored photo over the input's (before any fallback)."""
    crop_distance: float = 0.0
    """Largest :func:`kernel_distance` between the first crop's kernel and the others'."""
    misfit: float = 0.0
    """:func:`reblur_misfit` of the restored photo (before any fallback)."""
    chosen_crop: int = 0
    """Which crop's kernel was used (0: the first, most informative one)."""
    crop_misfits: tuple[float, ...] = ()
    """Per crop, the :func:`reblur_misfit` the kernel choice compared (empty: no choice made)."""
    refine_seconds: float = 0.0
    """Time of the full-resolution refinement of the chosen kernel (0: not run)."""
    refined: bool = False
    """Whether the returned kernel is the refined one (False: no refinement ran, or the
    unrefined ending won, ``keep_unrefined``)."""
    ending_misfits: tuple[float, ...] = ()
    """:func:`reblur_misfit` of each ending compared (refined, then unrefined; NaN: that ending
    was degenerate); empty when only one ending ran."""
    photo_solve_seconds: float = 0.0
    """Time of the kernel's re-solve on the photo, ``photo_solve`` (0: not run)."""
    finish_seconds: float = 0.0
    """Time of the finishing network, ``finish`` (0: not run)."""
    finish_model: str = ""
    """The finishing network(s) that ran ("": none ran)."""
    finish_skipped: str = ""
    """Why the finishing network did not run although one is configured ("": it ran, or none
    is configured)."""
    resolve_rounds: int = 0
    """``finish_resolve`` rounds kept (the kernel re-measured against the finished image)."""
    resolve_seconds: float = 0.0
    """Time of those rounds, kept or not (0: not run)."""
    registration: tuple[float, float] = (0.0, 0.0)
    """``(dy, dx)`` by which the restoration was moved to register with the photo
    (``register``); zero when it was not."""
    clipped_pixels: int = 0
    """Pixels left out of the kernel fits as blown highlights (:func:`observed_mask`)."""


def auto_prefilter(luma_noise: float) -> float:
    """Gaussian std (px) of the estimation prefilter for luma noise ``luma_noise``.

    ``150·σ`` capped at 1.5 px: none on clean photos, 1 px at σ ≈ 0.0067 (RGB noise 0.01), where
    it took four ``shake`` photos from 21.1 to 23.7 dB mean (the unfiltered estimate collapsed to a
    near-delta on two of them).
    """
    return float(min(1.5, 150.0 * luma_noise))


KERNEL_THRESHOLD_PER_NOISE = 15.0
"""Slope of :func:`auto_kernel_threshold` for a first run (30 until 2026-12-05, session 6)."""
RESTART_KERNEL_THRESHOLD_PER_NOISE = 30.0
"""Slope for the first restart after a degenerate run: the coarser threshold, which keeps less
of the noise's haze in the kernel (the first runs' slope until 2026-12-05, session 6)."""


def auto_kernel_threshold(luma_noise: float, per_noise: float = KERNEL_THRESHOLD_PER_NOISE
                          ) -> float:
    """Relative kernel threshold for luma noise ``luma_noise``: ``per_noise·σ`` within 0.05…0.2.

    Noise leaves a faint haze in the estimated kernel that makes the final solve ring: on three
    ``shake`` photos (σ = 0.01, luma 0.0067) a threshold of 0.05 cost up to 5.5 dB against the
    input, 0.1 and 0.2 gave +1.8 and +1.7 dB mean (worst −1.3 and −0.6 dB). Clean photos need
    the faint tails: on the first 16 Levin09 images (σ ≈ 0.001) 0.2 gave 26.90 dB, 0.05 30.69.
    With the refinement, photo solve and finishing networks of the later preset, the slope 30
    (0.2 at σ = 0.01) cut on average 16 % of the true kernels' mass (at most 45 %), the faint
    stretches of a trajectory; the slope 15 took the 114 ``shake`` photos from 24.31 to 24.95 dB
    (docs/blind.md, *The kernel threshold halved*).
    """
    return float(min(0.2, max(0.05, per_noise * luma_noise)))


REFINE_MIN_WEIGHT = 2e-4
"""Floor of the refinement's automatic latent weight (clean photos). On Levin09 (σ ≈ 0.001)
with the default schedule, floors of 3e-4 and 2e-4 gave 32.50 and 32.70 dB."""


def auto_refine_weight(sigma: float) -> float:
    """Latent-image weight of the kernel refinement's last alternation for per-channel noise
    ``sigma``: ``5·σ²``, at least :data:`REFINE_MIN_WEIGHT`.

    Measured by refining the estimates of the unrefined code on 16 ``shake`` photos
    (σ = 0.01; unrefined 22.13 dB): a fixed weight of 6e-4, 1e-3, 1.5e-3 or 3e-3 over five
    alternations gave 22.75, 22.84, 22.74 and 22.66 dB; with the weight halving each
    alternation (``refine_start``), a last weight of 2.5e-4 (six alternations), 5e-4 (seven)
    or 1e-3 (five) gave 23.29, 23.44 and 22.92 dB (see docs/blind.md)."""
    return float(max(REFINE_MIN_WEIGHT, 5.0 * sigma * sigma))


def _float64(array: Tensor | np.ndarray) -> np.ndarray:
    """A tensor or array as a float64 NumPy array (on the CPU)."""
    return np.asarray(array.detach().cpu() if isinstance(array, Tensor) else array, np.float64)


def kernel_extent(kernel: Tensor | np.ndarray, rel_threshold: float = 0.2) -> int:
    """Side of the bounding box of the entries ≥ ``rel_threshold`` of the peak (the larger of
    rows and columns): the blur's extent, ignoring the faint haze a blind estimate leaves.

    Shape:
        - kernel: :math:`(h, w)`
    """
    k = _float64(kernel)
    strong = k >= rel_threshold * k.max()
    rows, cols = np.nonzero(strong.any(1))[0], np.nonzero(strong.any(0))[0]
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def _estimation_crop(luma: np.ndarray, cfg: FastConfig, ksize: tuple[int, int], prefilter: float,
                     dev: torch.device, rank: int = 0, observed: np.ndarray | None = None
                     ) -> tuple[tuple[int, int, int, int], Tensor, Tensor | None]:
    """The kernel-estimation crop (box and ``1×1×h×w`` tensor, prefiltered) for a kernel size;
    ``rank`` > 0 takes the next-best window (see :func:`informative_crop`). The third item is
    ``observed`` (:func:`observed_mask`) cut to the same box as a ``1×1×h×w`` 0/1 tensor, or
    None when ``observed`` is None or the box holds no clipped pixel."""
    kh, kw = ksize
    need = max(2 * kh, 2 * kw, 32)
    if min(luma.shape) < need:
        raise BlindDeconvolutionError(
            f"image {luma.shape[1]}×{luma.shape[0]} is too small for a {kh}×{kw} kernel "
            f"(need at least {need} px per side)"
        )
    size = max(cfg.crop, 2 * need) if cfg.crop else 0
    if rank > 0:  # a window smaller than the photo, so that another one exists
        size = min(size or max(luma.shape), max(need, int(0.75 * min(luma.shape))))
    box = informative_crop(luma, size, rank=rank)
    top, left, ch, cw = box
    y = torch.from_numpy(np.ascontiguousarray(luma[top : top + ch, left : left + cw]))
    y = y[None, None].float().to(dev)
    if prefilter > 0:
        y = _gaussian_filter(y, prefilter)
    mask = None
    if observed is not None and not observed[top : top + ch, left : left + cw].all():
        mask = torch.from_numpy(np.ascontiguousarray(observed[top : top + ch, left : left + cw]))
        mask = mask[None, None].float().to(dev)
    return box, y, mask


CLIP_LEVEL = 254.5 / 255
"""A channel at or above this level is clipped (the sensor's or the file's maximum)."""
CLIPPED_REGION = 5
"""Clipped pixels count as a blown highlight only in a ``CLIPPED_REGION``² block that is
clipped throughout: single clipped pixels are noise cut at the maximum, not a highlight."""


def observed_mask(pixels: np.ndarray, prefilter: float = 0.0) -> np.ndarray | None:
    """Where the photo observes the blur model ``y = k ∗ x + n``: False on clipped highlights.

    A highlight brighter than the sensor's range is cut at the maximum, so there ``y`` is not
    the blurred scene and the kernel estimate must not fit it: those pixels are censored
    observations. Blown highlights, blocks of at least :data:`CLIPPED_REGION`² pixels with
    every channel at or above :data:`CLIP_LEVEL`, are masked, grown by the support of the
    estimate's Gaussian prefilter (``3·prefilter`` px), which spreads them. A pixel with only
    some channels clipped stays in: near-white areas of a noisy photo clip one channel or
    another by noise alone, and masking them (any channel clipped) lost 0.37 dB on 13
    ``shake`` photos (docs/blind.md).

    Returns:
        ``H×W`` bool (True: observed), or None when nothing is clipped (the estimate then runs
        exactly as without a mask).

    Shape:
        - pixels: :math:`(H, W, C)` in [0, 1]; output: :math:`(H, W)`
    """
    import cv2

    clipped = (pixels.min(axis=2) >= CLIP_LEVEL).astype(np.uint8)
    if not clipped.any():
        return None
    block = np.ones((CLIPPED_REGION, CLIPPED_REGION), np.uint8)
    highlights = cv2.dilate(cv2.erode(clipped, block), block)  # opening: the clipped blocks
    if not highlights.any():
        return None
    grow = math.ceil(3 * prefilter)
    if grow > 0:
        highlights = cv2.dilate(highlights, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return highlights == 0


def probe_kernel_size(luma: np.ndarray, cfg: FastConfig, *, prefilter: float = 0.0,
                      noise: float = 0.0, device: torch.device | None = None, rank: int = 0,
                      workers: int = 1, observed: np.ndarray | None = None,
                      starts: dict[tuple[int, int, int, int], tuple[float, Tensor]] | None = None
                      ) -> tuple[tuple[int, int], dict[str, object]]:
    """Estimate the blur's extent and choose the kernel size from it.

    Runs the coarse levels of the estimate (up to ``cfg.size_probe_scale``) on a canvas of
    ``cfg.max_kernel`` px (less when the photo is small) on ``cfg.size_probe_crops``
    informative crops, measures the kernel's :func:`kernel_extent` in each, scales the smallest
    to full resolution and returns ``odd(cfg.size_factor·extent + 5)``, at least 11 and at most
    the canvas plus the margin. A blur too large for the canvas reaches its border and gets the
    largest size.

    Args:
        luma: The photo's luma, ``H×W`` float in [0, 1].
        cfg: The preset (``max_kernel``, ``size_probe_scale``, crop and solver settings).
        prefilter: Gaussian std applied to the estimation crop.
        noise: Noise std of the (prefiltered) crop.
        device: Where to run.
        rank: The first informative crop (0: the best); the others follow it in rank.
        workers: Crops estimated at the same time (each with ``cfg.estimation_threads``).
        observed: :func:`observed_mask` of the photo, or None.
        starts: When given, filled with each probed crop's box ``(top, left, h, w)`` →
            ``(scale, kernel)``: the kernel found at the probe's last scale (convolution
            orientation, the canvas at that scale), for :attr:`FastConfig.reuse_probe`.

    Returns:
        ``((size, size), details)`` with the canvas, probe scale and measured extents.
    """
    dev = device or torch.device("cpu")
    canvas = min(cfg.max_kernel, min(luma.shape) // 2 - 1)
    canvas = max(7, canvas - (1 - canvas % 2))
    probe_cfg = replace(cfg, kernel_size=(canvas, canvas), kernel_margin=0, variants=(),
                        refine_iters=0)

    def measure(crop_rank: int, on_step: StepCallback | None
                ) -> tuple[float, float, tuple[int, int, int, int], Tensor]:
        """The blur extent (full-resolution px) in one crop, the scale it was measured at, the
        crop's box and the kernel found there."""
        box, y, mask = _estimation_crop(luma, probe_cfg, (canvas, canvas), prefilter, dev,
                                        crop_rank, observed)
        plan = _plan(probe_cfg, tuple(y.shape[-2:]), (canvas, canvas))  # type: ignore[arg-type]
        plan = _levels_up_to(plan, cfg.size_probe_scale)
        kernel, _ = _estimate(y, plan, probe_cfg, probe_cfg.resolved_image_model, dev, 0,
                              on_step, noise, mask)
        return (kernel_extent(kernel) - 1.0) / plan[-1][0] + 1.0, plan[-1][0], box, kernel

    ranks = range(rank, rank + max(1, cfg.size_probe_crops))
    measured = _run_jobs([lambda cb, r=r: measure(r, cb) for r in ranks], workers,
                         cfg.estimation_threads)
    extents = [e for e, *_ in measured]
    extent, scale = min(extents), measured[-1][1]
    if starts is not None:
        starts.update({box: (s, kernel) for _, s, box, kernel in measured})
    largest = min(canvas + cfg.kernel_margin, min(luma.shape) // 2 - cfg.kernel_margin)
    largest = max(3, largest - (1 - largest % 2))
    size = min(largest, max(11, ops.odd(cfg.size_factor * extent + 5)))
    if size < 3:
        raise BlindDeconvolutionError(f"image {luma.shape[1]}×{luma.shape[0]} is too small "
                                      "for blind deconvolution")
    return (size, size), {"canvas": canvas, "probe_scale": round(scale, 4),
                          "extent": round(extent, 1),
                          "crop_extents": [round(e, 1) for e in extents], "size": size}


_BT601 = (0.299, 0.587, 0.114)
LUMA_WEIGHTS = np.array(_BT601, dtype=np.float32)
"""BT.601 luma weights of R, G, B (the kernel is estimated on luma)."""


def _luma(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[2] == 1:
        return pixels[..., 0]
    return pixels[..., :3] @ LUMA_WEIGHTS


class _StoppedError(Exception):
    """A crop estimate abandoned because the estimate beside it failed or was interrupted."""


StepCallback = Callable[[LevelInfo], None]


def _run_jobs(jobs: list[Callable[[StepCallback | None], _T]], workers: int,
              threads: int | None, on_step: StepCallback | None = None) -> list[_T]:
    """Run independent estimates; results in the order of ``jobs``.

    ``jobs[i](callback)`` runs one estimate and reports its sweeps to ``callback``: the first
    job gets ``on_step``. With ``workers`` > 1 the others run in threads (``threads`` torch
    threads each) while the first runs in the calling thread, and their callback stops them at
    their next sweep when the first fails or is interrupted (Ctrl-C does not wait for them).
    """
    if workers <= 1 or len(jobs) <= 1:
        return [jobs[0](on_step)] + [job(None) for job in jobs[1:]]
    stop = threading.Event()

    def check(_info: LevelInfo) -> None:
        if stop.is_set():
            raise _StoppedError

    def run(job: Callable[[StepCallback | None], _T]) -> _T:
        if threads:  # a new OS thread does not inherit the caller's intra-op setting
            torch.set_num_threads(threads)
        return job(check)

    pool = ThreadPoolExecutor(max_workers=min(workers - 1, len(jobs) - 1))
    try:
        futures = [pool.submit(run, job) for job in jobs[1:]]
        first = jobs[0](on_step)
        return [first] + [future.result() for future in futures]
    finally:
        stop.set()
        pool.shutdown(wait=True)


def _crop_workers(cfg: FastConfig, dev: torch.device, caller_threads: int) -> int:
    """How many crop estimates may run at once (see ``FastConfig.parallel_crops``)."""
    if (not cfg.parallel_crops or dev.type != "cpu" or not cfg.estimation_threads
            or cfg.resolved_image_model != "pixels"):
        return 1  # the generator path seeds torch's global generator: keep it sequential
    return max(1, caller_threads // cfg.estimation_threads)


def informative_crop(luma: np.ndarray, size: int, *, margin: int = 0,
                     rank: int = 0) -> tuple[int, int, int, int]:
    """The ``size×size`` window with the most usable edge energy (saturation excluded).

    ``rank`` = r > 0 gives the best window that overlaps each of the r better ones by at most
    half its area (the best remaining one otherwise): another view of the same blur, used when a
    restart needs a different crop.

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
    stride = max(1, step // factor) * factor
    order = torch.argsort(sums.flatten(), descending=True).tolist()
    picks: list[tuple[int, int]] = []
    for idx in order:
        r, c = divmod(idx, sums.shape[-1])
        top, left = min(r * stride, h - ch), min(c * stride, w - cw)
        if all(max(0, ch - abs(top - t)) * max(0, cw - abs(left - u)) <= 0.5 * ch * cw
               for t, u in picks):
            picks.append((top, left))
            if len(picks) > rank:
                break
    if len(picks) <= rank:  # no window overlaps little enough: the best one not picked yet
        r, c = divmod(order[min(rank, len(order) - 1)], sums.shape[-1])
        picks.append((min(r * stride, h - ch), min(c * stride, w - cw)))
    top, left = picks[min(rank, len(picks) - 1)]
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


def _levels_up_to(plan: list[tuple[float, tuple[int, int], tuple[int, int]]], scale: float
                  ) -> list[tuple[float, tuple[int, int], tuple[int, int]]]:
    """The levels of ``plan`` (see :func:`_plan`) at or below ``scale``; at least the coarsest."""
    return [level for level in plan if level[0] <= scale + 1e-9] or plan[:1]


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
    """Real FFTs for a ``shape`` grid; valid correlation ``A`` and its adjoints by products.

    The transforms run on the next fast size (:func:`~deblurcli.deconv.fast_fft_size`) at least
    ``shape``: every product here is a correlation or convolution of a signal and a kernel that
    together fit in ``shape``, so the extra zeros never wrap into the kept ``shape`` corner, and
    :meth:`i` returns just that corner.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.fft_shape = (fast_fft_size(shape[0]), fast_fft_size(shape[1]))

    def f(self, t: Tensor) -> Tensor:
        return torch.fft.rfft2(t, s=self.fft_shape)

    def i(self, t: Tensor) -> Tensor:
        return torch.fft.irfft2(t, s=self.fft_shape)[..., : self.shape[0], : self.shape[1]]

    def f_small(self, t: Tensor) -> Tensor:
        """:meth:`f` of a small ``t`` (a kernel): the row transforms run on its rows only, not
        on the zero rows of the padded grid (the same transform; about half the work for a
        kernel a tenth of the grid's side)."""
        rows = torch.fft.rfft(t, n=self.fft_shape[1], dim=-1)
        return torch.fft.fft(rows, n=self.fft_shape[0], dim=-2)

    def i_corner(self, t: Tensor, size: tuple[int, int]) -> Tensor:
        """``i(t)[..., :h, :w]`` for a small corner ``size`` = (h, w): the row transforms run
        on its ``h`` rows only."""
        h, w = size
        columns = torch.fft.ifft(t, dim=-2)[..., :h, :]
        return torch.fft.irfft(columns, n=self.fft_shape[1], dim=-1)[..., :w]


class _EdgeObservations:
    """The gradient-domain kernel step for one blurry crop ``y`` and a kernel of ``ksize``.

    Solves ``min_k Σ_d ‖(∂_d x ⋆ k) − ∂_d y‖² + ridge·‖k‖²`` (valid correlation, ``d`` the
    horizontal and vertical first differences) by PCG, using only the strongest
    ``1 − grad_quantile`` of the latent's gradients, then projects on the simplex with the
    relative threshold. Shared by the variational sweeps and the full-resolution refinement.

    ``observed`` (0/1, the shape of ``y``, or None) drops the differences that touch an
    unobserved pixel (:func:`observed_mask`) from the data term.

    Shape:
        - y: :math:`(H, W)`; latent x: :math:`(H+h-1, W+w-1)`; kernel: :math:`(h, w)`,
          correlation orientation.
    """

    def __init__(self, y: Tensor, ksize: tuple[int, int], observed: Tensor | None = None
                 ) -> None:
        kh, kw = ksize
        self.ksize = ksize
        y_g = torch.stack([ops.diff_h(y)[:-1, :], ops.diff_v(y)[:, :-1]])
        self.observed_g: Tensor | None = None
        if observed is not None:
            both_h = observed[:, 1:] * observed[:, :-1]
            both_v = observed[1:, :] * observed[:-1, :]
            self.observed_g = torch.stack([both_h[:-1, :], both_v[:, :-1]])
            y_g = y_g * self.observed_g
        self.hg, self.wg = y_g.shape[-2:]
        self.grid = _Grid((y.shape[0] + kh - 2, y.shape[1] + kw - 2))
        self.y_gf = self.grid.f(y_g)
        # room for the edges' linear autocorrelation up to lags of the kernel's extent
        self.lag_grid = _Grid((self.grid.shape[0] + kh - 1, self.grid.shape[1] + kw - 1))
        self._y_g = y_g
        counted = (torch.ones(self.hg, self.wg, dtype=y.dtype, device=y.device)
                   if self.observed_g is None else self.observed_g)
        self.counted_f = self.grid.f(counted)  # the differences the data term counts

    def kernel_step(self, x: Tensor, k: Tensor, cfg: FastConfig, *,
                    variance: Tensor | None = None) -> Tensor:
        """One kernel update from latent ``x``; ``variance``: per-difference posterior variance
        (the ``variance_weight`` term of the expectation), or None."""
        kh, kw = self.ksize
        grid = self.grid
        g = torch.stack([ops.diff_h(x)[:-1, :], ops.diff_v(x)[:, :-1]])
        if cfg.grad_quantile > 0:
            mag = g.square().sum(0).sqrt()
            sample = mag.flatten()[:: max(1, mag.numel() // 20000)]
            g = g * (mag >= torch.quantile(sample, cfg.grad_quantile))
        if (cfg.kernel_normal == "autocorrelation" and self.observed_g is None
                and variance is None):
            return self._autocorrelation_step(g, k, cfg)
        g_f = grid.f(g)
        var: Tensor | float = 0.0
        if variance is not None:
            var = cfg.variance_weight * grid.i(grid.f(variance) * self.counted_f.conj())[
                ..., :kh, :kw].sum(0)
        rhs = grid.i_corner((g_f * self.y_gf.conj()).sum(0), (kh, kw))

        def normal(kk: Tensor) -> Tensor:
            # the kernel's transform runs on its rows only, and the two directions are summed
            # before the one inverse transform of the small corner that is kept
            ak = grid.i(g_f * grid.f_small(kk).conj())[..., : self.hg, : self.wg]
            if self.observed_g is not None:
                ak = ak * self.observed_g
            back = grid.i_corner((g_f * grid.f(ak).conj()).sum(0), (kh, kw))
            return back + var * kk + cfg.kernel_ridge * kk

        energy = float(g.square().sum()) * self.hg * self.wg / (grid.shape[0] * grid.shape[1])
        k_pre = 1.0 / (var + energy + cfg.kernel_ridge) * torch.ones_like(k)
        return ops.project_kernel(_pcg(normal, rhs, k, k_pre, cfg.cg),
                                  rel_threshold=cfg.kernel_threshold)

    def _autocorrelation_step(self, g: Tensor, k: Tensor, cfg: FastConfig) -> Tensor:
        """The kernel step with the normal operator ``Σ_τ' R(τ − τ') k(τ')``, ``R`` the linear
        autocorrelation of the selected edges ``g`` (both directions summed) over the whole
        latent, for lags within the kernel's extent (``kernel_normal = "autocorrelation"``).

        That operator also counts the blurred edges that fall outside the observed differences
        (the ring around them that the latent's border reaches); so that they are not fitted
        to zero, the right-hand side takes them as observed at the current kernel's prediction
        ``g ⋆ k`` (one expectation-maximisation step of the missing observations: at a fixed
        point the exact normal equations hold).

        Shape:
            - g: :math:`(2, H+h-2, W+w-2)`; k: :math:`(h, w)`, correlation orientation.
        """
        kh, kw = self.ksize
        lag = self.lag_grid
        g_f = lag.f(g)
        # g ⋆ k at every position, negative ones wrapped to the end of the transform
        predicted = torch.fft.irfft2(g_f * lag.f_small(k).conj(), s=lag.fft_shape)
        predicted[..., : self.hg, : self.wg] = self._y_g  # observed where there is data
        rhs = lag.i_corner((g_f * torch.fft.rfft2(predicted).conj()).sum(0), (kh, kw))
        auto = torch.fft.irfft2(g_f.real.square().sum(0) + g_f.imag.square().sum(0),
                                s=lag.fft_shape)
        # lags -(kh-1)..kh-1 (rows) and -(kw-1)..kw-1 (columns), zero lag at (kh-1, kw-1)
        lags = torch.roll(auto, (kh - 1, kw - 1), dims=(0, 1))[: 2 * kh - 1, : 2 * kw - 1]
        # Σ_v R(τ − v) k(v) is the full convolution of lags and k at τ + (kh-1, kw-1); a
        # transform of at least 2kh-1 × 2kw-1 keeps the wrapped tail off those entries
        small = (fast_fft_size(2 * kh - 1), fast_fft_size(2 * kw - 1))
        lags_f = torch.fft.rfft2(lags, s=small)

        def normal(kk: Tensor) -> Tensor:
            full = torch.fft.irfft2(lags_f * torch.fft.rfft2(kk, s=small), s=small)
            return full[kh - 1: 2 * kh - 1, kw - 1: 2 * kw - 1] + cfg.kernel_ridge * kk

        k_pre = 1.0 / (float(lags[kh - 1, kw - 1]) + cfg.kernel_ridge) * torch.ones_like(k)
        return ops.project_kernel(_pcg(normal, rhs, k, k_pre, cfg.cg),
                                  rel_threshold=cfg.kernel_threshold)


def _vb_level(y: Tensor, k: Tensor, cfg: FastConfig, *, with_sigma: bool,
              report: Callable[[int, float], None], noise: float = 0.0,
              observed: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Variational sweeps on one level; returns the kernel (correlation orientation) and μ.

    ``noise`` > 0 holds the noise precision at ``1/noise²``; 0 re-estimates it every sweep.
    ``observed`` (0/1, the shape of ``y``, or None): the data terms of both steps count only
    those pixels (:func:`observed_mask`); the latent under the others follows the prior.

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
    beta = min(1.0 / noise**2, cfg.beta_max) if noise > 0 else 1e3
    if observed is None:
        y_f = grid.f(y)
        counted_f = grid.f(torch.ones_like(y))  # the pixels the data term counts
        n_obs = y.numel()
    else:
        y_f = grid.f(y * observed)
        counted_f = grid.f(observed)
        n_obs = max(1, int(observed.sum()))
    obs = _EdgeObservations(y, (kh, kw), observed)
    for sweep in range(cfg.outer):
        k_f = grid.f_small(k)
        diag_a = grid.i(counted_f * grid.f_small(k * k)).clamp_min(0)
        e_h = ops.diff_h(mu).square() + s2[:, 1:] + s2[:, :-1]
        e_v = ops.diff_v(mu).square() + s2[1:, :] + s2[:-1, :]
        xi_h = cfg.alpha / (e_h.clamp_max(1.0) + 1e-8)
        xi_v = cfg.alpha / (e_v.clamp_max(1.0) + 1e-8)

        def precision(g: Tensor, k_f: Tensor = k_f, xi_h: Tensor = xi_h, xi_v: Tensor = xi_v,
                      beta: float = beta) -> Tensor:
            ag = grid.i(grid.f(g) * k_f.conj())[:ho, :wo]
            if observed is not None:
                ag = ag * observed
            return (beta * grid.i(grid.f(ag) * k_f) + _dh_t(xi_h * ops.diff_h(g))
                    + _dv_t(xi_v * ops.diff_v(g)))

        diag_p = (beta * diag_a + F.pad(xi_h, (1, 0)) + F.pad(xi_h, (0, 1))
                  + F.pad(xi_v, (0, 0, 1, 0)) + F.pad(xi_v, (0, 0, 0, 1)))
        mu = _pcg(precision, beta * grid.i(y_f * k_f), mu, 1.0 / diag_p, cfg.cg).clamp(-0.5, 1.5)
        if with_sigma:
            s2 = 1.0 / diag_p
        residual = grid.i(grid.f(mu) * k_f.conj())[:ho, :wo] - y
        if observed is not None:
            residual = residual * observed
        spread = grid.i_corner(grid.f(s2) * counted_f.conj(), (kh, kw))
        misfit = float(residual.square().sum() + (spread * k * k).sum())
        if noise <= 0:
            beta = min(n_obs / max(misfit, 1e-12), cfg.beta_max)
        var = None
        if with_sigma and cfg.variance_weight > 0:
            var = torch.stack([(s2[:, 1:] + s2[:, :-1])[:-1, :], (s2[1:, :] + s2[:-1, :])[:, :-1]])
        k = obs.kernel_step(mu, k, cfg, variance=var)
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
    attempt: int = 0,
) -> FastResult:
    """Blind deconvolution of one photo with the fast preset.

    Args:
        pixels: Blurry image, ``H×W×C`` float in [0, 1] (C = 1 or 3), any size.
        cfg: The preset.
        on_step: Progress callback (level and step within it).
        seed: Seeds the generator path (level ``i`` uses ``seed + i``); the pixel model is
            deterministic.
        device: Where the kernel estimation and the non-blind solve run.
        attempt: 0 for the first run. With the automatic kernel threshold, the first restart
            estimates on the same crop with the restarts' coarser threshold
            (:data:`RESTART_KERNEL_THRESHOLD_PER_NOISE`), when that differs from the first
            run's, and each further one moves to the next most informative crop
            (:func:`informative_crop` ``rank``), another view of the same blur; otherwise
            restart ``n`` estimates on the n-th crop.

    Returns:
        The :class:`FastResult`. When the estimate is degenerate (:attr:`FastResult.collapse`)
        the returned image is the input, unchanged, and a warning says why.

    Raises:
        BlindDeconvolutionError: bad layout, or an image too small for the kernel.

    Shape:
        - pixels: :math:`(H, W, C)`; result image: :math:`(H, W, C)`
    """
    from deblurcli.deconv import noise_weight
    from deblurcli.engine.device import resolve_device

    started = time.perf_counter()
    dev = resolve_device(device) if isinstance(device, str) else device
    # C order, so that the result does not depend on the caller's memory layout: the estimate is
    # sensitive enough that a last-bit luma difference (a transposed view) changed it.
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise BlindDeconvolutionError(f"pixels must be H×W×1 or H×W×3, got {pixels.shape}")
    from deblurcli.noise import estimate_noise_sigma

    luma = _luma(pixels)
    sigma = cfg.noise_sigma if cfg.noise_sigma is not None else estimate_noise_sigma(pixels)
    luma_noise = _luma_noise(sigma, pixels.shape[2])
    rank = attempt  # which informative crop the estimate runs on
    if cfg.kernel_threshold < 0:
        threshold = auto_kernel_threshold(luma_noise)
        coarse = auto_kernel_threshold(luma_noise, RESTART_KERNEL_THRESHOLD_PER_NOISE)
        if attempt > 0 and coarse != threshold:
            threshold, rank = coarse, attempt - 1
        cfg = replace(cfg, kernel_threshold=threshold)
    if cfg.refine_weight <= 0:
        cfg = replace(cfg, refine_weight=auto_refine_weight(sigma))
    if attempt > 0:
        cfg = replace(cfg, finish=cfg.resolved_restart_finish)
    noisy = luma_noise > cfg.fixed_beta_above
    if cfg.prefilter >= 0:
        prefilter = cfg.prefilter
    else:
        prefilter = auto_prefilter(luma_noise) if noisy else 0.0
    if prefilter > 0:
        luma_noise *= min(1.0, 1.0 / (2 * math.sqrt(math.pi) * prefilter))
    held_noise = luma_noise if noisy else 0.0  # 0: the precision is estimated per sweep
    size_probe: dict[str, object] = {}
    threads = torch.get_num_threads()
    if cfg.estimation_threads and dev.type == "cpu":
        torch.set_num_threads(min(threads, cfg.estimation_threads))
    workers = _crop_workers(cfg, dev, threads)
    observed = observed_mask(pixels, prefilter) if cfg.mask_clipped else None
    # the probe's coarse kernel per crop box, where the estimate may start (reuse_probe)
    starts: dict[tuple[int, int, int, int], tuple[float, Tensor]] = {}
    try:
        if cfg.kernel_size is None:
            size, size_probe = probe_kernel_size(luma, cfg, prefilter=prefilter,
                                                 noise=held_noise, device=dev, rank=rank,
                                                 workers=workers, observed=observed,
                                                 starts=starts if cfg.reuse_probe else None)
            cfg = replace(cfg, kernel_size=size)
        assert cfg.kernel_size is not None
        kh, kw = (s + cfg.kernel_margin for s in cfg.kernel_size)
        box, y_full, mask_full = _estimation_crop(luma, cfg, (kh, kw), prefilter, dev, rank,
                                                  observed)
        top, left, ch, cw = box
        plan = _plan(cfg, (ch, cw), (kh, kw))
        model = cfg.resolved_image_model

        def other_crop(rank: int, check: StepCallback | None
                       ) -> tuple[Tensor, list[dict[str, object]]]:
            other_box, y_other, mask_other = _estimation_crop(luma, cfg, (kh, kw), prefilter, dev,
                                                              rank, observed)
            other_plan = _plan(cfg, tuple(y_other.shape[-2:]), (kh, kw))  # type: ignore[arg-type]
            return _estimate(y_other, other_plan, cfg, model, dev, seed, check, held_noise,
                             mask_other, top_scale=cfg.top_scale, start=starts.get(other_box))

        jobs = [lambda report: _estimate(y_full, plan, cfg, model, dev, seed, report, held_noise,
                                         mask_full, top_scale=cfg.top_scale,
                                         start=starts.get(box))]
        jobs += [lambda check, r=rank * cfg.crops + j: other_crop(r, check)
                 for j in range(1, cfg.crops)]
        (kernel, levels), *rest = _run_jobs(jobs, workers, cfg.estimation_threads, on_step)
        others = [k for k, _ in rest]
        crop_distance = max((kernel_distance(kernel, k) for k in others), default=0.0)
        if cfg.variants:
            kernel, levels = _vote(kernel, levels, y_full, (ch, cw), cfg, dev, seed, on_step,
                                   held_noise, mask_full)
    finally:
        torch.set_num_threads(threads)
    warnings: list[str] = []
    params = dict(cfg.nonblind_params)
    if cfg.nonblind == "hyperlaplacian" and "weight" not in params:
        params["weight"] = max(cfg.min_weight, cfg.weight_factor * noise_weight(sigma))
    # centred and cut to the requested size: (kernel, mass cut off) per crop
    candidates = [_crop_kernel(ops.center_kernel(k)[0], cfg.kernel_size) for k in (kernel, *others)]
    chosen, crop_misfits, image = 0, (), None
    refining = cfg.refine_iters > 0 and model == "pixels"
    if cfg.kernel_choice == "misfit" and others:
        # the refinement replaces the chosen kernel, and with it the choice's restoration: the
        # choice then compares luma restorations only (a third of the work; the misfit is
        # measured on luma either way)
        compared, compared_sigma = ((luma[..., None], _luma_noise(sigma, pixels.shape[2]))
                                    if refining else (pixels, sigma))
        chosen, crop_misfits, region = choose_kernel(
            compared, [k for k, _ in candidates], compared_sigma, cfg.nonblind, params,
            side=cfg.choice_side, device=dev)
        if not refining and region.shape == pixels.shape:
            image = region  # the whole photo was compared: its solve is the result
    kernel, spill = candidates[chosen]
    refine_seconds = 0.0
    starts_of_endings = [kernel]
    if refining:
        t0 = time.perf_counter()
        refined = _refine_kernel(y_full[0, 0], kernel.to(y_full), cfg, cfg.refine_weight,
                                 None if mask_full is None else mask_full[0, 0])
        refine_seconds = time.perf_counter() - t0
        starts_of_endings = [refined] + ([kernel] if cfg.keep_unrefined else [])
    if spill > SPILL_WARNING:
        warnings.append(
            f"{spill:.0%} of the estimated kernel lay outside the requested "
            f"{cfg.kernel_size[0]}x{cfg.kernel_size[1]} and was cut off; the blur may be larger: "
            "try a larger --kernel-size")
    # image: the choice's restoration, kept only when no refinement ran (one ending)
    endings = [_ending(pixels, luma, start, sigma, params, cfg, dev, size_probe, observed, image)
               for start in starts_of_endings]
    sound = [n for n, e in enumerate(endings) if not e.collapse]
    best = min(sound, key=lambda n: endings[n].misfit) if sound else 0
    ending = endings[best]
    kernel, image, collapse = ending.kernel, ending.image, ending.collapse
    if collapse:
        warnings.append(f"no reliable blur kernel found ({ending.why}); the photo is returned "
                        "unchanged (try a --kernel-size, or more --restarts)")
    ending_misfits = (tuple(math.nan if e.collapse else e.misfit for e in endings)
                      if len(endings) > 1 else ())
    registration = (0.0, 0.0)
    if cfg.register and not collapse:
        moved, registration = ops.register_to_kernel(hwc_to_tensor(image), kernel)
        image = tensor_to_hwc(moved).astype(np.float32)
    for message in warnings:
        log.warning(message)
    return FastResult(
        image=image, kernel=kernel.double().cpu().numpy(), crop_box=box, levels=levels,
        warnings=warnings, seconds=time.perf_counter() - started, collapse=collapse,
        kernel_size=cfg.kernel_size, size_probe=size_probe, noise_sigma=sigma,
        prefilter=prefilter, weight=params.get("weight"), sharpening=ending.sharpening,
        crop_distance=crop_distance, misfit=ending.misfit, chosen_crop=chosen,
        crop_misfits=crop_misfits,
        refine_seconds=refine_seconds, refined=refining and best == 0,
        ending_misfits=ending_misfits,
        photo_solve_seconds=sum(e.photo_seconds for e in endings),
        finish_seconds=sum(e.finish_seconds for e in endings),
        finish_model=cfg.finish if ending.finish_seconds else "",
        finish_skipped=ending.finish_skipped, resolve_rounds=ending.resolve_rounds,
        resolve_seconds=sum(e.resolve_seconds for e in endings),
        registration=registration,
        clipped_pixels=0 if observed is None else int(observed.size - observed.sum()),
    )


@dataclass
class _Ending:
    """One kernel carried to the end of :func:`fast_fit`."""

    kernel: Tensor
    """The final kernel (after the re-solves), convolution orientation."""
    image: np.ndarray
    """The finished restoration, or the input unchanged when ``collapse``."""
    misfit: float
    """:func:`reblur_misfit` of the (last) restoration."""
    sharpening: float
    """:func:`edge_sharpness` of the restoration over the input's."""
    collapse: tuple[str, ...]
    """What :func:`degenerate` found (empty: sound)."""
    why: str
    """:func:`degenerate`'s phrase for the user."""
    photo_seconds: float = 0.0
    finish_seconds: float = 0.0
    finish_skipped: str = ""
    resolve_rounds: int = 0
    resolve_seconds: float = 0.0


def _ending(pixels: np.ndarray, luma: np.ndarray, kernel: Tensor, sigma: float,
            params: dict[str, Any], cfg: FastConfig, dev: torch.device,
            size_probe: dict[str, object], observed: np.ndarray | None,
            image: np.ndarray | None = None) -> _Ending:
    """Carry an estimated kernel to the end: re-solve it on the photo (``photo_solve``),
    restore the photo, check the result (:func:`degenerate`), finish it (``finish``) and
    re-measure the kernel against the finished image (``finish_resolve``).

    ``image``: the photo already restored with ``kernel`` (used only when the re-solve does not
    change the kernel).

    Shape:
        - pixels: :math:`(H, W, C)`; luma: :math:`(H, W)`; kernel: :math:`(h, w)`
    """
    from deblurcli.deconv import deconvolve, noise_weight

    photo_seconds = 0.0
    if cfg.photo_solve and cfg.resolved_image_model == "pixels":
        t0 = time.perf_counter()
        latent_weight = cfg.photo_solve_latent * noise_weight(sigma)
        resolved = _photo_kernel(luma, kernel, cfg, dev, latent_weight=latent_weight,
                                 observed=observed)
        if resolved is not None:
            kernel = resolved.to(kernel)
            image = None  # restored below with the re-solved kernel
        photo_seconds = time.perf_counter() - t0

    def restore(k: Tensor) -> np.ndarray:
        """The whole photo restored with kernel ``k`` by the final non-blind solve."""
        planes = hwc_to_tensor(pixels).to(dev)
        return tensor_to_hwc(deconvolve(planes, k, method=cfg.nonblind, **params)).astype(
            np.float32)

    if image is None:
        image = restore(kernel)
    sharpening = edge_sharpness(image, sigma) / edge_sharpness(pixels, sigma)
    misfit = reblur_misfit(image, pixels, kernel, sigma)
    collapse, why = degenerate(kernel, size_probe, sharpening, misfit)
    ending = _Ending(kernel, image, misfit, sharpening, collapse, why, photo_seconds)
    if collapse:
        ending.image = pixels.copy()
    if not finishing_references(cfg.finish):
        return ending
    if collapse:
        ending.finish_skipped = "degenerate estimate"
        return ending
    if not cfg.finish_gray and is_grayscale(pixels):
        ending.finish_skipped = "grayscale photo (finish_gray is off)"
        return ending
    t0 = time.perf_counter()
    ending.image = finish_restoration(image, cfg.finish, dev, observed=pixels,
                                      kernel=kernel.double().cpu().numpy())
    ending.finish_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(cfg.finish_resolve):
        resolved = _photo_kernel(luma, ending.kernel, cfg, dev, latent=_luma(ending.image),
                                 observed=observed)
        if resolved is None:
            break
        resolved = resolved.to(ending.kernel)
        restored = restore(resolved)
        resolved_misfit = reblur_misfit(restored, pixels, resolved, sigma)
        if resolved_misfit > RESOLVE_MISFIT_SLACK * ending.misfit:
            break
        ending.kernel, ending.misfit = resolved, resolved_misfit
        ending.image = finish_restoration(restored, cfg.finish, dev, observed=pixels,
                                          kernel=resolved.double().cpu().numpy())
        ending.resolve_rounds += 1
    if cfg.finish_resolve:
        ending.resolve_seconds = time.perf_counter() - t0
    return ending


def finishing_references(model: str) -> list[str]:
    """The model references of a ``finish`` value: one reference, or several separated by
    commas (an ensemble whose outputs are averaged); ``[]`` for empty or ``none``.

    Raises:
        UsageError: ``none`` listed beside a model, or an empty entry between commas.
    """
    if model.strip().lower() in ("", "none"):
        return []
    references = [part.strip() for part in model.split(",")]
    if any(ref.lower() in ("", "none") for ref in references):
        raise UsageError(f"finish {model!r}: list model references separated by commas, "
                         "or give none alone")
    return references


def finishing_models(model: str) -> list[str]:
    """The finishing networks' resolved files (``[]`` when ``model`` is empty or ``none``).

    Raises:
        ModelUnavailableError: a model is neither shipped nor cached.
        ChecksumError: a file does not match its manifest hash.
        UsageError: a malformed list (:func:`finishing_references`).
    """
    from deblurcli.engine import resolve

    return [str(resolve(ref).path) for ref in finishing_references(model)]


def is_grayscale(pixels: np.ndarray) -> bool:
    """Whether a photo has no colour: one channel, or channels equal to within 1/255.

    Shape:
        - pixels: :math:`(H, W, C)` in [0, 1]
    """
    if pixels.shape[2] < 3:
        return True
    rgb = pixels[..., :3]
    return bool(np.abs(rgb - rgb[..., :1]).max() <= 1.0 / 255)


@functools.lru_cache(maxsize=4)
def _finisher(model: str, device: str) -> Any:
    from deblurcli.engine import load_model

    return load_model(model, device=device)


def finish_restoration(image: np.ndarray, model: str, device: torch.device, *,
                       observed: np.ndarray | None = None,
                       kernel: np.ndarray | None = None) -> np.ndarray:
    """Run the finishing network ``model`` over a restored photo: one model reference, or
    several separated by commas, whose outputs are averaged (:func:`finishing_references`).

    The engine loads each network (hash-verified, never unpickled; kept for the next photo of
    a batch) and tiles large photos. A guided network (``guide_channels``) also reads the
    photo that was observed and the restoration blurred again with its kernel
    (:func:`deblurcli.degrade.restoration_guide`), so ``observed`` and ``kernel`` are needed.

    Raises:
        ModelUnavailableError: a model is neither shipped nor cached.
        UsageError: a guided model without ``observed`` and ``kernel``; an empty ``model``.

    Shape:
        - image, observed: :math:`(H, W, C)` float32 in [0, 1]; kernel: :math:`(h, w)`;
          returns the shape of ``image``
    """
    references = finishing_references(model)
    if not references:
        raise UsageError("finish_restoration needs a model reference, not none")
    total = sum(_finish_one(image, ref, device, observed, kernel) for ref in references)
    return (total / len(references)).astype(np.float32)


def _finish_one(image: np.ndarray, model: str, device: torch.device,
                observed: np.ndarray | None, kernel: np.ndarray | None) -> np.ndarray:
    """One finishing network's output (see :func:`finish_restoration`)."""
    from deblurcli.degrade import restoration_guide

    restorer = _finisher(model, str(device))
    guide = None
    wanted = restorer.info.guide_channels
    if wanted:
        if observed is None or kernel is None:
            raise UsageError(f"finishing model {model} reads a guide: pass observed and kernel")
        channels = wanted // 2  # the guide holds the model's image channels twice
        restored, seen = (a if a.shape[2] == channels else np.repeat(a[..., :1], channels, axis=2)
                          for a in (image, observed))
        guide = hwc_to_tensor(restoration_guide(seen, restored, kernel))
    out = restorer(hwc_to_tensor(np.ascontiguousarray(image)), guide=guide)
    return tensor_to_hwc(out).astype(np.float32)


def choose_kernel(pixels: np.ndarray, kernels: list[Tensor], sigma: float, nonblind: str,
                  params: dict[str, float], *, side: int = 1024,
                  device: torch.device | None = None
                  ) -> tuple[int, tuple[float, ...], np.ndarray]:
    """The kernel that best explains the photo: each restores the central ``side``² pixels
    (``nonblind`` with ``params``) and the lowest :func:`reblur_misfit` wins (ties: the first).

    Args:
        pixels: The blurry photo, ``H×W×C`` float in [0, 1].
        kernels: Candidate kernels (true-convolution orientation, centred), e.g. one per crop.
        sigma: The photo's noise std.
        nonblind: The non-blind solver (:data:`deblurcli.deconv.METHODS`).
        params: Its keyword parameters.
        side: Largest side of the compared region (0: the whole photo).
        device: Where the solves run.

    Returns:
        The winner's index, every candidate's misfit, and the winner's restoration of the
        compared region (``H×W×C`` float32, the whole photo when it fits in ``side``²).

    Shape:
        - pixels: :math:`(H, W, C)`; kernels: :math:`(h, w)` each
    """
    from deblurcli.deconv import deconvolve

    h, w = pixels.shape[:2]
    if side > 0:
        top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
        pixels = pixels[top:top + side, left:left + side]
    planes = hwc_to_tensor(np.ascontiguousarray(pixels)).to(device or "cpu")
    misfits: list[float] = []
    best: np.ndarray | None = None
    for k in kernels:
        image = tensor_to_hwc(deconvolve(planes, k, method=nonblind, **params)).astype(np.float32)
        misfits.append(reblur_misfit(image, pixels, k, sigma))
        if best is None or misfits[-1] < min(misfits[:-1]):
            best = image
    assert best is not None
    return int(np.argmin(misfits)), tuple(round(m, 4) for m in misfits), best


DELTA_PEAK = 0.9
"""A kernel with this much of its mass in one pixel is the "no-blur" solution."""
SHRUNK_RATIO = 0.4
"""A final kernel whose extent is below this fraction of the probe's is a collapsed blob."""
MAX_MISFIT = 1.8
"""Largest :func:`reblur_misfit` of a trusted estimate. On 40 ``shake`` photos (final weight
factor 2) the other 38 measured 1.03–1.67; the two estimates that lost 0.23 and 0.79 dB
(1.35 and 1.50 dB with the weight of the true-kernel rule) 1.93 and 2.08."""
RESOLVE_MISFIT_SLACK = 1.05
"""A ``finish_resolve`` round is kept when its :func:`reblur_misfit` is at most this multiple of
the one before: a kernel measured against the network's output must still explain the photo.
On ``shake`` photos 1–40 the round lowered the misfit on 39 and raised it by 0.25 % on one."""
MISFIT_NOISE_FLOOR = 0.004
"""Smallest luma noise std :func:`reblur_misfit` divides by (on clean photos the solver's own
bias, not the noise, sets the residual)."""
MIN_SHARPENING = 1.1
"""The output's edge sharpness must exceed the input's by this factor (no-reference check)."""
CONNECTED_LEVEL = 0.1
"""Entries at or above this fraction of the kernel's peak make up its strokes in
:func:`connected_mass`."""
MIN_CONNECTED_MASS = 0.6
"""Least share of a trusted kernel's strokes that lies in its largest connected piece. A camera
shake traces one continuous path. Of the 114 estimates on the ``shake`` photos that passed every
other check (2026-12-05, session 7), 110 measured 0.70–1.0; the four below were 223061 (0.34),
302008's third attempt (0.40), 253055 (0.56: parallel streaks from the photo's repeated
giraffes, 3.74 dB below its input) and 69040 (0.56)."""


def edge_sharpness(pixels: np.ndarray, noise: float) -> float:
    """No-reference sharpness: mean luma gradient magnitude over the strongest 2 % of edges,
    after a 3×3 box filter and minus the gradient noise alone would give (``noise``: its std).

    Deblurring raises it (edges get steeper); a kernel that explains nothing leaves it as it was.

    Shape:
        - pixels: :math:`(H, W, C)`
    """
    import cv2

    luma = np.ascontiguousarray(_luma(np.clip(pixels, 0, 1)), dtype=np.float32)
    smooth = cv2.blur(luma, (3, 3))
    grad = np.hypot(np.diff(smooth, axis=1)[:-1], np.diff(smooth, axis=0)[:, :-1])
    top = grad[grad >= np.quantile(grad, 0.98)]
    return float(max(top.mean() - 0.5 * noise, 1e-6))


def connected_mass(kernel: Tensor | np.ndarray, level: float = CONNECTED_LEVEL) -> float:
    """Share of a kernel's strokes in its largest connected piece: 1 for one path, less when the
    estimate is scattered over unconnected streaks and specks.

    The strokes are the entries at or above ``level`` of the peak; they are grown by one pixel
    before the 8-connected pieces are found (a trajectory sampled on the pixel grid can leave
    one-pixel gaps), and each piece weighs its strokes' mass.

    Shape:
        - kernel: :math:`(h, w)`
    """
    import cv2

    k = _float64(kernel)
    strokes = np.where(k >= level * k.max(), k, 0.0)
    grown = cv2.dilate((strokes > 0).astype(np.uint8), np.ones((3, 3), np.uint8))
    count, labels = cv2.connectedComponents(grown, connectivity=8)
    masses = np.bincount(labels.ravel(), weights=strokes.ravel(), minlength=count)[1:]
    return float(masses.max() / masses.sum()) if masses.sum() > 0 else 1.0


def kernel_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Shift-tolerant distance of two kernels, 0 (equal) … 2 (disjoint): the aligned kernel error
    (:func:`deblurcli.metrics.kernel_error`) over the mean of their squared norms."""
    from deblurcli.metrics import kernel_error

    ka = _float64(a)
    kb = _float64(b)
    ka, kb = ka / ka.sum(), kb / kb.sum()
    return kernel_error(ka, kb) / (0.5 * ((ka**2).sum() + (kb**2).sum()))


def reblur_misfit(restored: np.ndarray, blurry: np.ndarray, kernel: Tensor | np.ndarray,
                  noise: float) -> float:
    """How well a blind estimate explains the photo: the RMS of ``k ∗ x̂ − y`` in luma, over the
    luma noise std (at least :data:`MISFIT_NOISE_FLOOR`), away from the borders.

    With the right kernel the restored photo blurred again reproduces the input up to its noise
    and the regularisation (about 1.0–1.5); a wrong kernel leaves structure the prior cannot
    put into ``x̂`` (about 2 on the ``shake`` photos that lost more than 1 dB). Unlike
    :func:`edge_sharpness`, ringing does not fool it.

    Args:
        restored: The non-blind solve with ``kernel``, ``H×W×C`` in [0, 1].
        blurry: The input photo, same shape.
        kernel: ``h×w`` kernel, true-convolution orientation, centred.
        noise: The photo's noise std per channel (RGB).

    Shape:
        - restored, blurry: :math:`(H, W, C)`; kernel: :math:`(h, w)`
    """
    k = _float64(kernel)
    reblurred = convolve(_luma(np.clip(restored, 0, 1)), k)
    border = max(k.shape) // 2 + 4
    diff = (reblurred - _luma(blurry))[border:-border, border:-border]
    if diff.size == 0:
        return 0.0
    rms = float(np.sqrt(np.mean(np.square(diff, dtype=np.float64))))
    return rms / max(_luma_noise(noise, blurry.shape[2]), MISFIT_NOISE_FLOOR)


def degenerate(kernel: Tensor, size_probe: dict[str, object], sharpening: float,
               misfit: float = 0.0) -> tuple[tuple[str, ...], str]:
    """Which degenerate outcomes a blind estimate shows, and a phrase for the user.

    ``delta-kernel``: the kernel's peak holds more than :data:`DELTA_PEAK` of its mass;
    ``shrunk-kernel``: its :func:`kernel_extent` is below :data:`SHRUNK_RATIO` of the blur
    extent the size probe measured; ``scattered-kernel``: less than :data:`MIN_CONNECTED_MASS`
    of its strokes lie in one connected piece (:func:`connected_mass`); ``kernel-misfit``: the
    restored photo blurred again does not reproduce the input (:func:`reblur_misfit` above
    :data:`MAX_MISFIT`); ``not-sharper``:
    ``sharpening``, the restored photo's :func:`edge_sharpness` over the input's, is below
    :data:`MIN_SHARPENING`.

    Shape:
        - kernel: :math:`(h, w)`
    """
    found: list[str] = []
    notes: list[str] = []
    peak = float(kernel.max())
    if peak > DELTA_PEAK:
        found.append("delta-kernel")
        notes.append(f"the kernel is a near-delta, peak {peak:.2f}")
    extent = kernel_extent(kernel)
    probed = float(size_probe.get("extent", 0.0) or 0.0)  # type: ignore[arg-type]
    if probed >= 7 and extent < SHRUNK_RATIO * probed:
        found.append("shrunk-kernel")
        notes.append(f"the kernel spans {extent} px of a {probed:.0f}-px blur")
    connected = connected_mass(kernel)
    if connected < MIN_CONNECTED_MASS:
        found.append("scattered-kernel")
        notes.append(f"only {connected:.0%} of the kernel's strokes form one connected path")
    if misfit > MAX_MISFIT:
        found.append("kernel-misfit")
        notes.append(f"the kernel does not explain the photo (reblur misfit {misfit:.2f}x the "
                     "noise)")
    if not found and sharpening < MIN_SHARPENING:
        found.append("not-sharper")
        notes.append(f"edges only {sharpening:.2f}x as steep as in the input")
    return tuple(found), "; ".join(notes)


LUMA_NOISE_GAIN = math.sqrt(sum(w * w for w in _BT601))
"""Noise std of BT.601 luma relative to i.i.d. noise of the same std on R, G and B."""


def _luma_noise(sigma: float, channels: int) -> float:
    """Noise std of the luma plane for per-channel noise ``sigma`` (grey photos: ``sigma``)."""
    return sigma * LUMA_NOISE_GAIN if channels == 3 else sigma


def _gaussian_filter(y: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (reflect border) of an ``N×1×H×W`` tensor."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=y.dtype, device=y.device)
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    g = g / g.sum()
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), g.view(1, 1, -1, 1))


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


def _fit_kernel(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """A centred odd kernel zero-padded or cropped (renormalised) to the odd ``size``.

    Shape:
        - kernel: :math:`(h, w)`; output: ``size``
    """
    pad_h, pad_w = max(0, size[0] - kernel.shape[0]) // 2, max(0, size[1] - kernel.shape[1]) // 2
    kernel = F.pad(kernel, (pad_w, pad_w, pad_h, pad_h))
    return _crop_kernel(kernel, size)[0]


def _vote(kernel: Tensor, levels: list[dict[str, object]], y_full: Tensor, shape: tuple[int, int],
          cfg: FastConfig, dev: torch.device, seed: int,
          on_step: Callable[[LevelInfo], None] | None, noise: float = 0.0,
          observed: Tensor | None = None) -> tuple[Tensor, list[dict[str, object]]]:
    """Estimate again with every variant; keep the medoid kernel."""
    from deblurcli.metrics import kernel_error

    kernels, stats = [kernel], [levels]
    for variant in cfg.variants:
        vcfg = replace(cfg, variants=(), **dict(variant))  # type: ignore[arg-type]
        ksz = tuple(s + vcfg.kernel_margin for s in vcfg.kernel_size)
        plan = _plan(vcfg, shape, ksz)  # type: ignore[arg-type]
        k, lv = _estimate(y_full, plan, vcfg, vcfg.resolved_image_model, dev, seed, on_step,
                          noise, observed, top_scale=vcfg.top_scale)
        kernels.append(k)
        stats.append(lv)
    arrays = [k.double().cpu().numpy() for k in kernels]
    cost = [sum(kernel_error(a, b) for b in arrays) for a in arrays]
    best = int(np.argmin(cost))
    summary = [{"variant": dict(v) if i else {}, "levels": lv, "distance": round(c, 6),
                "chosen": i == best}
               for i, (v, lv, c) in enumerate(zip(((),) + cfg.variants, stats, cost, strict=True))]
    return kernels[best], summary  # type: ignore[return-value]


def _photo_kernel(luma: np.ndarray, kernel: Tensor, cfg: FastConfig, device: torch.device, *,
                  latent_weight: float = 0.0, latent: np.ndarray | None = None,
                  observed: np.ndarray | None = None) -> Tensor | None:
    """The blur kernel measured again on the photo's centre (at most ``cfg.choice_side``²).

    It is measured against ``latent`` (a sharp estimate of the whole photo's luma, e.g. the
    finished restoration) or, when None, against the luma restored with ``kernel`` at prior
    weight ``latent_weight``.

    ``observed`` (:func:`observed_mask` of the photo, or None): clipped highlights are left
    out of the solve.

    Returns None when the photo is too small for the kernel or the solve comes out empty.

    Shape:
        - luma, latent: :math:`(H, W)`, the photo's luma and its sharp estimate; kernel:
          :math:`(k_h, k_w)`; returns a kernel of ``cfg.kernel_size``, convolution orientation,
          centred, sum 1 (float64)
    """
    from deblurcli.deconv import deconvolve
    from deblurcli.optim.reference import solve_kernel

    assert cfg.kernel_size is not None
    size = max(cfg.kernel_size)
    margin = size // 2
    h, w = luma.shape
    if cfg.choice_side > 0:  # the central window choose_kernel compares
        top, left = max(0, (h - cfg.choice_side) // 2), max(0, (w - cfg.choice_side) // 2)
        luma = luma[top : top + cfg.choice_side, left : left + cfg.choice_side]
        if observed is not None:
            observed = observed[top : top + cfg.choice_side, left : left + cfg.choice_side]
        if latent is not None:
            latent = latent[top : top + cfg.choice_side, left : left + cfg.choice_side]
    ch, cw = luma.shape[0] - 2 * margin, luma.shape[1] - 2 * margin
    if ch < 16 or cw < 16:
        return None
    y = torch.from_numpy(np.ascontiguousarray(luma)).to(device)
    if latent is None:
        x = deconvolve(y[None, None], kernel.to(y), method="hyperlaplacian",
                       weight=latent_weight)[0, 0]
    else:
        x = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))
    fits = torch.ones(ch, cw, dtype=torch.bool)
    if observed is not None:  # clipped highlights are not fitted (observed_mask)
        fits = torch.from_numpy(np.ascontiguousarray(observed[margin : margin + ch,
                                                              margin : margin + cw]))
    # float32: 1.4× faster than float64, the kernel the same to ~1e-6 (docs/blind.md, Measured)
    k_corr = solve_kernel(y[margin : margin + ch, margin : margin + cw].float().cpu(),
                          x.float().cpu(), fits, size,
                          ridge=cfg.photo_solve_ridge, iterations=cfg.photo_solve_iterations)
    if float(k_corr.sum()) <= 0:
        return None
    k_corr = ops.project_kernel(k_corr, rel_threshold=cfg.photo_solve_threshold)
    resolved, _ = _crop_kernel(ops.center_kernel(ops.to_convolution(k_corr))[0], cfg.kernel_size)
    return resolved


def _refine_kernel(y: Tensor, kernel: Tensor, cfg: FastConfig, weight: float,
                   observed: Tensor | None = None) -> Tensor:
    """Alternate a MAP latent image and the kernel step at full resolution.

    ``observed`` (0/1 like ``y``, or None): the pixels the kernel step fits.

    Shape:
        - y: :math:`(H, W)` (the prefiltered estimation crop); kernel: :math:`(h, w)`,
          convolution orientation, odd sides; returns the same.
    """
    from deblurcli.deconv import deconvolve

    kh, kw = kernel.shape
    h, w = y.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    # the part of y that a same-size latent explains without its borders (valid correlation)
    inner = (slice(top, h - (kh - 1 - top)), slice(left, w - (kw - 1 - left)))
    obs = _EdgeObservations(y[inner], (kh, kw), None if observed is None else observed[inner])
    # the exact k-step: its latent has real edges up to the crop's border, and a handful of
    # alternations is too few for the autocorrelation step's prediction of their blurred
    # copies to settle (docs/blind.md, session 12)
    cfg = replace(cfg, kernel_normal="exact")
    allowed = None  # correlation orientation, like the kernel step's result
    if cfg.refine_support >= 0:
        r = int(cfg.refine_support * max(kh, kw))
        support = (kernel >= 0.05 * kernel.max()).to(kernel.dtype)[None, None]
        allowed = ops.to_convolution(F.max_pool2d(support, 2 * r + 1, stride=1, padding=r)[0, 0])
    n = cfg.refine_iters
    for i in range(n):
        step_weight = weight * cfg.refine_start ** ((n - 1 - i) / max(1, n - 1))
        latent = deconvolve(y[None, None], kernel, method="hyperlaplacian",
                            weight=step_weight)[0, 0]
        k_corr = obs.kernel_step(latent, ops.to_convolution(kernel), cfg)
        if allowed is not None:
            k_corr = ops.project_kernel(k_corr * allowed)
        kernel = ops.to_convolution(ops.center_kernel(k_corr)[0])
    return kernel


def _estimate(y_full: Tensor, plan: list[tuple[float, tuple[int, int], tuple[int, int]]],
              cfg: FastConfig, model: str, dev: torch.device, seed: int,
              on_step: Callable[[LevelInfo], None] | None, noise: float = 0.0,
              observed: Tensor | None = None, top_scale: float = 1.0,
              start: tuple[float, Tensor] | None = None
              ) -> tuple[Tensor, list[dict[str, object]]]:
    """Coarse-to-fine kernel estimate (convolution orientation) and per-level statistics.

    With the pixel image model only the levels up to ``top_scale`` run (at least the coarsest);
    the kernel is then resampled to the last level's size of ``plan``. ``start`` =
    ``(scale, kernel)``, a kernel already estimated on these pixels at that scale (convolution
    orientation, any odd size): the levels up to that scale are skipped and the next one starts
    from it, centred and cut or padded to the plan's kernel size at that scale (pixel image
    model only). When no level is left (the start's scale reaches ``top_scale``), that kernel,
    resampled, is the estimate.

    ``observed`` (``1×1×H×W`` 0/1 like ``y_full``, or None): the pixels the pixel model fits;
    on each level a pixel counts only when every full-resolution pixel it is resized from does.
    """
    kernel: Tensor | None = None  # convolution orientation between levels
    estimate: Tensor | None = None
    levels: list[dict[str, object]] = []
    full_ksize = plan[-1][2]
    if model == "pixels":
        plan = _levels_up_to(plan, top_scale)
    if start is not None and model == "pixels":
        start_scale, start_kernel = start
        kh, kw = full_ksize
        kernel = _fit_kernel(ops.center_kernel(start_kernel)[0],
                             (ops.odd(kh * start_scale), ops.odd(kw * start_scale)))
        plan = [level for level in plan if level[0] > start_scale + 1e-9]
    for i, (scale, isz, ksz) in enumerate(plan):
        y = _resize(y_full, isz)
        t0 = time.perf_counter()
        steps = cfg.outer if model == "pixels" else cfg.prefit + cfg.iters + cfg.ssim_iters

        def report(step: int, loss: float, i: int = i, steps: int = steps) -> None:
            if on_step is not None:
                on_step(LevelInfo(level=i, levels=len(plan), step=step, steps=steps, loss=loss))

        if model == "pixels":
            level_observed = None
            if observed is not None:
                level_observed = (_resize(observed, isz)[0, 0] >= 0.999).to(y.dtype)
            if kernel is None:
                r = torch.arange(ksz[0], device=dev) - (ksz[0] - 1) / 2
                c = torch.arange(ksz[1], device=dev) - (ksz[1] - 1) / 2
                k0 = torch.exp(-(r[:, None] ** 2 + c[None, :] ** 2) / 2)
                k_corr = k0 / k0.sum()
            else:
                k_corr = ops.to_convolution(ops.resize_kernel(kernel, ksz))
            k_corr, _ = _vb_level(y[0, 0], k_corr, cfg, with_sigma=cfg.method == "vdip-sparse",
                                  report=report, noise=noise * scale, observed=level_observed)
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
    if tuple(kernel.shape) != tuple(full_ksize):
        kernel = ops.center_kernel(ops.resize_kernel(kernel, full_ksize))[0]
    return kernel, levels

