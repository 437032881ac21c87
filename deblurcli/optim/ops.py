"""Operators of DIP/VDIP blind deconvolution, as plain functions with shape contracts.

Conventions (``specs/vdip.md`` §1):

* The forward operator :func:`blur_valid` is a **valid cross-correlation** of every channel with
  one shared kernel, like ``conv2d``: an ``H'×W'`` latent image and an ``h×w`` kernel give an
  ``(H'-h+1)×(W'-w+1)`` observation. The kernel learned in that model is the 180°-rotated PSF;
  :func:`to_convolution` flips it for true-convolution consumers (``deblurcli.deconv``, PNG export).
* Finite differences are forward ``[-1, 1]`` in valid mode: :func:`diff_v` along rows,
  :func:`diff_h` along columns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from deblurcli.deconv import fast_fft_size

__all__ = [
    "blur_valid",
    "blur_valid_fft",
    "center_kernel",
    "centroid_offset",
    "derivative_residual_energy",
    "diff_h",
    "diff_v",
    "gaussian_window",
    "min_pool",
    "project_kernel",
    "register_to_kernel",
    "resize_kernel",
    "ssim_same",
    "to_convolution",
    "translate",
]


def _check_image(x: Tensor, name: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be N×C×H×W, got shape {tuple(x.shape)}")


def _check_kernel(k: Tensor, x: Tensor) -> None:
    if k.ndim != 2:
        raise ValueError(f"kernel must be h×w, got shape {tuple(k.shape)}")
    if k.shape[0] > x.shape[-2] or k.shape[1] > x.shape[-1]:
        raise ValueError(f"kernel {tuple(k.shape)} larger than image {tuple(x.shape[-2:])}")


def blur_valid(x: Tensor, k: Tensor) -> Tensor:
    """Valid cross-correlation of every channel with the shared kernel ``k`` (direct conv).

    ``out[n, c, i, j] = Σ_{a,b} x[n, c, i+a, j+b] · k[a, b]``.

    Args:
        x: Latent image(s).
        k: Kernel in correlation orientation.

    Returns:
        The blurred image(s), valid part only.

    Shape:
        - x: :math:`(N, C, H', W')`
        - k: :math:`(h, w)`
        - output: :math:`(N, C, H'-h+1, W'-w+1)`
    """
    _check_image(x)
    _check_kernel(k, x)
    n, c, h, w = x.shape
    out = F.conv2d(x.reshape(n * c, 1, h, w), k[None, None].to(x.dtype))
    return out.reshape(n, c, out.shape[-2], out.shape[-1])


def blur_valid_fft(x: Tensor, k: Tensor) -> Tensor:
    """Same result as :func:`blur_valid`, computed with real FFTs (faster for large kernels).

    The circular correlation over any grid of at least ``H'×W'`` equals the valid correlation on
    the first ``H'-h+1`` rows and ``W'-w+1`` columns; the grid is the next fast FFT size
    (:func:`deblurcli.deconv.fast_fft_size`), several times faster than a prime side.

    Shape:
        - x: :math:`(N, C, H', W')`
        - k: :math:`(h, w)`
        - output: :math:`(N, C, H'-h+1, W'-w+1)`
    """
    _check_image(x)
    _check_kernel(k, x)
    h, w = x.shape[-2:]
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # no FFT in half types
    grid = (fast_fft_size(h), fast_fft_size(w))
    spec = torch.fft.rfft2(x.to(dtype), s=grid)
    kspec = torch.fft.rfft2(k.to(dtype), s=grid)
    full = torch.fft.irfft2(spec * kspec.conj(), s=grid)
    return full[..., : h - k.shape[0] + 1, : w - k.shape[1] + 1].to(x.dtype)


def diff_v(x: Tensor) -> Tensor:
    """Forward difference along rows, valid: ``x[..., 1:, :] - x[..., :-1, :]``.

    Shape:
        - x: :math:`(*, H, W)`; output: :math:`(*, H-1, W)`
    """
    return x[..., 1:, :] - x[..., :-1, :]


def diff_h(x: Tensor) -> Tensor:
    """Forward difference along columns, valid: ``x[..., :, 1:] - x[..., :, :-1]``.

    Shape:
        - x: :math:`(*, H, W)`; output: :math:`(*, H, W-1)`
    """
    return x[..., :, 1:] - x[..., :, :-1]


def derivative_residual_energy(r: Tensor) -> Tensor:
    """VDIP's derivative-domain data energy of a residual ``r = A(x, k) - y`` (a sum, not a mean).

    The published likelihood adds first- and second-order derivative residuals to the plain
    one; folding the terms that are equal by linearity (differencing commutes with valid
    filtering) gives the weights ½ (0th order), ½ (each first derivative), ⅛ (∂vv, ∂hh) and ¼
    (mixed), ``specs/vdip.md`` §4.2.

    Shape:
        - r: :math:`(N, C, H, W)`; output: scalar
    """
    dv, dh = diff_v(r), diff_h(r)
    return (
        0.5 * r.square().sum()
        + 0.5 * dv.square().sum()
        + 0.5 * dh.square().sum()
        + 0.125 * diff_v(dv).square().sum()
        + 0.125 * diff_h(dh).square().sum()
        + 0.25 * diff_h(dv).square().sum()
    )


def gaussian_window(size: int = 11, sigma: float = 1.5, *, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised 2-D Gaussian window.

    Shape:
        - output: :math:`(size, size)`
    """
    r = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype)


