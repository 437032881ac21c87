"""Blind deconvolution by per-image optimisation: VDIP (Std/Sparse/Extreme) and DIP/SelfDeblur.

The contract is ``specs/vdip.md``: a skip-net image generator ``G_x`` and an FC/softmax kernel
generator ``G_k`` are fitted to one blurry image. The loop in :func:`fit` is explicit:

1. **pre-fit** (VDIP family): μ → y, σ → 0, k → box, by MSE (``prefit`` steps);
2. **variational phase** (``t < ssim_from``): minus the ELBO of §4 — the one-sample
   reparameterised derivative-domain likelihood, plus λ_t × (−entropy + image prior + 10·½‖k̄‖²);
   for ``dip`` (SelfDeblur) plain MSE;
3. **SSIM phase** (``t >= ssim_from``): ``1 − SSIM(A(μ, k̄), y)`` on the mean only.

Adam with lr 1e-2 (image net) / 1e-4 (kernel net), halved at 2000/3000/4000 (closed form). Every
choice where the published code and the paper differ is a field of :class:`VDIPConfig`; the
``paper`` presets reproduce the code. Progress goes through the ``on_step`` callback.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from deblurcli.archs.dip_nets import (
    KernelFCN,
    KernelFCNConfig,
    SkipNet,
    SkipNetConfig,
    min_input_size,
)
from deblurcli.errors import UsageError
from deblurcli.methods import names as method_names
from deblurcli.optim import ops

__all__ = [
    "METHODS",
    "BlindResult",
    "StepInfo",
    "VDIPConfig",
    "fit",
    "fit_with_refinement",
    "paper_config",
    "refine_config",
]

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = tuple(method_names("blind"))
"""Method names (CLI spelling), from the method table (:mod:`deblurcli.methods`, kind ``blind``).
``vdip-sparse`` is the default: best in the paper's tables."""

# method → (σ head, image prior, entropy + kernel prior in the variational phase)
_TRAITS: dict[str, tuple[bool, str | None, bool]] = {
    "vdip-sparse": (True, "sparse", True),
    "vdip-extreme": (True, "extreme", True),
    "vdip-std": (True, None, False),
    "dip-sparse": (False, "sparse", True),
    "dip-extreme": (False, "extreme", True),
    "dip": (False, None, False),
}
if set(_TRAITS) != set(METHODS):  # a blind row of the table without an implementation
    raise RuntimeError(f"vdip implements {sorted(_TRAITS)}, the method table lists {METHODS}")


class BlindDeconvolutionError(UsageError):
    """The image or the configuration cannot be used for blind deconvolution."""


