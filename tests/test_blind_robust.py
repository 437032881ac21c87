"""Blind deconvolution on noisy photos: noise estimate, automatic kernel size, honest failure."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deblurcli.deconv import NOISE_WEIGHT_RANGE, fast_fft_size, noise_weight
from deblurcli.degrade import _line_kernel, convolve
from deblurcli.io import read_image
from deblurcli.kernels import motion_kernel
from deblurcli.noise import estimate_noise_sigma
from deblurcli.optim import ops
from deblurcli.optim.fast import (
    LUMA_WEIGHTS,
    MAX_MISFIT,
    RESTART_KERNEL_THRESHOLD_PER_NOISE,
    FastConfig,
    _EdgeObservations,
    _estimate,
    _estimation_crop,
    _fit_kernel,
    _Grid,
    _luma_noise,
    _photo_kernel,
    _plan,
    _refine_kernel,
    auto_kernel_threshold,
    auto_refine_weight,
    choose_kernel,
    connected_mass,
    degenerate,
    fast_fit,
    informative_crop,
    kernel_extent,
    probe_kernel_size,
    reblur_misfit,
)
from deblurcli.optim.vdip import BlindDeconvolutionError

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = "examples/gopro_sharp.png"


def _photo() -> np.ndarray:
    return read_image(EXAMPLE).pixels[..., :3].astype(np.float64)


def _line(length: int, size: int, angle: float = 0.3) -> np.ndarray:
    """A straight streak of ``length`` px on a ``size`` canvas, sum 1 (the degradation
    pipeline's moving-object kernel)."""
    return _line_kernel(length, angle, size)


@pytest.mark.parametrize("sigma", [0.002, 0.005, 0.01, 0.02, 0.03])
def test_noise_estimate_within_20_percent(sigma: float) -> None:
    rng = np.random.default_rng(0)
    blurred = convolve(_photo(), motion_kernel(21, rng=rng), boundary="reflect")
    noisy = blurred + rng.normal(0.0, sigma, blurred.shape)
    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.2)


def test_noise_estimate_rejects_tiny_images() -> None:
    with pytest.raises(ValueError):
        estimate_noise_sigma(np.zeros((2, 5)))


def test_noise_weight_grows_with_noise_and_is_bounded() -> None:
    weights = [noise_weight(s) for s in (0.0, 0.002, 0.01, 0.03, 1.0)]
    assert weights == sorted(weights)
    assert weights[0] == NOISE_WEIGHT_RANGE[0] and weights[-1] == NOISE_WEIGHT_RANGE[1]
    assert noise_weight(0.01) == pytest.approx(3.5e-4)


@pytest.mark.parametrize("length", [15, 31])
def test_kernel_size_probe_measures_the_blur_extent(length: int) -> None:
    rng = np.random.default_rng(1)
    photo = _photo()
    blurred = convolve(photo, _line(length, 41), boundary="reflect")
    blurred = np.clip(blurred + rng.normal(0, 0.002, blurred.shape), 0, 1).astype(np.float32)
    luma = blurred @ LUMA_WEIGHTS
    (size, _), probe = probe_kernel_size(luma, FastConfig(), noise=0.002)
    assert probe["extent"] == pytest.approx(length, rel=0.25)
    assert size >= length  # the chosen canvas holds the blur
    assert len(probe["crop_extents"]) == 2 and probe["extent"] == min(probe["crop_extents"])


def test_kernel_extent_ignores_faint_haze() -> None:
    k = np.full((31, 31), 1e-4)
    k[15, 5:26] = 1.0
    assert kernel_extent(k / k.sum()) == 21


def test_degenerate_results_are_flagged() -> None:
    delta = torch.zeros(15, 15)
    delta[7, 7] = 1.0
    assert "delta-kernel" in degenerate(delta, {}, 2.0)[0]
    blob = torch.zeros(31, 31)
    blob[14:17, 14:17] = 1 / 9
    assert "shrunk-kernel" in degenerate(blob, {"extent": 25.0}, 2.0)[0]
    line = torch.from_numpy(_line(21, 31)).float()
    assert degenerate(line, {"extent": 21.0}, 1.02)[0] == ("not-sharper",)
    assert degenerate(line, {"extent": 21.0}, 1.6) == ((), "")


def test_a_kernel_scattered_over_unconnected_streaks_is_flagged() -> None:
    rng = np.random.default_rng(3)
    shake = [motion_kernel(41, rng=rng) for _ in range(5)]
    assert all(connected_mass(k) > 0.95 for k in shake)  # one continuous path each
    stroke = _line(15, 41, angle=np.pi / 2)
    assert connected_mass(stroke) == pytest.approx(1.0)
    assert degenerate(torch.from_numpy(stroke).float(), {"extent": 15.0}, 2.0) == ((), "")
    # the stroke plus two fainter parallel ghosts 8 px either side (a repeated structure)
    ghosts = stroke + 0.6 * np.roll(stroke, 8, axis=1) + 0.6 * np.roll(stroke, -8, axis=1)
    assert connected_mass(ghosts) == pytest.approx(1 / 2.2)
    flags, why = degenerate(torch.from_numpy(ghosts / ghosts.sum()).float(), {"extent": 15.0}, 2.0)
    assert flags == ("scattered-kernel",) and "connected" in why


def test_reblur_misfit_tells_the_right_kernel_from_a_wrong_one() -> None:
    rng = np.random.default_rng(4)
    sharp = 0.1 + 0.8 * np.kron(rng.random((12, 12, 3)), np.ones((12, 12, 1)))
    kernel = _line(15, 21)
    sigma = 0.01
    blurry = (convolve(sharp, kernel) + rng.normal(0.0, sigma, sharp.shape)).astype(np.float32)
    right = reblur_misfit(sharp.astype(np.float32), blurry, kernel, sigma)
    wrong_kernel = _line(15, 21, angle=0.3 + np.pi / 2)
    wrong = reblur_misfit(sharp.astype(np.float32), blurry, wrong_kernel, sigma)
    assert 0.8 < right < 1.2  # the residual is the noise
    assert wrong > 2 * MAX_MISFIT
    flags, why = degenerate(torch.from_numpy(wrong_kernel).float(), {"extent": 15.0}, 1.6, wrong)
    assert flags == ("kernel-misfit",) and "does not explain" in why