def ssim_same(x: Tensor, y: Tensor, window: Tensor | None = None) -> Tensor:
    """SSIM as used *inside* the published losses: zero 'same' padding, mean over the whole map.

    11×11 Gaussian window (σ = 1.5), C1 = 0.01², C2 = 0.03², data range 1 (``specs/vdip.md``
    §6.3). This differs from :func:`deblurcli.metrics.ssim` (valid filtering), which is the
    *evaluation* SSIM.

    Shape:
        - x, y: :math:`(N, C, H, W)`; output: scalar
    """
    _check_image(x)
    if window is None:
        window = gaussian_window(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    wk = window[None, None].expand(c, 1, -1, -1)
    pad = window.shape[-1] // 2

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(t, wk, padding=pad, groups=c)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return ssim_map.mean()


def min_pool(u: Tensor, size: int) -> Tensor:
    """Minimum over all channels and every ``size×size`` window (valid, stride 1).

    Shape:
        - u: :math:`(N, C, H, W)`; output: :math:`(N, 1, H-size+1, W-size+1)`
    """
    _check_image(u, "u")
    m = u.amin(dim=1, keepdim=True)
    return -F.max_pool2d(-m, size, stride=1)


def to_convolution(k: Tensor) -> Tensor:
    """Rotate a correlation-orientation kernel by 180° into true-convolution orientation.

    Shape:
        - k: :math:`(h, w)`; output: :math:`(h, w)`
    """
    return torch.flip(k, dims=(-2, -1))


def project_kernel(k: Tensor, *, rel_threshold: float = 0.0) -> Tensor:
    """Project onto kernels: clip negatives, zero entries below ``rel_threshold·max``, sum to 1.

    A kernel with nothing left after thresholding becomes the centred delta.

    Shape:
        - k: :math:`(h, w)`; output: :math:`(h, w)`
    """
    k = k.clamp_min(0)
    if rel_threshold > 0:
        k = torch.where(k >= rel_threshold * k.max(), k, torch.zeros_like(k))
    total = k.sum()
    if not bool(total > 0):
        delta = torch.zeros_like(k)
        delta[k.shape[0] // 2, k.shape[1] // 2] = 1
        return delta
    return k / total


def centroid_offset(k: Tensor) -> tuple[float, float]:
    """How far ``k``'s centre of mass lies from its central index, ``(dy, dx)`` in pixels.

    Shape:
        - k: :math:`(h, w)`, non-negative with a positive sum
    """
    h, w = k.shape
    total = k.sum()
    rows = torch.arange(h, dtype=k.dtype, device=k.device)
    cols = torch.arange(w, dtype=k.dtype, device=k.device)
    cy = float((k.sum(1) * rows).sum() / total)
    cx = float((k.sum(0) * cols).sum() / total)
    return cy - (h - 1) / 2, cx - (w - 1) / 2


def center_kernel(k: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Translate ``k`` by whole pixels so its centre of mass is nearest the central index.

    Mass pushed across the border is dropped (then renormalised). Blind deconvolution cannot
    tell a shifted kernel from a shifted image, so this only fixes the convention.

    Returns:
        The re-centred kernel and the ``(dy, dx)`` translation that was applied.

    Shape:
        - k: :math:`(h, w)`; output: :math:`(h, w)`
    """
    h, w = k.shape
    oy, ox = centroid_offset(k)
    dy, dx = -int(round(oy)), -int(round(ox))
    out = torch.zeros_like(k)
    src_r = slice(max(0, -dy), min(h, h - dy))
    dst_r = slice(max(0, dy), min(h, h + dy))
    src_c = slice(max(0, -dx), min(w, w - dx))
    dst_c = slice(max(0, dx), min(w, w + dx))
    out[dst_r, dst_c] = k[src_r, src_c]
    return project_kernel(out), (dy, dx)


def translate(x: Tensor, dy: float, dx: float) -> Tensor:
    """Move the content of ``x`` by ``(dy, dx)`` pixels (down, right), sub-pixel.

    Bicubic resampling (exact at whole-pixel moves), the border reflected. On the cached
    ``shake`` restorations of docs/blind.md it scored like a band-limited (Fourier) move and
    0.08 dB above a bilinear one, which blurs; unlike the Fourier move its ringing stays local.

    Shape:
        - x: :math:`(N, C, H, W)`; output: :math:`(N, C, H, W)`
    """
    _check_image(x)
    n, _, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device) - dy
    cols = torch.arange(w, dtype=x.dtype, device=x.device) - dx
    gy, gx = torch.meshgrid(2 * rows / max(h - 1, 1) - 1, 2 * cols / max(w - 1, 1) - 1,
                            indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None].expand(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="reflection", align_corners=True)


def register_to_kernel(x: Tensor, k: Tensor) -> tuple[Tensor, tuple[float, float]]:
    """Move a restoration by its kernel's sub-pixel centre-of-mass offset.

    A kernel centred by whole pixels (:func:`center_kernel`) leaves the restoration up to about
    half a pixel away from where a blur of zero mean displacement puts it; moving it by
    :func:`centroid_offset` registers it with the blurry photo.

    Returns:
        The moved restoration and the ``(dy, dx)`` it was moved by.

    Shape:
        - x: :math:`(N, C, H, W)`; k: :math:`(h, w)`, convolution orientation; output: like x
    """
    offset = centroid_offset(k.double())
    return translate(x, *offset), offset


def resize_kernel(k: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample a kernel to ``size`` (bilinear on the pixel-centre grid), clip and renormalise.

    Shape:
        - k: :math:`(h, w)`; output: ``size``
    """
    if tuple(k.shape) == tuple(size):
        return k
    out = F.interpolate(k[None, None], size=size, mode="bilinear", align_corners=True)[0, 0]
    return project_kernel(out)


def odd(value: float, minimum: int = 3) -> int:
    """Nearest odd integer ≥ ``minimum``."""
    n = max(minimum, int(math.floor(value)))
    return n if n % 2 else n + 1