@dataclass(frozen=True)
class VDIPConfig:
    """Everything that defines one blind-deconvolution fit (defaults: VDIP-Sparse, paper)."""

    method: str = "vdip-sparse"
    """One of :data:`METHODS`."""
    kernel_size: tuple[int, int] = (21, 21)
    """``(h, w)``, both odd."""
    iters: int = 5000
    """Main steps after the pre-fit."""
    prefit: int = 500
    """Warm-up steps μ→y, σ→0, k→box (code: 500 Sparse, 5 Extreme; paper: none; DIP: 0)."""
    ssim_from: int = 2000
    """First main step of the ``1 − SSIM`` phase (VDIP: end of the VB phase; DIP: T_mse)."""
    lam: float = 0.1
    """KL weight λ ("noise level") at step 0 (Sparse 0.1; Extreme 1e-4)."""
    lam_decay: float = 0.1
    """λ is multiplied by this every ``lam_every`` main steps."""
    lam_every: int = 1000
    """Steps between λ decays."""
    likelihood: Literal["derivatives", "plain"] = "derivatives"
    """VB data term: ``derivatives`` adds the code's 1st/2nd-derivative residuals
    (``specs/vdip.md`` §4.2); ``plain`` is the paper's ½‖A(x, k) − y‖² alone."""
    kernel_prior_weight: float = 10.0
    """Weight of the Gaussian kernel prior ½‖k̄‖² inside the KL (code 10, paper 1)."""
    lr_image: float = 1e-2
    """Adam learning rate of the image generator."""
    lr_kernel: float = 1e-4
    """Adam learning rate of the kernel generator (or of the kernel logits)."""
    milestones: tuple[int, ...] = (2000, 3000, 4000)
    """Main steps at which both learning rates are multiplied by ``gamma``."""
    gamma: float = 0.5
    """Learning-rate factor at each milestone."""
    reg_noise: float = 0.0
    """Std of the fresh Gaussian jitter added to the image-net input every step (DIP 0.001)."""
    input_channels: int = 3
    """Channels of the image-net noise input (VDIP 3, SelfDeblur 8)."""
    input_scale: float = 0.1
    """Inputs are ``U(0, 1) × input_scale``."""
    net: SkipNetConfig = field(default_factory=SkipNetConfig)
    """Image-generator widths; ``in_channels``/``out_channels`` are set by :func:`fit`."""
    kernel_param: Literal["fcn", "logits"] = "fcn"
    """``fcn``: the published FC generator; ``logits``: a free softmax parameter (non-reference)."""
    kernel_hidden: int = 1000
    """Hidden width of the FC kernel generator."""
    color: Literal["rgb", "y"] = "rgb"
    """How :func:`deblurcli.optim.deblur_pixels` feeds colour: VDIP rgb jointly, SelfDeblur Y."""
    extreme_window: int = 35
    """Side of the dark/bright-channel window."""
    bright_var_bug: bool = False
    """Reproduce the published bright-channel variance (missing −8μσ² term)."""
    blur: Literal["conv", "fft", "auto"] = "conv"
    """Forward operator implementation; ``auto`` picks the FFT for kernels over 15×15."""
    bf16: bool = False
    """Run the image generator in bfloat16 autocast on CUDA (losses stay float32)."""
    min_side: int = 64
    """Images with a side below this are reflect-padded to it (with a warning)."""
    delta_threshold: float = 0.9
    """Warn when the kernel's largest entry exceeds this (the no-blur solution)."""
    patience: int = 0
    """Early stopping (fast path): stop when the data term of the last ``patience`` main steps
    improved by less than ``tol`` (relative) on the ``patience`` steps before; 0 = never."""
    tol: float = 1e-3
    """Relative improvement below which :attr:`patience` stops the loop."""
    recenter: bool = True
    """Translate the final kernel to its centre of mass and crop the image to match (the
    published code keeps the raw kernel and the central crop: ``False``)."""
    channels_last: bool = True
    """Run the image generator in channels-last memory layout (same maths, ~10 % faster on CPU)."""
    refine: Literal["off", "collapse", "always"] = "off"
    """SelfDeblur's non-blind re-run (``specs/vdip.md`` §2.3): a fresh image generator fitted
    with ``1 − SSIM`` to the estimated kernel, which stays fixed (1000 steps, lr 0.01, ×0.5 at
    700/800/900, input jitter 0.001). ``collapse``: only when the image collapsed while the
    kernel did not; ``always``: after every fit. The published VDIP code never runs it."""
    refine_steps: int = 1000
    """Steps of the non-blind re-run; its milestones sit at 70/80/90 % of them."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BlindDeconvolutionError(
                f"unknown method {self.method!r}; use {', '.join(METHODS)}"
            )
        h, w = self.kernel_size
        if h < 1 or w < 1 or h % 2 == 0 or w % 2 == 0:
            raise BlindDeconvolutionError(f"kernel size must be odd, got {h}x{w}")
        if self.iters < 0 or self.prefit < 0:
            raise BlindDeconvolutionError("iters and prefit must be >= 0")
        for name, allowed in (("color", ("rgb", "y")), ("kernel_param", ("fcn", "logits")),
                              ("blur", ("conv", "fft", "auto")),
                              ("refine", ("off", "collapse", "always")),
                              ("likelihood", ("derivatives", "plain"))):
            if getattr(self, name) not in allowed:
                raise BlindDeconvolutionError(f"{name} must be one of {', '.join(allowed)}")

    @property
    def uses_sigma(self) -> bool:
        """Whether the generator has a σ head (VDIP) or only a mean (DIP family)."""
        return _TRAITS[self.method][0]

    @property
    def total_steps(self) -> int:
        """Pre-fit plus main steps."""
        return self.prefit + self.iters


def paper_config(method: str = "vdip-sparse", kernel_size: tuple[int, int] = (21, 21),
                 *, dataset: Literal["levin", "lai", "real"] = "levin", **overrides: object
                 ) -> VDIPConfig:
    """The published hyper-parameters of ``method`` (``specs/vdip.md`` §6.1).

    ``dataset`` only matters for ``dip`` (SelfDeblur): its MSE phase is 1000 steps on Levin and
    500 elsewhere; the ``real`` script runs 2500 steps with milestones 1600/1900/2200.
    """
    if method not in METHODS:
        raise BlindDeconvolutionError(f"unknown method {method!r}; use {', '.join(METHODS)}")
    sigma, prior, _ = _TRAITS[method]
    if method == "dip":
        cfg = VDIPConfig(
            method=method, kernel_size=kernel_size, prefit=0,
            ssim_from=1000 if dataset == "levin" else 500, lam=0.0, reg_noise=1e-3,
            input_channels=8, color="y",
            iters=2500 if dataset == "real" else 5000,
            milestones=(1600, 1900, 2200) if dataset == "real" else (2000, 3000, 4000),
        )
    else:
        extreme = prior == "extreme"
        cfg = VDIPConfig(
            method=method, kernel_size=kernel_size, prefit=5 if extreme else 500,
            lam=1e-4 if extreme else 0.1,
        )
    return replace(cfg, **overrides)  # type: ignore[arg-type]


@dataclass
class StepInfo:
    """What the loop reports after every optimiser step."""

    step: int
    """0-based index over all steps (pre-fit included)."""
    total: int
    """Total number of steps."""
    phase: str
    """``prefit``, ``vb`` (or ``mse`` for DIP) or ``ssim``."""
    loss: float
    """Loss of this step."""
    lr: float
    """Image-net learning rate used."""
    skipped: bool
    """True when the step was skipped because a gradient was not finite."""
    estimate: Callable[[], Tensor]
    """Returns this step's cropped mean image (1×C×H×W, detached, clamped), on demand."""
    kernel: Callable[[], Tensor]
    """Returns this step's kernel in convolution orientation (h×w, detached), on demand."""