def test_the_kernel_choice_keeps_the_kernel_that_explains_the_photo() -> None:
    rng = np.random.default_rng(5)
    sharp = 0.1 + 0.8 * np.kron(rng.random((12, 12, 3)), np.ones((12, 12, 1)))
    kernel = _line(15, 21)
    blurry = (convolve(sharp, kernel) + rng.normal(0.0, 0.01, sharp.shape)).astype(np.float32)
    wrong = torch.from_numpy(_line(15, 21, angle=0.3 + np.pi / 2)).float()
    right = torch.from_numpy(kernel).float()
    for order, expected in (([wrong, right], 1), ([right, wrong], 0)):
        chosen, misfits, restored = choose_kernel(blurry, order, 0.01, "hyperlaplacian",
                                                  {"weight": 1e-3})
        assert chosen == expected and misfits[1 - expected] > 2 * misfits[expected]
        assert restored.shape == blurry.shape
        assert reblur_misfit(restored, blurry, kernel, 0.01) == pytest.approx(misfits[expected],
                                                                             abs=1e-4)
    # a region smaller than the photo is compared when asked (the central side² pixels)
    chosen, _, restored = choose_kernel(blurry, [wrong, right], 0.01, "hyperlaplacian",
                                        {"weight": 1e-3}, side=100)
    assert chosen == 1 and restored.shape == (100, 100, 3)


