"""Non-blind deconvolution: restoration, exact circular inversion, borders, colour, tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deblurcli import deconv
from deblurcli.deconv import DeconvolutionParameterError


def _scene(h: int = 64, w: int = 72, c: int = 1, seed: int = 0) -> np.ndarray:
    """Piecewise-constant rectangles plus a smooth ramp: a cartoon image with sharp edges."""
    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(0.2, 0.5, w, dtype=np.float32), (h, 1))[..., None].repeat(c, -1)
    for _ in range(12):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y : y + rng.integers(4, 20), x : x + rng.integers(4, 20)] = rng.random(c)
    return img


def _kernel() -> np.ndarray:
    k = np.zeros((9, 9), np.float32)
    k[4, 1:8] = 1.0  # horizontal motion, plus a little vertical spread
    k[3, 3:6] = 0.5
    return k / k.sum()


def _blur(img: np.ndarray, k: np.ndarray, *, wrap: bool = False) -> np.ndarray:
    """True convolution (centre kh//2, kw//2) with reflect (or circular) boundary."""
    kh, kw = k.shape
    pad = ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0))
    src = np.pad(img, pad, mode="wrap" if wrap else "reflect")
    out = np.zeros_like(img)
    for i in range(kh):
        for j in range(kw):
            oy, ox = kh - 1 - i, kw - 1 - j
            out += k[i, j] * src[oy : oy + img.shape[0], ox : ox + img.shape[1]]
    return out


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("method", ["wiener", "rl", "hyperlaplacian"])
def test_restores_much_closer_than_blurred(method: str) -> None:
    sharp, k = _scene(), _kernel()
    noise = np.random.default_rng(1).normal(0, 0.002, sharp.shape).astype(np.float32)
    blurred = _blur(sharp, k) + noise
    params = {"wiener": {"balance": 1e-3}, "rl": {}, "hyperlaplacian": {"weight": 1e-4}}[method]
    out = deconv.deconvolve(np.clip(blurred, 0, 1), k, method=method, **params)
    assert out.shape == sharp.shape and out.dtype == np.float32
    assert _rmse(out, sharp) < 0.6 * _rmse(blurred, sharp)


def test_wiener_inverts_circular_blur() -> None:
    sharp = _scene(48, 40)
    k = np.array([[0, 0.1, 0], [0.1, 0.6, 0.1], [0, 0.1, 0]], np.float64)
    blurred = _blur(sharp.astype(np.float64), k, wrap=True)
    out = deconv.wiener(blurred, k, balance=1e-10, boundary="wrap", clip=False)
    assert np.abs(out - sharp).max() < 1e-5


def test_no_ringing_frame_at_borders() -> None:
    sharp, k = _scene(80, 80), _kernel()
    blurred = _blur(sharp, k)  # reflect boundary: not circular
    for method in ("wiener", "hyperlaplacian"):
        err = np.abs(deconv.deconvolve(blurred, k, method=method) - sharp)[..., 0]
        band = np.concatenate([err[:6], err[-6:], err[:, :6].T, err[:, -6:].T], axis=None)
        interior = err[20:-20, 20:-20]
        assert band.mean() < 2.5 * interior.mean() + 0.01, method


def test_colour_is_per_channel_and_tensor_layout() -> None:
    # float64: the channels are then independent to rounding (~1e-14). In float32 the solver's
    # non-convex w-step turns FFT rounding, which differs between a batched and a single-channel
    # transform on some CPUs (AVX2), into up to 2e-4 at a few border pixels.
    sharp, k = _scene(40, 44, c=3), _kernel()
    blurred = _blur(sharp, k).astype(np.float64)
    out = deconv.hyper_laplacian(blurred, k)
    assert out.dtype == np.float64
    for c in range(3):
        single = deconv.hyper_laplacian(np.ascontiguousarray(blurred[..., c]), k)
        assert np.allclose(out[..., c], single, atol=1e-9)
    t = torch.from_numpy(blurred.transpose(2, 0, 1).copy())[None]
    out_t = deconv.hyper_laplacian(t, torch.from_numpy(k))
    assert out_t.shape == (1, 3, 40, 44) and out_t.dtype == torch.float64
    assert np.allclose(out_t[0].numpy().transpose(1, 2, 0), out, atol=1e-9)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_planes_solved_in_threads_equal_the_batched_solve(threads: int) -> None:
    """With several CPU threads the planes of a colour image (and of a batch) are solved in
    threads of their own; in float64 every plane equals the one-call batched solve to rounding,
    and the caller's thread setting is left as it was."""
    sharp, k = _scene(40, 44, c=3, seed=2), _kernel()
    blurred = torch.from_numpy(_blur(sharp, k).astype(np.float64).transpose(2, 0, 1).copy())
    batch = torch.stack([blurred, blurred.flip(-1)])  # 2 images x 3 channels: 6 planes
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        assert deconv._plane_workers(batch.reshape(6, 40, 44), 6) == (1 if threads == 1
                                                                      else min(6, 2 * threads))
        out = deconv.hyper_laplacian(batch, torch.from_numpy(k))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    for n in range(2):
        for c in range(3):
            plane = batch[n : n + 1, c : c + 1]
            single = deconv.hyper_laplacian(plane, torch.from_numpy(k))
            assert torch.allclose(out[n, c], single[0, 0], atol=1e-9), (n, c)
    assert deconv._plane_workers(batch.reshape(6, 40, 44), 1) == 1  # the budget allows one