@dataclass
class BlindResult:
    """Outcome of :func:`fit`."""

    image: Tensor
    """Deblurred image, 1×C×H×W in [0, 1] (central crop of the generator mean)."""
    kernel: Tensor
    """Estimated kernel in **true-convolution** orientation, centred, non-negative, sum 1."""
    history: list[dict[str, float]]
    """Per-step ``{"step", "loss", "data", "lr"}``; ``data`` is the data term alone."""
    sigma: Tensor | None = None
    """VDIP's per-pixel posterior std (1×C×H×W), None for the DIP family."""
    skipped_steps: int = 0
    """Steps whose update was skipped because of a non-finite gradient."""
    warnings: list[str] = field(default_factory=list)
    """Human-readable warnings (collapse, delta kernel, small image)."""
    seconds: float = 0.0
    """Wall-clock time of the fit."""
    shift: tuple[int, int] = (0, 0)
    """Whole-pixel translation applied to centre the kernel (the image was cropped to match)."""
    collapse: tuple[str, ...] = ()
    """Degenerate solutions detected: ``"delta-kernel"`` and/or ``"dark-image"``."""


def _lr_factor(cfg: VDIPConfig, t: int) -> float:
    return cfg.gamma ** sum(1 for m in cfg.milestones if t >= m)