def test_the_kernel_choice_compares_luma_when_the_refinement_follows(monkeypatch) -> None:
    """The refinement replaces the chosen kernel and its restoration, so ``fast_fit`` then
    compares the candidates on luma (at the luma's noise); without it, on the colour photo,
    whose restoration is kept. On luma the right kernel still wins."""
    import deblurcli.optim.fast as fast_module

    rng = np.random.default_rng(5)
    sharp = 0.1 + 0.8 * np.kron(rng.random((12, 12, 3)), np.ones((12, 12, 1)))
    kernel = _line(15, 21)
    blurry = (convolve(sharp, kernel) + rng.normal(0.0, 0.01, sharp.shape)).astype(np.float32)
    luma = (blurry @ LUMA_WEIGHTS)[..., None]
    wrong = torch.from_numpy(_line(15, 21, angle=0.3 + np.pi / 2)).float()
    right = torch.from_numpy(kernel).float()
    chosen, misfits, restored = choose_kernel(luma, [wrong, right], _luma_noise(0.01, 3),
                                              "hyperlaplacian", {"weight": 1e-3})
    assert chosen == 1 and misfits[0] > 2 * misfits[1] and restored.shape == luma.shape

    seen: list[tuple[int, float]] = []
    real = fast_module.choose_kernel

    def recording(pixels, kernels, sigma, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((pixels.shape[2], sigma))
        return real(pixels, kernels, sigma, *args, **kwargs)

    monkeypatch.setattr(fast_module, "choose_kernel", recording)
    photo = np.clip(convolve(_photo()[:160, :224], _line(7, 9), boundary="reflect")
                    + rng.normal(0, 0.005, (160, 224, 3)), 0, 1).astype(np.float32)
    cfg = FastConfig(kernel_size=(9, 9), outer=2, cg=3, crop=96, crops=2, noise_sigma=0.005,
                     finish="none", photo_solve=False)
    for refine_iters, expected in ((2, (1, _luma_noise(0.005, 3))), (0, (3, 0.005))):
        seen.clear()
        fast_fit(photo, replace(cfg, refine_iters=refine_iters))
        assert seen == [expected]


def test_a_sharp_photo_is_returned_unchanged_and_flagged() -> None:
    rng = np.random.default_rng(2)
    blocks = np.kron(rng.random((10, 10, 3)), np.ones((16, 16, 1)))  # crisp edges, no blur
    photo = np.clip(blocks + rng.normal(0, 0.003, blocks.shape), 0, 1).astype(np.float32)
    result = fast_fit(photo, FastConfig(kernel_size=(9, 9), outer=4, cg=6))
    assert result.collapse
    assert np.array_equal(result.image, photo)
    assert any("returned unchanged" in w for w in result.warnings)


@pytest.mark.parametrize("sigma", [0.01, 0.0005])
def test_the_first_restart_retries_the_crop_with_the_coarser_kernel_threshold(
        monkeypatch, sigma: float) -> None:
    """A noisy photo's first restart re-estimates on the first crop with the coarser
    threshold, the next one moves to the second crop; where noise is so low that both
    thresholds are the 5 % floor, restarts move to the next crops at once."""
    import deblurcli.optim.fast as fast_module

    seen: list[tuple[int, float]] = []
    real = fast_module._estimation_crop

    def recording(luma, cfg, ksize, prefilter, dev, rank, observed=None):  # type: ignore[no-untyped-def]
        seen.append((rank, cfg.kernel_threshold))
        return real(luma, cfg, ksize, prefilter, dev, rank, observed)

    monkeypatch.setattr(fast_module, "_estimation_crop", recording)
    photo = convolve(_photo()[:96, :128], _line(5, 7), boundary="reflect").astype(np.float32)
    cfg = FastConfig(kernel_size=(7, 7), outer=2, cg=3, crops=1, refine_iters=0, crop=64,
                     noise_sigma=sigma, finish="none", photo_solve=False)
    for attempt in range(3):
        fast_fit(photo, cfg, attempt=attempt)
    fine = auto_kernel_threshold(_luma_noise(sigma, 3))
    coarse = auto_kernel_threshold(_luma_noise(sigma, 3), RESTART_KERNEL_THRESHOLD_PER_NOISE)
    if sigma > 0.005:
        assert coarse > fine
        assert seen == [(0, fine), (0, coarse), (1, coarse)]
    else:
        assert coarse == fine == 0.05
        assert seen == [(0, fine), (1, fine), (2, fine)]


def test_informative_crop_ranks_give_other_windows() -> None:
    luma = np.random.default_rng(0).random((200, 400)).astype(np.float32)
    first = informative_crop(luma, 150, rank=0)
    second = informative_crop(luma, 150, rank=1)
    overlap = max(0, 150 - abs(first[0] - second[0])) * max(0, 150 - abs(first[1] - second[1]))
    assert overlap <= 0.5 * 150 * 150 and second[2:] == (150, 150)


def test_result_does_not_depend_on_memory_layout() -> None:
    rng = np.random.default_rng(3)
    photo = convolve(_photo()[:128, :128], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    view = np.ascontiguousarray(photo.transpose(2, 0, 1)).transpose(1, 2, 0)  # CHW memory
    cfg = FastConfig(kernel_size=(9, 9), outer=3, cg=4, crops=1)
    assert np.array_equal(fast_fit(photo, cfg).kernel, fast_fit(view, cfg).kernel)


def test_crops_estimated_in_parallel_give_the_sequential_result() -> None:
    rng = np.random.default_rng(5)
    photo = convolve(_photo()[:160, :224], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    cfg = FastConfig(max_kernel=15, outer=3, cg=4, crop=96, crops=2, size_probe_crops=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two workers, one thread each
    try:
        parallel = fast_fit(photo, cfg)
        sequential = fast_fit(photo, replace(cfg, parallel_crops=False))
        assert torch.get_num_threads() == 2  # the caller's setting comes back
    finally:
        torch.set_num_threads(threads)
    assert parallel.size_probe == sequential.size_probe and parallel.crop_distance > 0
    assert parallel.crop_distance == sequential.crop_distance
    assert np.array_equal(parallel.kernel, sequential.kernel)
    assert np.array_equal(parallel.image, sequential.image)


def test_a_failing_crop_estimate_stops_the_parallel_ones() -> None:
    from deblurcli.optim.fast import LevelInfo, _run_jobs

    sweeps: list[int] = []

    def slow(callback: object) -> int:  # a long estimate that reports every sweep
        for sweep in range(2000):
            time.sleep(0.005)
            sweeps.append(sweep)
            assert callable(callback)
            callback(LevelInfo(level=0, levels=1, step=sweep, steps=2000, loss=0.0))
        return 1

    def failing(_callback: object) -> int:
        time.sleep(0.05)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run_jobs([failing, slow], workers=2, threads=None)
    assert 0 < len(sweeps) < 200  # stopped at its next sweep, not run to the end
    assert _run_jobs([lambda _cb: 1, lambda _cb: 2, lambda _cb: 3], workers=2, threads=None) \
        == [1, 2, 3]


@pytest.mark.parametrize("n", [1, 7, 11, 97, 331, 337, 1009])
def test_fast_fft_size_is_the_next_7_smooth_length(n: int) -> None:
    size = fast_fft_size(n)
    rest = size
    for p in (2, 3, 5, 7):
        while rest % p == 0:
            rest //= p
    assert size >= n and rest == 1
    assert all(fast_fft_size(m) == size for m in range(n, size + 1))  # nothing smaller skipped


def test_the_padded_fft_grid_gives_exact_valid_correlation_and_its_adjoint() -> None:
    """The estimation's FFTs run on a 7-smooth grid larger than the problem (331 -> 336); the
    extra zeros must not wrap into what is kept: A x equals the direct valid correlation and
    <A x, r> = <x, A^T r>."""
    gen = torch.Generator().manual_seed(0)
    ho, wo, kh, kw = 301, 283, 31, 23  # latent 331 x 305: 331 is prime
    x = torch.rand(ho + kh - 1, wo + kw - 1, generator=gen, dtype=torch.float64)
    k = torch.rand(kh, kw, generator=gen, dtype=torch.float64)
    r = torch.rand(ho, wo, generator=gen, dtype=torch.float64)
    grid = _Grid(tuple(x.shape))
    assert grid.fft_shape == (336, 315) and grid.fft_shape != tuple(x.shape)
    k_f = grid.f(k)
    ax = grid.i(grid.f(x) * k_f.conj())[:ho, :wo]
    direct = torch.nn.functional.conv2d(x[None, None], k[None, None])[0, 0]
    assert torch.allclose(ax, direct, atol=1e-10)
    atr = grid.i(grid.f(r) * k_f)
    assert atr.shape == x.shape
    assert torch.allclose((ax * r).sum(), (x * atr).sum(), rtol=1e-12)


def test_the_pruned_transforms_equal_the_full_ones() -> None:
    """``f_small`` (a kernel's transform, row FFTs on its rows only) and ``i_corner`` (an
    inverse cropped to a corner) are the full transforms, including on a grid padded past a
    prime side and for a stack of planes."""
    gen = torch.Generator().manual_seed(1)
    grid = _Grid((331, 305))
    k = torch.rand(2, 31, 23, generator=gen, dtype=torch.float64)
    assert torch.allclose(grid.f_small(k), grid.f(k), atol=1e-10)
    spectrum = grid.f(torch.rand(2, 331, 305, generator=gen, dtype=torch.float64))
    corner = grid.i_corner(spectrum, (31, 23))
    assert corner.shape == (2, 31, 23)
    assert torch.allclose(corner, grid.i(spectrum)[..., :31, :23], atol=1e-10)


@pytest.mark.parametrize(("shape", "ksize"), [((40, 50), (7, 9)), ((33, 41), (11, 5)),
                                               ((30, 30), (1, 3))])
def test_the_autocorrelation_kernel_step_is_exact_for_edges_inside_the_latent(
        shape: tuple[int, int], ksize: tuple[int, int]) -> None:
    """The two normal operators differ only by products of edges within a kernel's width of the
    latent's border: with no edge there both k-steps solve the same system (solved to
    convergence here)."""
    gen = torch.Generator().manual_seed(2)
    (h, w), (kh, kw) = shape, ksize
    y = torch.rand(h, w, generator=gen, dtype=torch.float64)
    observations = _EdgeObservations(y, ksize)
    inside = torch.zeros(h + kh - 1, w + kw - 1, dtype=torch.float64)
    inside[kh: h - 2, kw: w - 2] = torch.rand(h - kh - 2, w - kw - 2, generator=gen,
                                              dtype=torch.float64)
    k = torch.rand(kh, kw, generator=gen, dtype=torch.float64)
    k /= k.sum()
    settings = dict(grad_quantile=0.0, kernel_threshold=0.0, cg=200)
    exact = observations.kernel_step(inside, k, FastConfig(kernel_normal="exact", **settings))
    auto = FastConfig(kernel_normal="autocorrelation", **settings)
    assert torch.allclose(observations.kernel_step(inside, k, auto), exact, atol=1e-10)


def test_autocorrelation_kernel_steps_converge_to_the_exact_one_with_edges_at_the_border() -> None:
    """With edges up to the latent's border one step differs from the exact one; repeated from
    its own result (as the sweeps do) it converges to it: the blurred edges that fall outside
    the observed differences are predicted, not fitted to zero."""
    gen = torch.Generator().manual_seed(4)
    h, w, kh, kw = 60, 70, 9, 11
    latent = torch.nn.functional.avg_pool2d(
        torch.rand(1, 1, h + kh + 1, w + kw + 1, generator=gen, dtype=torch.float64), 3, 1)[0, 0]
    true = torch.rand(kh, kw, generator=gen, dtype=torch.float64) ** 4
    true /= true.sum()
    blurred = torch.nn.functional.conv2d(latent[None, None], true[None, None])[0, 0]
    observations = _EdgeObservations(blurred, (kh, kw))
    settings = dict(grad_quantile=0.0, kernel_threshold=0.0, cg=300, kernel_ridge=1e-6)
    flat = torch.full((kh, kw), 1 / (kh * kw), dtype=torch.float64)
    exact = observations.kernel_step(latent, flat, FastConfig(kernel_normal="exact", **settings))
    assert float((exact - true).abs().sum()) < 1e-5
    auto = FastConfig(kernel_normal="autocorrelation", **settings)
    k = observations.kernel_step(latent, flat, auto)
    assert float((k - exact).abs().sum()) > 0.1
    for _ in range(14):
        k = observations.kernel_step(latent, k, auto)
    assert float((k - exact).abs().sum()) < 1e-3


def test_a_masked_kernel_step_uses_the_exact_operator() -> None:
    gen = torch.Generator().manual_seed(3)
    y = torch.rand(36, 40, generator=gen)
    observed = torch.ones_like(y)
    observed[10:20, 5:15] = 0
    observations = _EdgeObservations(y, (7, 7), observed)
    latent = torch.rand(42, 46, generator=gen)
    k = torch.full((7, 7), 1 / 49)
    steps = [observations.kernel_step(latent, k, FastConfig(kernel_normal=normal,
                                                             kernel_threshold=0.05))
             for normal in ("exact", "autocorrelation")]
    assert torch.equal(steps[0], steps[1])
    with pytest.raises(BlindDeconvolutionError, match="kernel_normal"):
        FastConfig(kernel_normal="circular")


def _blurred_luma_crop(length: int = 9, size: int = 13) -> tuple[torch.Tensor, np.ndarray]:
    """A ``1×1×96×96`` crop of the example's luma blurred with a streak, and the streak."""
    true = _line(length, size)
    luma = _photo()[100:196, 200:296] @ LUMA_WEIGHTS
    blurry = convolve(luma, true, boundary="reflect") + np.random.default_rng(4).normal(
        0, 0.002, luma.shape)
    return torch.from_numpy(blurry).float()[None, None], true


def test_fit_kernel_pads_or_cuts_a_centred_kernel_to_the_size() -> None:
    kernel = torch.from_numpy(_line(5, 7)).float()
    padded = _fit_kernel(kernel, (11, 11))
    assert padded.shape == (11, 11) and torch.equal(padded[2:9, 2:9], kernel)
    cut = _fit_kernel(torch.from_numpy(_line(9, 11)).float(), (5, 5))
    assert cut.shape == (5, 5) and float(cut.sum()) == pytest.approx(1.0, abs=1e-6)


def test_the_estimate_stops_at_the_top_scale_and_returns_the_full_size() -> None:
    y, _ = _blurred_luma_crop()
    cfg = FastConfig(outer=3, cg=4, kernel_threshold=0.05)
    plan = _plan(cfg, (96, 96), (19, 19))
    assert plan[-1][0] == 1.0 and len(plan) >= 3
    full, full_levels = _estimate(y, plan, cfg, "pixels", torch.device("cpu"), 0, None)
    top, top_levels = _estimate(y, plan, cfg, "pixels", torch.device("cpu"), 0, None,
                                top_scale=0.75)
    assert full.shape == top.shape == (19, 19)
    assert float(top.sum()) == pytest.approx(1.0, abs=1e-5)
    assert [lv["scale"] for lv in top_levels] == [lv["scale"] for lv in full_levels[:-1]]
    assert max(lv["scale"] for lv in top_levels) < 0.75
    for bad in (0.0, 1.5):
        with pytest.raises(BlindDeconvolutionError, match="top_scale"):
            FastConfig(top_scale=bad)


def test_an_estimate_started_from_a_coarse_kernel_skips_the_levels_up_to_its_scale() -> None:
    y, _ = _blurred_luma_crop()
    cfg = FastConfig(outer=3, cg=4, kernel_threshold=0.05)
    plan = _plan(cfg, (96, 96), (19, 19))
    coarse, _ = _estimate(y, [lv for lv in plan if lv[0] <= 0.5 + 1e-9], cfg, "pixels",
                          torch.device("cpu"), 0, None)
    steps: list[int] = []
    kernel, levels = _estimate(y, plan, cfg, "pixels", torch.device("cpu"), 0,
                               lambda info: steps.append(info.level), start=(0.5, coarse))
    assert [lv["scale"] for lv in levels] == [round(lv[0], 4) for lv in plan if lv[0] > 0.5 + 1e-9]
    assert kernel.shape == (19, 19) and float(kernel.sum()) == pytest.approx(1.0, abs=1e-5)
    assert len(steps) == len(levels) * cfg.outer
    # a start that reaches the top scale is the estimate itself, resampled: no level runs
    steps.clear()
    again, no_levels = _estimate(y, plan, cfg, "pixels", torch.device("cpu"), 0,
                                 lambda info: steps.append(info.level), top_scale=0.5,
                                 start=(0.5, coarse))
    assert no_levels == [] and steps == []
    assert again.shape == (19, 19) and float(again.sum()) == pytest.approx(1.0, abs=1e-5)
    expected = ops.center_kernel(ops.resize_kernel(_fit_kernel(ops.center_kernel(coarse)[0],
                                                               (ops.odd(19 * 0.5),) * 2),
                                                   (19, 19)))[0]
    assert torch.allclose(again, expected)


def test_the_size_probe_hands_its_coarse_kernels_to_the_estimate() -> None:
    rng = np.random.default_rng(6)
    photo = convolve(_photo()[:160, :224], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    luma = photo @ LUMA_WEIGHTS
    # crops of 128 px: the probe's and the estimate's kernels both fit, so both take one box
    cfg = FastConfig(max_kernel=15, outer=3, cg=4, crop=128, crops=2, size_probe_crops=2)
    starts: dict = {}
    probe_kernel_size(luma, cfg, starts=starts)
    boxes = [_estimation_crop(luma, cfg, (15, 15), 0.0, torch.device("cpu"), r)[0]
             for r in range(2)]
    assert sorted(starts) == sorted(boxes)
    for scale, kernel in starts.values():
        assert scale == pytest.approx(cfg.size_probe_scale) and kernel.shape[0] % 2 == 1
    # the estimate starts there: its crops run only the levels above the probe's scale
    reused = fast_fit(photo, replace(cfg, reuse_probe=True))
    plain = fast_fit(photo, replace(cfg, reuse_probe=False))
    assert reused.kernel_size == plain.kernel_size  # the probe itself is the same
    assert min(lv["scale"] for lv in reused.levels) > cfg.size_probe_scale
    assert min(lv["scale"] for lv in plain.levels) < cfg.size_probe_scale


def test_refinement_sharpens_a_smeared_kernel_towards_the_streak() -> None:
    """From the true streak smeared by a Gaussian (what a smooth-latent estimate returns), the
    full-resolution alternation moves the kernel towards the streak (aligned kernel error down
    by over a quarter: 0.031 -> 0.018 when written), and 0 iterations is a no-op."""
    from deblurcli.metrics import kernel_error

    luma = _photo()[100:260, 200:360] @ LUMA_WEIGHTS
    true = _line(11, 15)
    blurry = torch.from_numpy(convolve(luma, true, boundary="reflect")).float()
    r = np.arange(-3, 4.0)
    gauss = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    smeared = convolve(true, gauss / gauss.sum(), boundary="reflect")
    smeared = torch.from_numpy(smeared / smeared.sum()).float()
    cfg = FastConfig(kernel_threshold=0.05, refine_iters=5)
    refined = _refine_kernel(blurry, smeared, cfg, weight=5e-4)
    assert refined.shape == smeared.shape
    assert float(refined.sum()) == pytest.approx(1.0, abs=1e-5)
    before, after = kernel_error(smeared.numpy(), true), kernel_error(refined.numpy(), true)
    assert after < 0.75 * before, (before, after)
    unchanged = _refine_kernel(blurry, smeared, replace(cfg, refine_iters=0), weight=5e-4)
    assert torch.equal(unchanged, smeared)


def test_fast_fit_refines_the_chosen_kernel_and_reports_it() -> None:
    rng = np.random.default_rng(3)
    photo = convolve(_photo()[:128, :128], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    cfg = FastConfig(kernel_size=(9, 9), outer=3, cg=4, crops=1, refine_iters=2,
                     keep_unrefined=False)
    refined, plain = fast_fit(photo, cfg), fast_fit(photo, replace(cfg, refine_iters=0))
    assert refined.refine_seconds > 0 and plain.refine_seconds == 0
    assert refined.refined and not plain.refined and refined.ending_misfits == ()
    assert refined.kernel.shape == plain.kernel.shape == (9, 9)
    assert refined.kernel.sum() == pytest.approx(1.0) and not np.array_equal(refined.kernel,
                                                                              plain.kernel)


def test_fast_fit_keeps_the_unrefined_kernel_when_it_explains_the_photo_better() -> None:
    """``keep_unrefined``: the kernel before and after the refinement are both carried to the
    end, and the returned result is the ending with the lower reblur misfit; its misfit and
    kernel are that ending's, and the other ending's misfit is reported beside it."""
    rng = np.random.default_rng(3)
    photo = convolve(_photo()[:128, :128], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    cfg = FastConfig(kernel_size=(9, 9), outer=3, cg=4, crops=1, refine_iters=2, finish="none",
                     keep_unrefined=True)
    both = fast_fit(photo, cfg)
    only_refined = fast_fit(photo, replace(cfg, keep_unrefined=False))
    only_unrefined = fast_fit(photo, replace(cfg, refine_iters=0))
    assert len(both.ending_misfits) == 2 and not both.collapse
    refined_misfit, unrefined_misfit = both.ending_misfits
    assert refined_misfit == pytest.approx(only_refined.misfit)
    assert both.misfit == min(both.ending_misfits)
    winner = only_refined if refined_misfit <= unrefined_misfit else only_unrefined
    assert both.refined == (winner is only_refined)
    np.testing.assert_array_equal(both.kernel, winner.kernel)


def test_fast_fit_returns_the_sound_ending_with_the_lower_misfit(monkeypatch) -> None:
    """The choice between the refined (first) and unrefined ending skips degenerate endings;
    when both are degenerate the refined one's finding is reported and the photo comes back
    unchanged."""
    import deblurcli.optim.fast as fast_module
    from deblurcli.optim.fast import _Ending

    photo = np.clip(convolve(_photo()[:96, :96], _line(5, 7), boundary="reflect"), 0, 1
                    ).astype(np.float32)
    cfg = FastConfig(kernel_size=(7, 7), outer=2, cg=3, crops=1, refine_iters=1, finish="none",
                     register=False, keep_unrefined=True)

    def run(outcomes: list[tuple[float, tuple[str, ...]]]):  # type: ignore[no-untyped-def]
        queue = list(outcomes)

        def fake(pixels, luma, kernel, *args, **kwargs):  # type: ignore[no-untyped-def]
            misfit, collapse = queue.pop(0)
            image = pixels.copy() if collapse else np.full_like(pixels, misfit / 10)
            return _Ending(kernel, image, misfit, 2.0, collapse, "why" if collapse else "")

        monkeypatch.setattr(fast_module, "_ending", fake)
        result = fast_fit(photo, cfg)
        assert not queue  # both endings ran
        return result

    result = run([(1.2, ()), (1.0, ())])
    assert not result.refined and result.misfit == 1.0 and result.ending_misfits == (1.2, 1.0)
    assert np.all(result.image == np.float32(0.1))
    result = run([(1.2, ()), (0.9, ("kernel-misfit",))])
    assert result.refined and result.misfit == 1.2 and np.isnan(result.ending_misfits[1])
    result = run([(3.0, ("kernel-misfit",)), (2.5, ("scattered-kernel",))])
    assert result.collapse == ("kernel-misfit",) and result.refined
    np.testing.assert_array_equal(result.image, photo)
    assert any("no reliable blur kernel" in w for w in result.warnings)


def test_a_restart_is_finished_by_the_restart_network(monkeypatch) -> None:
    """A restart (``attempt`` > 0) is finished by ``restart_finish``: with the default
    ``finish``, ``auto`` means ``cpu-v3`` alone; with another ``finish`` (``none`` included)
    it means that same ``finish``; the first attempt always uses ``finish``."""
    import deblurcli.optim.fast as fast_module
    from deblurcli.optim.fast import DEFAULT_FINISH, RESTART_FINISH

    used: list[str] = []

    def recording(image, model, device, **kwargs):  # type: ignore[no-untyped-def]
        used.append(model)
        return image

    monkeypatch.setattr(fast_module, "finish_restoration", recording)
    rng = np.random.default_rng(3)
    photo = convolve(_photo()[:96, :96], _line(5, 7), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    cfg = FastConfig(kernel_size=(7, 7), outer=2, cg=3, crops=1, refine_iters=1,
                     finish_resolve=0, register=False)
    for finish, restart, first, later in (
            (DEFAULT_FINISH, "auto", DEFAULT_FINISH, RESTART_FINISH),
            ("other.safetensors", "auto", "other.safetensors", "other.safetensors"),
            (DEFAULT_FINISH, "b.safetensors", DEFAULT_FINISH, "b.safetensors")):
        run = replace(cfg, finish=finish, restart_finish=restart)
        for attempt, expected in ((0, first), (1, later)):
            used.clear()
            result = fast_fit(photo, run, attempt=attempt)
            assert not result.collapse and used == [expected]
            assert result.finish_model == expected
    used.clear()
    result = fast_fit(photo, replace(cfg, finish="none"), attempt=1)
    assert used == [] and result.finish_model == ""
    with pytest.raises(BlindDeconvolutionError):
        FastConfig(restart_finish="a,none")


def test_refinement_weight_falls_geometrically_to_the_last_weight(monkeypatch) -> None:
    """The latent weights of the alternations run from ``refine_start`` times the weight down
    to the weight itself, by a constant factor (64x over 7 alternations: halving)."""
    import deblurcli.deconv as deconv_module

    weights: list[float] = []
    real = deconv_module.deconvolve

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        weights.append(kwargs["weight"])
        return real(*args, **kwargs)

    monkeypatch.setattr(deconv_module, "deconvolve", recording)
    luma = torch.from_numpy((_photo()[:64, :64] @ LUMA_WEIGHTS).astype(np.float32))
    kernel = torch.from_numpy(_line(5, 7)).float()
    _refine_kernel(luma, kernel, FastConfig(refine_iters=7, refine_start=64.0), weight=5e-4)
    assert weights == pytest.approx([5e-4 * 2.0**e for e in range(6, -1, -1)])
    weights.clear()
    _refine_kernel(luma, kernel, FastConfig(refine_iters=3, refine_start=1.0), weight=5e-4)
    assert weights == pytest.approx([5e-4] * 3)
    with pytest.raises(BlindDeconvolutionError):
        FastConfig(refine_start=0.0)


def test_refinement_stays_near_the_kernel_it_was_given() -> None:
    """With ``refine_support`` = f, no refined entry lies more than ⌊f · side⌋ px
    (chessboard; 1 px here) from the given kernel's support, even when the photo's blur
    reaches further; a negative value lets the refinement use the whole canvas, and there it
    does reach further."""
    luma = _photo()[100:260, 200:360] @ LUMA_WEIGHTS
    true = _line(13, 15)
    blurry = torch.from_numpy(convolve(luma, true, boundary="reflect")).float()
    start = torch.zeros(15, 15)
    start[6:9, 6:9] = 1 / 9  # the centre of the streak only
    cfg = FastConfig(kernel_threshold=0.05, refine_iters=3, refine_support=0.1)
    near = _refine_kernel(blurry, start, cfg, weight=5e-4)
    allowed = torch.zeros(15, 15, dtype=torch.bool)
    allowed[5:10, 5:10] = True
    assert float(near.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(near[~allowed].abs().sum()) == 0.0
    free = _refine_kernel(blurry, start, replace(cfg, refine_support=-1.0), weight=5e-4)
    assert float(free[~allowed].sum()) > 0.1


def test_refinement_weight_follows_the_noise() -> None:
    assert auto_refine_weight(0.01) == pytest.approx(5e-4)
    assert auto_refine_weight(0.0) == auto_refine_weight(0.001) > 0
    assert auto_refine_weight(0.03) > auto_refine_weight(0.01)


def test_photo_solve_moves_a_smeared_kernel_towards_the_blur() -> None:
    """The re-solve on the photo keeps the true kernel (aligned error under 0.01) and moves a
    smeared one towards the streak (0.029 -> 0.022 when written); its kernel is centred,
    sums to 1 and has the configured size; a photo smaller than the kernel's margins gives
    None."""
    from deblurcli.metrics import kernel_error

    sharp = _photo()[40:200, 60:220]
    true = _line(9, 11)
    blurry = (convolve(sharp, true, boundary="reflect") @ LUMA_WEIGHTS).astype(np.float32)
    r = np.arange(-2, 3.0)
    gauss = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2)
    smeared = convolve(true, gauss / gauss.sum(), boundary="reflect")
    smeared /= smeared.sum()
    cfg = FastConfig(kernel_size=(11, 11))
    cpu = torch.device("cpu")
    kept = _photo_kernel(blurry, torch.from_numpy(true).float(), cfg, cpu, latent_weight=1e-4)
    moved = _photo_kernel(blurry, torch.from_numpy(smeared).float(), cfg, cpu, latent_weight=1e-4)
    assert kept is not None and moved is not None and moved.shape == (11, 11)
    assert float(moved.sum()) == pytest.approx(1.0, abs=1e-6)
    assert kernel_error(kept.numpy(), true) < 0.01
    assert kernel_error(moved.numpy(), true) < 0.85 * kernel_error(smeared, true)
    assert _photo_kernel(blurry[:20, :20], torch.from_numpy(true).float(), cfg, cpu,
                         latent_weight=1e-4) is None


def test_fast_fit_re_solves_the_kernel_on_the_photo_and_reports_it() -> None:
    rng = np.random.default_rng(3)
    photo = convolve(_photo()[:128, :128], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    cfg = FastConfig(kernel_size=(9, 9), outer=3, cg=4, crops=1, refine_iters=1)
    solved, plain = fast_fit(photo, cfg), fast_fit(photo, replace(cfg, photo_solve=False))
    assert solved.photo_solve_seconds > 0 and plain.photo_solve_seconds == 0
    assert solved.kernel.shape == (9, 9) and solved.kernel.sum() == pytest.approx(1.0)
    assert not np.array_equal(solved.kernel, plain.kernel)
    for bad in ({"photo_solve_latent": 0.0}, {"photo_solve_ridge": -1.0},
                {"photo_solve_threshold": 1.0}):
        with pytest.raises(BlindDeconvolutionError, match="photo_solve"):
            FastConfig(**bad)


def test_fast_fit_registers_the_restoration_with_the_photo() -> None:
    """The restoration is moved by the final kernel's sub-pixel centre-of-mass offset, and
    nothing else changes; ``register=False`` leaves it where the solver put it."""
    from deblurcli.io import hwc_to_tensor, tensor_to_hwc

    rng = np.random.default_rng(3)
    photo = convolve(_photo()[:128, :128], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    cfg = FastConfig(kernel_size=(9, 9), outer=3, cg=4, crops=1, refine_iters=1, finish="none")
    moved, still = fast_fit(photo, cfg), fast_fit(photo, replace(cfg, register=False))
    np.testing.assert_array_equal(moved.kernel, still.kernel)
    offset = ops.centroid_offset(torch.from_numpy(still.kernel))
    assert still.registration == (0.0, 0.0) and moved.registration == pytest.approx(offset)
    assert max(abs(v) for v in offset) > 1e-3  # a move that the comparison below can see
    expected = tensor_to_hwc(ops.translate(hwc_to_tensor(still.image), *offset))
    np.testing.assert_allclose(moved.image, expected, atol=1e-6)
    assert not np.allclose(moved.image, still.image, atol=1e-4)


def _finisher_and_photo(tmp_path: Path) -> tuple[torch.nn.Module, Path, np.ndarray]:
    """A tiny perturbed NAFNet saved as a finishing network, and a 96² noisy photo blurred by a
    9-px streak."""
    from _models import perturbed

    from deblurcli.archs.nafnet import NAFNet, NAFNetConfig
    from deblurcli.engine import ModelInfo, save_checkpoint

    model = perturbed(NAFNet(NAFNetConfig(width=4, encoder_blocks=(1,), middle_blocks=1,
                                          decoder_blocks=(1,))))
    path = tmp_path / "finish.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model("nafnet", model))
    rng = np.random.default_rng(3)
    photo = convolve(_photo()[:96, :96], _line(7, 9), boundary="reflect")
    photo = np.clip(photo + rng.normal(0, 0.005, photo.shape), 0, 1).astype(np.float32)
    return model, path, photo


def test_fast_fit_hands_the_restoration_to_the_finishing_network(tmp_path) -> None:
    model, path, photo = _finisher_and_photo(tmp_path)
    cfg = FastConfig(kernel_size=(9, 9), outer=3, cg=4, crops=1, refine_iters=1, finish="none",
                     finish_resolve=0, register=False)
    plain, finished = fast_fit(photo, cfg), fast_fit(photo, replace(cfg, finish=str(path)))
    assert plain.finish_seconds == 0 and finished.finish_seconds > 0
    assert plain.finish_skipped == finished.finish_skipped == ""
    np.testing.assert_array_equal(finished.kernel, plain.kernel)
    with torch.no_grad():
        expected = model(torch.from_numpy(plain.image).permute(2, 0, 1)[None]).clamp(0, 1)
    np.testing.assert_allclose(finished.image, expected[0].permute(1, 2, 0).numpy(), atol=1e-5)
    # a degenerate estimate returns the photo itself, never a network's guess
    flat = np.full((96, 96, 3), 0.5, np.float32)
    given_up = fast_fit(flat, replace(cfg, finish=str(path)))
    assert given_up.collapse and given_up.finish_seconds == 0
    assert given_up.finish_skipped == "degenerate estimate"
    np.testing.assert_array_equal(given_up.image, flat)
    # a grayscale photo keeps the plain restoration unless finish_gray asks for the network
    gray = np.repeat(photo.mean(axis=2, keepdims=True), 3, axis=2)
    kept = fast_fit(gray, replace(cfg, finish=str(path)))
    assert kept.finish_seconds == 0 and kept.finish_skipped.startswith("grayscale")
    np.testing.assert_array_equal(kept.image, fast_fit(gray, cfg).image)
    forced = fast_fit(gray[..., :1], replace(cfg, finish=str(path), finish_gray=True))
    assert forced.finish_seconds > 0 and forced.finish_skipped == ""


def test_finish_resolve_measures_the_kernel_against_the_finished_image(tmp_path,
                                                                        monkeypatch) -> None:
    """One ``finish_resolve`` round: the kernel re-measured against the network's output, the
    photo restored with it and finished again; a round whose restoration explains the photo
    worse is dropped, and the result is then the single finish's."""
    from deblurcli.deconv import deconvolve
    from deblurcli.io import hwc_to_tensor, tensor_to_hwc
    from deblurcli.optim import fast
    from deblurcli.optim.fast import _luma, _photo_kernel, finish_restoration, reblur_misfit

    _, path, photo = _finisher_and_photo(tmp_path)
    cfg = FastConfig(kernel_size=(9, 9), outer=3, cg=4, crops=1, refine_iters=1,
                     finish=str(path), finish_resolve=0, register=False)
    cpu = torch.device("cpu")
    once, twice = fast_fit(photo, cfg), fast_fit(photo, replace(cfg, finish_resolve=1))
    assert once.resolve_rounds == 0 and once.resolve_seconds == 0
    assert twice.resolve_rounds == 1 and twice.resolve_seconds > 0
    sized = replace(cfg, kernel_size=(9, 9))
    expected_kernel = _photo_kernel(_luma(photo), torch.from_numpy(once.kernel).float(), sized,
                                    cpu, latent=_luma(once.image))
    assert expected_kernel is not None
    np.testing.assert_allclose(twice.kernel, expected_kernel.double().numpy(), atol=1e-6)
    assert not np.allclose(twice.kernel, once.kernel)
    restored = tensor_to_hwc(deconvolve(hwc_to_tensor(photo), expected_kernel.float(),
                                        method="hyperlaplacian", weight=once.weight))
    np.testing.assert_allclose(
        twice.image, finish_restoration(restored.astype(np.float32), str(path), cpu,
                                        observed=photo, kernel=twice.kernel), atol=1e-4)
    assert twice.misfit == pytest.approx(
        reblur_misfit(restored.astype(np.float32), photo, expected_kernel, once.noise_sigma),
        rel=1e-4)
    # a round whose kernel explains the photo worse than the one before is not kept
    monkeypatch.setattr(fast, "RESOLVE_MISFIT_SLACK", 0.0)
    dropped = fast_fit(photo, replace(cfg, finish_resolve=1))
    assert dropped.resolve_rounds == 0 and dropped.resolve_seconds > 0
    np.testing.assert_array_equal(dropped.image, once.image)
    np.testing.assert_array_equal(dropped.kernel, once.kernel)
    with pytest.raises(BlindDeconvolutionError, match="finish_resolve"):
        FastConfig(finish_resolve=-1)


def test_a_guided_finishing_network_reads_the_photo_and_the_reblurred_restoration(
        tmp_path) -> None:
    from _models import perturbed

    from deblurcli.archs.nafnet import NAFNet, NAFNetConfig
    from deblurcli.degrade import restoration_guide
    from deblurcli.engine import ModelInfo, save_checkpoint
    from deblurcli.errors import UsageError
    from deblurcli.optim.fast import finish_restoration

    model = perturbed(NAFNet(NAFNetConfig(width=4, encoder_blocks=(1,), middle_blocks=1,
                                          decoder_blocks=(1,), guide_channels=6)))
    path = tmp_path / "guided.safetensors"
    save_checkpoint(path, model, ModelInfo.for_model("nafnet", model))
    rng = np.random.default_rng(3)
    kernel = _line(7, 9)
    observed = convolve(_photo()[:48, :64], kernel, boundary="reflect").astype(np.float32)
    restored = np.clip(observed + rng.normal(0, 0.02, observed.shape), 0, 1).astype(np.float32)
    out = finish_restoration(restored, str(path), torch.device("cpu"), observed=observed,
                             kernel=kernel)
    guide = restoration_guide(observed, restored, kernel)
    assert guide.shape == (48, 64, 6)
    np.testing.assert_allclose(guide[..., 3:], np.clip(convolve(restored, kernel), 0, 1),
                               atol=1e-6)
    stacked = np.concatenate([restored, guide], axis=2)
    with torch.no_grad():
        expected = model(torch.from_numpy(stacked).permute(2, 0, 1)[None]).clamp(0, 1)
    np.testing.assert_allclose(out, expected[0].permute(1, 2, 0).numpy(), atol=1e-5)
    # the guide changes the result: the network does read it
    other = finish_restoration(restored, str(path), torch.device("cpu"),
                               observed=np.zeros_like(observed), kernel=kernel)
    assert np.abs(other - out).max() > 1e-3
    with pytest.raises(UsageError, match="guide"):
        finish_restoration(restored, str(path), torch.device("cpu"))


def test_is_grayscale_means_one_channel_or_equal_channels() -> None:
    from deblurcli.optim.fast import is_grayscale

    rgb = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    assert not is_grayscale(rgb)
    assert is_grayscale(rgb[..., :1])
    equal = np.repeat(rgb[..., :1], 3, axis=2)
    assert is_grayscale(equal)
    equal[0, 0, 2] += 0.5 / 255  # 8-bit rounding is still gray
    assert is_grayscale(equal)
    equal[0, 0, 2] += 2 / 255
    assert not is_grayscale(equal)
    with_alpha = np.concatenate([equal[..., :1].repeat(3, axis=2), rgb[..., :1]], axis=2)
    assert is_grayscale(with_alpha)


def test_the_shipped_finishing_network_is_the_fast_default_and_resolves() -> None:
    from deblurcli.optim.fast import finishing_models

    assert FastConfig().finish == "nafnet-finish@cpu-v2,nafnet-finish@cpu-v3"
    paths = finishing_models(FastConfig().finish)
    assert [Path(p).name for p in paths] == ["nafnet-finish-cpu-v2.safetensors",
                                              "nafnet-finish-cpu-v3.safetensors"]
    assert [Path(p).name for p in finishing_models(" nafnet-finish@cpu-v2 ")] == [
        "nafnet-finish-cpu-v2.safetensors"]
    assert finishing_models("none") == [] and finishing_models("") == []


def test_several_finishing_networks_average_their_outputs(tmp_path) -> None:
    """``finish="a,b"``: the mean of what each network makes of the same restoration."""
    from _models import perturbed

    from deblurcli.archs.nafnet import NAFNet, NAFNetConfig
    from deblurcli.engine import ModelInfo, save_checkpoint
    from deblurcli.errors import UsageError
    from deblurcli.optim.fast import finish_restoration, finishing_references

    _, first, photo = _finisher_and_photo(tmp_path)
    torch.manual_seed(5)
    other = perturbed(NAFNet(NAFNetConfig(width=4, encoder_blocks=(1,), middle_blocks=1,
                                          decoder_blocks=(1,), guide_channels=6)))
    second = tmp_path / "guided.safetensors"
    save_checkpoint(second, other, ModelInfo.for_model("nafnet", other))
    cpu, kernel = torch.device("cpu"), _line(7, 9)
    one = finish_restoration(photo, str(first), cpu, observed=photo, kernel=kernel)
    two = finish_restoration(photo, str(second), cpu, observed=photo, kernel=kernel)
    assert np.abs(one - two).max() > 1e-3  # two different networks
    both = finish_restoration(photo, f"{first}, {second}", cpu, observed=photo, kernel=kernel)
    assert both.dtype == np.float32 and both.shape == photo.shape
    np.testing.assert_allclose(both, (one + two) / 2, atol=1e-6)
    assert finishing_references(" none ") == [] and finishing_references("") == []
    assert finishing_references("a@v1, b") == ["a@v1", "b"]
    for bad in ("a,,b", "a,none", "a,"):
        with pytest.raises(UsageError, match="comma"):
            finishing_references(bad)
        with pytest.raises(BlindDeconvolutionError, match="comma"):
            FastConfig(finish=bad)
    with pytest.raises(UsageError):
        finish_restoration(photo, "none", cpu)