@pytest.mark.parametrize("width", [36, 37])
def test_the_masked_x_step_in_fourier_is_the_spatial_conjugate_gradient(width: int) -> None:
    """The hyper-Laplacian's masked ``x``-step keeps its CG iterates as half spectra with
    Parseval inner products; in float64 it equals the same preconditioned CG written in the
    spatial domain, for even and odd widths (the Nyquist column) and a stack of planes."""
    gen = torch.Generator().manual_seed(5)
    shape = (30, width)
    x = torch.rand(2, *shape, generator=gen, dtype=torch.float64)
    y = torch.rand(2, *shape, generator=gen, dtype=torch.float64)
    k = torch.rand(5, 7, generator=gen, dtype=torch.float64)
    otf = deconv._otf(k / k.sum(), shape)
    dx, dy = deconv._diff_otfs(shape, x)
    mask = torch.zeros(1, *shape, dtype=torch.float64)
    mask[:, 6:-6, 7:-7] = 1
    lam, beta = 300.0, 4.0
    prior = beta * (dx.abs().square() + dy.abs().square())
    denom = lam * otf.abs().square() + prior
    rhs = lam * otf.conj() * torch.fft.rfft2(y * mask) + prior * torch.fft.rfft2(y)

    def apply(z: torch.Tensor) -> torch.Tensor:
        zf = torch.fft.rfft2(z)
        blurred = torch.fft.irfft2(otf * zf, s=shape) * mask
        return torch.fft.irfft2(lam * otf.conj() * torch.fft.rfft2(blurred) + prior * zf,
                                s=shape)

    def precondition(r: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(r) / denom, s=shape)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(-2, -1), keepdim=True)

    expected = x
    r = torch.fft.irfft2(rhs, s=shape) - apply(expected)
    z = precondition(r)
    p, rz = z, dot(r, z)
    for _ in range(4):
        ap = apply(p)
        step = rz / dot(p, ap)
        expected, r = expected + step * p, r - step * ap
        z = precondition(r)
        rz_next = dot(r, z)
        p, rz = z + (rz_next / rz) * p, rz_next
    got = deconv._masked_x_step(x, rhs, otf, mask, lam, prior, denom, 4)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-10)
    assert not torch.allclose(got, x, atol=1e-3)  # the step moved x


@pytest.mark.parametrize("method", ["wiener", "hyperlaplacian"])
def test_tiled_matches_untiled(method: str) -> None:
    sharp, k = _scene(150, 140, seed=3), _kernel()
    blurred = _blur(sharp, k)
    whole = deconv.deconvolve(blurred, k, method=method)
    tiled = deconv.deconvolve(blurred, k, method=method, max_pixels=96 * 110, overlap=48)
    assert np.abs(tiled - whole).mean() < 2e-3
    assert np.abs(tiled - whole).max() < 0.05


def test_shrink_beats_zero_and_brute_force() -> None:
    v = torch.linspace(-1.0, 1.0, 81, dtype=torch.float64)
    grid = torch.linspace(-1.5, 1.5, 30001, dtype=torch.float64)
    for alpha, beta in ((2 / 3, 8.0), (0.5, 64.0), (1.0, 4.0)):
        w = deconv._shrink(v, beta, alpha)
        energy = w.abs() ** alpha + beta / 2 * (w - v) ** 2
        best = (grid.abs()[None] ** alpha + beta / 2 * (grid[None] - v[:, None]) ** 2).min(1).values
        assert (energy - best).max() < 1e-6


def test_bad_parameters_raise_usage_errors() -> None:
    img, k = _scene(16, 16), _kernel()
    with pytest.raises(DeconvolutionParameterError):
        deconv.deconvolve(img, k, method="nope")
    with pytest.raises(ValueError):
        deconv.wiener(img, k, balance=0)
    with pytest.raises(DeconvolutionParameterError):
        deconv.hyper_laplacian(img, np.zeros((3, 3)))
    with pytest.raises(DeconvolutionParameterError):
        deconv.deconvolve(img, k, method="rl", weight=1.0)