def _lam(cfg: VDIPConfig, t: int) -> float:
    return cfg.lam * cfg.lam_decay ** (t // cfg.lam_every) if cfg.lam_every > 0 else cfg.lam


def _sparse_prior(mu: Tensor, sigma: Tensor | None) -> Tensor:
    """¼ Σ sg(ξ)·E[(∂μ)²] over both directions, normalised by C·(H'−1)·(W'−1) (§4.3)."""
    ev = ops.diff_v(mu).square()
    eh = ops.diff_h(mu).square()
    if sigma is not None:
        s2 = sigma.square()
        ev = ev + s2[..., 1:, :] + s2[..., :-1, :]
        eh = eh + s2[..., :, 1:] + s2[..., :, :-1]
    xi_v = 1.0 / (ev.detach() + 1e-6)
    xi_h = 1.0 / (eh.detach() + 1e-6)
    c, h, w = mu.shape[1:]
    return 0.25 * ((xi_v * ev).sum() + (xi_h * eh).sum()) / (c * (h - 1) * (w - 1))


def _extreme_prior(mu: Tensor, sigma: Tensor | None, cfg: VDIPConfig,
                   gen: torch.Generator) -> Tensor:
    """Sampled dark/bright-channel log prior, Σ D/sg(D) normalised by 4(H'−s+1)(W'−s+1) (§4.4)."""
    size = cfg.extreme_window
    if sigma is None:
        dark_u = mu.square()
        bright_u = (1 - mu).square()
    else:
        s2 = sigma.square()
        s4 = s2.square()
        var_d = 4 * mu.square() * s2 + 2 * s4
        if cfg.bright_var_bug:
            var_b = 4 * s2 + 4 * mu.square() * s2 + 2 * s4
        else:
            var_b = 4 * (1 - mu).square() * s2 + 2 * s4
        eps_d = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        eps_b = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
        dark_u = mu.square() + s2 + eps_d * torch.sqrt(var_d + 1e-32)
        bright_u = (1 - mu).square() + s2 + eps_b * torch.sqrt(var_b + 1e-32)
    dark = ops.min_pool(dark_u, size)
    bright = ops.min_pool(bright_u, size)
    total = (dark / (dark.detach() + 1e-45)).sum() + (bright / (bright.detach() + 1e-45)).sum()
    return total / (4 * dark.shape[-2] * dark.shape[-1])


class _Kernel(nn.Module):
    """The kernel parametrisation: published FC generator, or free logits (fast path)."""

    def __init__(self, cfg: VDIPConfig, gen: torch.Generator, init: Tensor | None) -> None:
        super().__init__()
        h, w = cfg.kernel_size
        self.kind = cfg.kernel_param
        if self.kind == "fcn":
            self.net = KernelFCN(KernelFCNConfig(kernel_size=(h, w), hidden=cfg.kernel_hidden))
            z = torch.rand(self.net.config.in_features, generator=gen) * cfg.input_scale
            self.register_buffer("z", z)
        else:
            logits = torch.zeros(h * w) if init is None else torch.log(init.flatten() + 1e-6)
            self.logits = nn.Parameter(logits - logits.max())
        self.size = (h, w)

    def forward(self) -> Tensor:
        if self.kind == "fcn":
            return self.net(self.z)
        return torch.softmax(self.logits, dim=0).reshape(self.size)


def _pad_small(y: Tensor, min_side: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    h, w = y.shape[-2:]
    ph, pw = max(0, min_side - h), max(0, min_side - w)
    if ph == 0 and pw == 0:
        return y, (0, 0, 0, 0)
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return torch.nn.functional.pad(y, pads, mode=mode), pads


def fit(
    blurry: Tensor,
    cfg: VDIPConfig,
    *,
    on_step: Callable[[StepInfo], None] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    init_kernel: Tensor | None = None,
    init_image: Tensor | None = None,
) -> BlindResult:
    """Fit the generators of ``cfg.method`` to one blurry image and return image and kernel.

    Args:
        blurry: The observation y in [0, 1] (the channels are processed jointly).
        cfg: Method and hyper-parameters (see :func:`paper_config`).
        on_step: Called after every step with a :class:`StepInfo`.
        seed: Seeds the network initialisation, the inputs and every sampled noise; CPU runs
            with the same seed, thread count and torch build are bit-identical.
        device: Where to run (``deblurcli.engine.device.resolve_device`` spelling or a device).
        init_kernel: Optional starting kernel in **convolution** orientation (resized to
            ``cfg.kernel_size``); it replaces the box as the pre-fit target (``fcn``) or sets
            the logits (``logits``).
        init_image: Optional pre-fit target for μ instead of y (same shape as ``blurry``).

    Returns:
        The :class:`BlindResult`.

    Raises:
        BlindDeconvolutionError: bad input layout, or an image too small for the method.

    Shape:
        - blurry: :math:`(1, C, H, W)`
        - init_kernel: :math:`(h, w)` any size; init_image: :math:`(1, C, H, W)`
    """
    if blurry.ndim != 4 or blurry.shape[0] != 1:
        raise BlindDeconvolutionError(f"blurry must be 1×C×H×W, got {tuple(blurry.shape)}")
    from deblurcli.engine.device import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    started = time.perf_counter()
    warnings: list[str] = []
    sigma_head, prior, kl_terms = _TRAITS[cfg.method]
    y, pads = _pad_small(blurry.float(), cfg.min_side)
    if any(pads):
        warnings.append(
            f"image {tuple(blurry.shape[-2:])} is smaller than {cfg.min_side} px: reflect-padded; "
            "results on small images are unreliable"
        )
    target = None if init_image is None else _pad_small(init_image.float(), cfg.min_side)[0]
    kh, kw = cfg.kernel_size
    c, h, w = y.shape[1:]
    hp, wp = h + kh - 1, w + kw - 1
    net_cfg = replace(cfg.net, in_channels=cfg.input_channels,
                      out_channels=2 * c if sigma_head else c)
    need = max(min_input_size(net_cfg), cfg.extreme_window if prior == "extreme" else 0)
    if min(hp, wp) < need:
        raise BlindDeconvolutionError(
            f"{cfg.method} needs the padded image (H+h-1)×(W+w-1) ≥ {need} px per side, got "
            f"{hp}×{wp}; use a larger image or kernel"
        )
    need_bytes, have_bytes = fit_memory_bytes(hp, wp, net_cfg), device_memory_bytes(dev)
    if need_bytes > 0.8 * have_bytes:
        raise BlindDeconvolutionError(
            f"the published generator needs about {need_bytes / 2**30:.0f} GiB for a {h}×{w} "
            f"image, and {dev} has {have_bytes / 2**30:.0f} GiB; use --preset fast (any size) "
            "or a crop (the reference code crops to 512×512)"
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        image_net = SkipNet(net_cfg).to(dev)
        z = (torch.rand(1, cfg.input_channels, hp, wp, generator=gen) * cfg.input_scale).to(dev)
        if cfg.channels_last:
            image_net = image_net.to(memory_format=torch.channels_last)
            z = z.contiguous(memory_format=torch.channels_last)
        k_init = None
        if init_kernel is not None:
            k_init = ops.to_convolution(ops.resize_kernel(init_kernel.float(), (kh, kw)))
        kernel_mod = _Kernel(cfg, gen, k_init).to(dev)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    y = y.to(dev)
    target = y if target is None else target.to(dev)
    k_target = (torch.full((kh, kw), 1.0 / (kh * kw), device=dev) if k_init is None
                else k_init.to(dev))
    blur = _pick_blur(cfg, dev)
    optimizer = torch.optim.Adam([
        {"params": image_net.parameters(), "lr": cfg.lr_image},
        {"params": kernel_mod.parameters(), "lr": cfg.lr_kernel},
    ])
    top, left = (kh - 1) // 2, (kw - 1) // 2
    n_pix = c * hp * wp
    window = ops.gaussian_window(device=dev)
    history: list[dict[str, float]] = []
    skipped = 0
    autocast = cfg.bf16 and dev.type == "cuda"

    def generate(inp: Tensor) -> tuple[Tensor, Tensor | None]:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
            out = image_net(inp)
        # back to NCHW: the losses' small depthwise convs are slow on channels-last tensors
        out = out.float().contiguous(memory_format=torch.contiguous_format)
        return (out[:, :c], out[:, c:]) if sigma_head else (out, None)

    with torch.enable_grad():  # callers such as bench may hold no_grad
        for step in range(cfg.total_steps):
            t = step - cfg.prefit  # main-step index; negative during the pre-fit
            factor = _lr_factor(cfg, max(t, 0))
            optimizer.param_groups[0]["lr"] = cfg.lr_image * factor
            optimizer.param_groups[1]["lr"] = cfg.lr_kernel * factor
            inp = z
            if cfg.reg_noise > 0:
                inp = z + cfg.reg_noise * torch.randn(z.shape, generator=noise_gen, device=dev)
            mu, sigma = generate(inp)
            k = kernel_mod()
            if t < 0:
                phase = "prefit"
                crop_mu = mu[..., top : top + h, left : left + w]
                if sigma is not None:
                    crop_s = sigma[..., top : top + h, left : left + w]
                    loss = torch.cat([crop_mu - target, crop_s], dim=1).square().mean()
                else:
                    loss = (crop_mu - target).square().mean()
                loss = loss + (k - k_target).square().mean()
                data = loss
            elif t >= cfg.ssim_from:
                phase = "ssim"
                loss = 1 - ops.ssim_same(blur(mu, k), y, window)
                data = loss
            elif cfg.method == "dip":
                phase = "mse"
                loss = (blur(mu, k) - y).square().mean()
                data = loss
            else:
                phase = "vb"
                if sigma is not None:
                    eps = torch.randn(mu.shape, generator=noise_gen, device=dev)
                    sample = mu + sigma * eps
                else:
                    sample = mu
                residual = blur(sample, k) - y
                energy = (ops.derivative_residual_energy(residual)
                          if cfg.likelihood == "derivatives" else 0.5 * residual.square().sum())
                loss = data = energy / n_pix
                if kl_terms:
                    lam = _lam(cfg, t)
                    reg = 0.5 * cfg.kernel_prior_weight * k.square().sum()
                    if sigma is not None:
                        reg = reg - torch.log(sigma.clamp_min(1e-45)).mean()
                    if prior == "sparse":
                        reg = reg + _sparse_prior(mu, sigma)
                    elif prior == "extreme":
                        reg = reg + _extreme_prior(mu, sigma, cfg, noise_gen)
                    loss = loss + lam * reg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            finite = all(
                p.grad is None or bool(torch.isfinite(p.grad).all())
                for group in optimizer.param_groups for p in group["params"]
            )
            if finite:
                optimizer.step()
            else:
                skipped += 1
            value = float(loss.detach())
            history.append({"step": step, "loss": value, "data": float(data.detach()),
                            "lr": cfg.lr_image * factor})
            if on_step is not None:
                mu_d, k_d = mu.detach(), k.detach()
                on_step(StepInfo(
                    step=step, total=cfg.total_steps, phase=phase, loss=value,
                    lr=cfg.lr_image * factor, skipped=not finite,
                    estimate=lambda m=mu_d: m[..., top : top + h, left : left + w].clamp(0, 1),
                    kernel=lambda kk=k_d: ops.to_convolution(kk),
                ))
            in_phase = t - cfg.ssim_from if t >= cfg.ssim_from else t  # steps since the phase began
            if cfg.patience and in_phase >= 2 * cfg.patience and _plateau(
                history, cfg.patience, cfg.tol
            ):
                log.info("early stop at step %d (data term plateau)", step)
                break

    with torch.no_grad():  # one more forward in train mode (BatchNorm statistics of this image)
        mu, sigma = generate(z)
        k_corr = kernel_mod().float()
    k_centred, (dy, dx) = ops.center_kernel(k_corr) if cfg.recenter else (k_corr, (0, 0))
    # A kernel translated by d explains y with the latent image translated by d: crop to match.
    r0, c0 = top - dy, left - dx
    image = mu[..., r0 : r0 + h, c0 : c0 + w].clamp(0, 1)
    sig = None if sigma is None else sigma[..., r0 : r0 + h, c0 : c0 + w]
    if any(pads):
        pl, pr, pt, pb = pads
        image = image[..., pt : h - pb, pl : w - pr]
        sig = None if sig is None else sig[..., pt : h - pb, pl : w - pr]
    kernel = ops.to_convolution(k_centred)
    found = _sanity(image, blurry.to(dev), kernel, cfg)
    warnings += [message for _, message in found]
    if skipped:
        warnings.append(f"{skipped} step(s) skipped because of non-finite gradients")
    for message in warnings:
        log.warning(message)
    return BlindResult(
        image=image.cpu(), kernel=kernel.cpu(), history=history,
        sigma=None if sig is None else sig.cpu(), skipped_steps=skipped, warnings=warnings,
        seconds=time.perf_counter() - started, shift=(dy, dx),
        collapse=tuple(kind for kind, _ in found),
    )


def refine_config(cfg: VDIPConfig) -> VDIPConfig:
    """The non-blind re-run of SelfDeblur (``specs/vdip.md`` §2.3) for a fit made with ``cfg``.

    The kernel is a free softmax parameter initialised to the estimate with learning rate 0, so
    it stays fixed; the image generator is SelfDeblur's (8 input channels, mean only) and is
    fitted with ``1 − SSIM`` from the first step (1000 steps by default).
    """
    n = cfg.refine_steps
    return replace(
        cfg, method="dip", prefit=0, iters=n, ssim_from=0, lam=0.0, lr_image=0.01,
        lr_kernel=0.0, milestones=(n * 7 // 10, n * 8 // 10, n * 9 // 10), gamma=0.5,
        reg_noise=1e-3, input_channels=8,
        kernel_param="logits", recenter=False, patience=0, refine="off",
    )


def fit_with_refinement(
    blurry: Tensor,
    cfg: VDIPConfig,
    *,
    on_step: Callable[[StepInfo], None] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> BlindResult:
    """:func:`fit`, then SelfDeblur's non-blind re-run when ``cfg.refine`` asks for it.

    The re-run keeps the blind kernel and replaces the image; its steps are reported to
    ``on_step`` with phase ``refine`` (their ``step`` continues after the blind fit's).

    Shape:
        - blurry: :math:`(1, C, H, W)`
    """
    result = fit(blurry, cfg, on_step=on_step, seed=seed, device=device)
    wanted = cfg.refine == "always" or (
        cfg.refine == "collapse" and "dark-image" in result.collapse
        and "delta-kernel" not in result.collapse
    )
    if not wanted:
        return result
    offset = len(result.history)
    total = offset + refine_config(cfg).total_steps

    def relay(info: StepInfo) -> None:
        if on_step is not None:
            on_step(replace(info, step=offset + info.step, total=total, phase="refine"))

    second = fit(blurry, refine_config(cfg), on_step=relay, seed=seed, device=device,
                 init_kernel=result.kernel)
    notes = [w for w in result.warnings if "image collapsed" not in w]
    notes.append("image re-estimated with the blind kernel fixed (SelfDeblur's non-blind re-run)")
    return replace(
        result, image=second.image, sigma=None,
        history=result.history + [{**h, "step": offset + h["step"]} for h in second.history],
        skipped_steps=result.skipped_steps + second.skipped_steps,
        warnings=notes + [w for w in second.warnings if w not in notes],
        seconds=result.seconds + second.seconds,
        collapse=tuple(k for k in second.collapse if k == "dark-image"),
    )


def fit_memory_bytes(height: int, width: int, net: SkipNetConfig) -> float:
    """Rough peak memory of one training step of the image generator on a padded
    ``height × width`` input: activations kept for the backward pass (about 9.5 kB per pixel
    for the published 128-channel widths, measured on the CPU at 273² and 529²) plus the
    non-local affinity matrices of the deeper scales, which grow with the *square* of the
    pixel count: about 0.85 GiB at 255², 11 GiB at 1024², 220 GiB at 12 MP."""
    pixels = height * width
    widths = max(net.down_channels) / 128
    first = len(net.down_channels) if net.nonlocal_from is None else net.nonlocal_from
    # scale i holds (P / 4^(i+1)) positions against P / 4^(i+2) pooled ones, 3 float32 copies
    affinity = sum(12 * (pixels / 4 ** (i + 1)) * (pixels / 4 ** (i + 2))
                   for i in range(first, len(net.down_channels)))
    return 180 * 2**20 + 9.7e3 * widths * pixels + affinity


def device_memory_bytes(device: torch.device) -> float:
    """Total memory of ``device`` (GPU memory, or the machine's RAM for the CPU)."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: do not guess
        return math.inf


def _plateau(history: list[dict[str, float]], patience: int, tol: float) -> bool:
    recent = sum(h["data"] for h in history[-patience:]) / patience
    before = sum(h["data"] for h in history[-2 * patience : -patience]) / patience
    return before - recent < tol * abs(before)


def _pick_blur(cfg: VDIPConfig, dev: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
    if cfg.blur == "fft" or (cfg.blur == "auto" and math.prod(cfg.kernel_size) > 15 * 15):
        return ops.blur_valid_fft
    return ops.blur_valid


def _sanity(image: Tensor, blurry: Tensor, kernel: Tensor, cfg: VDIPConfig
            ) -> list[tuple[str, str]]:
    """The degenerate solutions of ``specs/vdip.md`` §10.5 as ``(kind, message)``: a delta
    kernel (``delta-kernel``) or a collapsed, almost black image (``dark-image``)."""
    found = []
    peak = float(kernel.max())
    if peak > cfg.delta_threshold:
        found.append(("delta-kernel",
            f"kernel collapsed to a near-delta (max {peak:.2f}): the no-blur solution; "
            "try another --seed or a larger --kernel-size"))
    mean_x, mean_y = float(image.mean()), float(blurry.mean())
    if mean_y > 0.05 and mean_x < 0.25 * mean_y:
        found.append(("dark-image",
            f"image collapsed (mean {mean_x:.3f} vs {mean_y:.3f} in the input); "
            "try --restarts 1 or --param refine=collapse (SelfDeblur's non-blind re-run)"))
    return found
