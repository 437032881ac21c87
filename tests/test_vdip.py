"""VDIP/DIP optimisation: operators, the loop's contracts, guards, and the fast path (tiny)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from deblurcli.archs.dip_nets import SkipNetConfig
from deblurcli.degrade import convolve
from deblurcli.optim import BlindDeconvolutionError, fit, ops, paper_config, vdip
from deblurcli.optim.blind import (
    deconvolve_blind,
    default_kernel_size,
    parse_kernel_size,
    parse_overrides,
)
from deblurcli.optim.fast import FastConfig, fast_fit, informative_crop
from deblurcli.optim.vdip import _sanity, fit_with_refinement

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = SkipNetConfig(down_channels=(8, 8, 8), up_channels=(8, 8, 8), skip_channels=(4, 4, 4),
                     nonlocal_from=2)


def _scene(size: int = 40, ksize: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 1, size // 4, size // 4, generator=g),
                                        size=(size, size), mode="nearest")
    k = torch.rand(ksize, ksize, generator=g)
    k = k / k.sum()
    return ops.blur_valid(x, k), k


def _tiny(method: str = "vdip-sparse", **kw: object):
    base = dict(net=TINY, iters=20, prefit=0, min_side=16, ssim_from=1000, lr_kernel=1e-3,
                channels_last=False)
    base.update(kw)
    return paper_config(method, (5, 5), **base)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- operators


def test_fft_blur_equals_direct_blur_and_true_convolution() -> None:
    x = torch.rand(1, 2, 31, 29, dtype=torch.float64)  # prime sides: the FFT grid is padded
    k = torch.rand(7, 5, dtype=torch.float64)
    direct = ops.blur_valid(x, k)
    assert direct.shape == (1, 2, 25, 25)
    torch.testing.assert_close(ops.blur_valid_fft(x, k), direct)
    # the learned kernel is the rotated PSF: true convolution with to_convolution(k)
    conv = convolve(x[0, 0].numpy(), ops.to_convolution(k).numpy(), boundary="zero")
    np.testing.assert_allclose(conv[3:-3, 2:-2], direct[0, 0].numpy(), atol=1e-5)


def test_folded_derivative_energy_matches_the_published_six_terms() -> None:
    x = torch.rand(1, 3, 20, 22, dtype=torch.float64)
    y = torch.rand(1, 3, 16, 18, dtype=torch.float64)
    k = torch.rand(5, 5, dtype=torch.float64)
    r = ops.blur_valid(x, k) - y
    dv, dh = ops.diff_v, ops.diff_h
    literal = (0.5 * r.square().sum() + 0.25 * dv(r).square().sum() + 0.25 * dh(r).square().sum()
               + 0.125 * (dv(dv(r)).square().sum() + dh(dv(r)).square().sum()
                          + dh(dh(r)).square().sum() + dv(dh(r)).square().sum())
               + 0.25 * (ops.blur_valid(dv(x), k) - dv(y)).square().sum()
               + 0.25 * (ops.blur_valid(dh(x), k) - dh(y)).square().sum())
    torch.testing.assert_close(ops.derivative_residual_energy(r), literal)


def test_ssim_min_pool_and_kernel_helpers() -> None:
    a = torch.rand(1, 3, 16, 16)
    assert float(ops.ssim_same(a, a)) == pytest.approx(1.0, abs=1e-5)
    u = torch.rand(1, 3, 10, 12)
    assert ops.min_pool(u, 3).shape == (1, 1, 8, 10)
    assert float(ops.min_pool(u, 3)[0, 0, 0, 0]) == pytest.approx(float(u[0, :, :3, :3].min()))
    k = torch.zeros(7, 7)
    k[1, 2], k[2, 2] = 0.5, 0.5
    centred, shift = ops.center_kernel(k)
    assert shift == (2, 1) and float(centred[3:5, 3].sum()) == pytest.approx(1.0)
    p = ops.project_kernel(torch.tensor([[-1.0, 0.01], [2.0, 1.0]]), rel_threshold=0.05)
    assert torch.allclose(p, torch.tensor([[0.0, 0.0], [2 / 3, 1 / 3]]))
    assert ops.centroid_offset(k) == pytest.approx((-1.5, -1.0))


def test_translate_moves_content_by_whole_and_fractional_pixels() -> None:
    """Whole-pixel moves are exact inside the image; two half-pixel moves of a smooth image
    come close to one whole-pixel move; a move there and back restores it."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 48, 56, dtype=torch.float64)
    moved = ops.translate(x, 2, -3)
    assert moved.shape == x.shape and moved.dtype == x.dtype
    assert torch.allclose(moved[..., 2:, :-3], x[..., :-2, 3:], atol=1e-10)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(56.0), indexing="ij")
    smooth = (torch.sin(yy / 5) * torch.cos(xx / 7)).double()[None, None]
    halves = ops.translate(ops.translate(smooth, 0.5, 0.0), 0.5, 0.0)
    whole = ops.translate(smooth, 1.0, 0.0)
    assert torch.allclose(halves[..., 4:-4, 4:-4], whole[..., 4:-4, 4:-4], atol=1e-2)
    back = ops.translate(ops.translate(smooth, 0.3, -0.4), -0.3, 0.4)
    assert torch.allclose(back[..., 4:-4, 4:-4], smooth[..., 4:-4, 4:-4], atol=1e-2)
    assert float((ops.translate(smooth, 0.3, 0.0) - smooth).abs().max()) > 0.04


# ----------------------------------------------------------------------------- the loop


def test_twenty_steps_reduce_the_data_term_and_keep_a_kernel() -> None:
    y, _ = _scene()
    y = y[..., :32, :32]
    result = fit(y, _tiny(), seed=0)
    data = [h["data"] for h in result.history]
    assert len(data) == 20
    assert np.mean(data[-5:]) < np.mean(data[:5])
    assert result.image.shape == (1, 1, 32, 32) and result.sigma is not None
    assert bool((result.kernel >= 0).all())
    assert float(result.kernel.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("method", ["vdip-extreme", "vdip-std", "dip", "dip-sparse", "dip-extreme"])
def test_every_method_runs(method: str) -> None:
    y, _ = _scene(size=44)
    result = fit(y, _tiny(method, iters=3, prefit=1, ssim_from=2), seed=1)
    assert result.image.shape == y.shape
    assert len(result.history) == 4
    assert (result.sigma is None) == (not method.startswith("vdip"))


def test_same_seed_same_result_other_seed_differs() -> None:
    y, _ = _scene()
    a = fit(y, _tiny(iters=4), seed=3)
    b = fit(y, _tiny(iters=4), seed=3)
    c = fit(y, _tiny(iters=4), seed=4)
    assert torch.equal(a.image, b.image) and torch.equal(a.kernel, b.kernel)
    assert not torch.equal(a.image, c.image)


def test_non_finite_gradients_skip_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = ops.derivative_residual_energy

    def sometimes_nan(r: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        value = original(r)
        return value * float("nan") if calls["n"] == 2 else value

    monkeypatch.setattr(ops, "derivative_residual_energy", sometimes_nan)
    y, _ = _scene()
    result = fit(y, _tiny(iters=3), seed=0)
    assert result.skipped_steps == 1
    assert any("skipped" in w for w in result.warnings)
    assert bool(torch.isfinite(result.image).all())


def test_guards_small_images_and_degenerate_solutions() -> None:
    y, _ = _scene(size=24)
    result = fit(y, _tiny(iters=1, min_side=32), seed=0)
    assert result.image.shape == y.shape
    assert any("smaller than 32" in w for w in result.warnings)
    with pytest.raises(BlindDeconvolutionError, match="35"):
        fit(y, _tiny("vdip-extreme", iters=1), seed=0)  # 24+4 < 35: the extreme window
    delta = torch.zeros(5, 5)
    delta[2, 2] = 1
    found = _sanity(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.5), delta, _tiny())
    assert [kind for kind, _ in found] == ["delta-kernel", "dark-image"]
    assert _sanity(y[..., 2:-2, 2:-2], y, torch.full((5, 5), 0.04), _tiny()) == []


def test_images_too_large_for_the_published_generator_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    published = SkipNetConfig()
    # measured peaks: 0.83 GiB at 273², 2.7 GiB at 529²; 12 MP is far beyond any machine
    assert 0.7 < vdip.fit_memory_bytes(273, 273, published) / 2**30 < 1.0
    assert 2.4 < vdip.fit_memory_bytes(529, 529, published) / 2**30 < 3.1
    assert vdip.fit_memory_bytes(3030, 4030, published) / 2**30 > 150
    y, _ = _scene()
    monkeypatch.setattr(vdip, "device_memory_bytes", lambda device: 2.0**20)
    with pytest.raises(BlindDeconvolutionError, match="GiB.*--preset fast"):
        fit(y, _tiny(iters=1), seed=0)


def test_nonblind_refinement_keeps_the_kernel_and_replaces_the_image() -> None:
    y, _ = _scene()
    cfg = _tiny("dip", iters=6, refine="always", refine_steps=5)
    blind = fit(y, cfg, seed=0)
    phases: list[str] = []
    refined = fit_with_refinement(y, cfg, seed=0, on_step=lambda i: phases.append(i.phase))
    assert phases == ["mse"] * 6 + ["refine"] * 5
    assert [h["step"] for h in refined.history] == list(range(11))
    # the blind part is the same run; the re-run's kernel stays fixed (learning rate 0)
    torch.testing.assert_close(refined.kernel, blind.kernel)
    assert refined.image.shape == blind.image.shape
    assert not torch.equal(refined.image, blind.image)
    assert any("re-run" in w for w in refined.warnings)
    # "collapse" refines only a dark image with a usable kernel; "off" never
    off = fit_with_refinement(y, replace(cfg, refine="off"), seed=0)
    torch.testing.assert_close(off.image, blind.image)
    clean = fit_with_refinement(y, replace(cfg, refine="collapse"), seed=0)
    assert len(clean.history) == 6


def test_restarts_take_the_next_seed_after_a_degenerate_run() -> None:
    y, _ = _scene()
    pixels = y[0].permute(1, 2, 0).numpy()
    common = dict(method="dip-sparse", preset="paper", kernel_size=(5, 5), iters=2, prefit=0,
                  seed=3, net=TINY, min_side=16, channels_last=False)
    # every kernel counts as a near-delta: all runs are "degenerate", the last one is returned
    out = deconvolve_blind(pixels, restarts=2, delta_threshold=0.0, **common)
    assert (out.details["attempts"], out.details["seed"]) == (3, 5)
    assert sum("restarted with seed" in w for w in out.details["warnings"]) == 2
    clean = deconvolve_blind(pixels, restarts=2, **common)
    assert (clean.details["attempts"], clean.details["seed"], clean.details["collapse"]) == (
        1, 3, [])
    with pytest.raises(BlindDeconvolutionError, match="restarts"):
        deconvolve_blind(pixels, restarts=-1, **common)
    # no restarts asked for: the paper preset's default is none (its runs take hours)
    once = deconvolve_blind(pixels, delta_threshold=0.0, **common)
    assert once.details["attempts"] == 1


def test_fast_preset_restarts_twice_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``restarts`` the fast preset runs at most ``DEFAULT_RESTARTS["fast"]`` more
    times after degenerate results, each with the next seed and crop rank."""
    from deblurcli.optim import blind
    from deblurcli.optim.blind import DEFAULT_RESTARTS, BlindOutput

    seen: list[tuple[int, int]] = []

    def degenerate_run(pixels, method, kernel_size, iters, seed, device, on_progress,
                       overrides, attempt=0):  # type: ignore[no-untyped-def]
        seen.append((seed, attempt))
        return BlindOutput(pixels, np.ones((1, 1)), {"collapse": ["kernel-misfit"],
                                                     "warnings": []})

    monkeypatch.setattr(blind, "_fast_attempt", degenerate_run)
    pixels = np.zeros((32, 32, 3), np.float32)
    out = deconvolve_blind(pixels, seed=4)
    assert DEFAULT_RESTARTS["fast"] == 2
    assert seen == [(4, 0), (5, 1), (6, 2)] and out.details["attempts"] == 3
    seen.clear()
    deconvolve_blind(pixels, restarts=0)
    assert seen == [(0, 0)]


def test_plain_likelihood_drops_the_derivative_residuals() -> None:
    y, _ = _scene()
    first = {lik: fit(y, _tiny(iters=1, likelihood=lik), seed=0).history[0]["data"]
             for lik in ("derivatives", "plain")}
    # same seed, same first sample: the code's likelihood adds non-negative derivative terms
    assert 0 < first["plain"] < first["derivatives"]
    with pytest.raises(BlindDeconvolutionError, match="likelihood"):
        _tiny(likelihood="l1")


def test_paper_presets_follow_the_spec() -> None:
    sparse, extreme, dip = (paper_config(m, (19, 19))
                            for m in ("vdip-sparse", "vdip-extreme", "dip"))
    assert (sparse.prefit, sparse.lam, sparse.ssim_from, sparse.total_steps) == (
        500, 0.1, 2000, 5500)
    assert (extreme.prefit, extreme.lam, extreme.kernel_prior_weight) == (5, 1e-4, 10.0)
    assert (dip.prefit, dip.ssim_from, dip.input_channels, dip.reg_noise, dip.color) == (
        0, 1000, 8, 1e-3, "y")
    assert paper_config("dip", (19, 19), dataset="real").milestones == (1600, 1900, 2200)
    with pytest.raises(BlindDeconvolutionError):
        paper_config("vdip-sparse", (18, 19))


# ----------------------------------------------------------------------------- fast path


def test_fast_path_recovers_a_kernel_on_a_synthetic_photo() -> None:
    rng = np.random.default_rng(0)
    sharp = np.kron(rng.random((12, 12)), np.ones((8, 8)))[..., None].astype(np.float32)
    k = np.zeros((7, 7))
    k[3, 1:6] = 0.2  # horizontal motion
    blurry = convolve(sharp, k, boundary="reflect")
    cfg = FastConfig(kernel_size=(7, 7), kernel_margin=2, outer=6, cg=8)
    result = fast_fit(blurry, cfg)
    assert result.image.shape == blurry.shape
    assert result.kernel.shape == (7, 7)  # the requested size: the margin is cropped off
    assert result.kernel.sum() == pytest.approx(1.0)
    spread = result.kernel.sum(axis=0)  # mass spread along x, not y
    assert (spread > 0.05).sum() >= 3 and (result.kernel.sum(axis=1) > 0.05).sum() <= 3


def test_informative_crop_prefers_unsaturated_texture() -> None:
    luma = np.full((200, 300), 0.5, dtype=np.float32)
    luma[20:80, 200:280] = np.random.default_rng(0).random((60, 80))
    luma[120:190, 10:90] = np.where(np.random.default_rng(1).random((70, 80)) > 0.5, 1.0, 0.99)
    top, left, h, w = informative_crop(luma, 100)
    assert (h, w) == (100, 100)
    assert top <= 20 and left >= 180 and left + w <= 300


def test_kernel_size_rules() -> None:
    assert parse_kernel_size("19") == (19, 19)
    assert parse_kernel_size("19x25") == (19, 25)
    with pytest.raises(BlindDeconvolutionError):
        parse_kernel_size("20")
    # No file-name rules: the fast preset estimates the size, the paper preset uses 21.
    assert default_kernel_size("fast")[0] is None
    assert default_kernel_size("paper")[0] == (21, 21)


def test_bench_runners_work_under_no_grad() -> None:
    from deblurcli.optim.blind import bench_runner

    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.kron(rng.random((6, 6)), np.ones((8, 8)))).float()[None, None]
    gt = torch.ones(7, 7) / 49  # only its size is used: a Levin-less 7 stays 7
    fast, label = bench_runner("vdip-sparse", {"outer": 2, "cg": 3}, torch.device("cpu"))
    paper, _ = bench_runner("vdip-sparse", {"preset": "paper", "kernel_size": 5, "iterations": 2,
                                            "prefit": 1, "net": TINY, "channels_last": False},
                            torch.device("cpu"))
    with pytest.raises(BlindDeconvolutionError, match="does not take method"):
        bench_runner("dip", {"method": "vdip-sparse"}, torch.device("cpu"))
    with torch.no_grad():
        assert fast(x, gt).shape == x.shape
        assert paper(x, gt).shape == x.shape
    assert "vdip-sparse" in label


@pytest.mark.parametrize("method", ["dip", "vdip-extreme"])
def test_fast_generator_path_runs(method: str) -> None:
    rng = np.random.default_rng(1)
    blurry = np.kron(rng.random((8, 8)), np.ones((8, 8)))[..., None].astype(np.float32)
    cfg = FastConfig(method=method, kernel_size=(5, 5), kernel_margin=2, width=4, skip=2,
                     prefit=2, iters=3, patience=0)
    assert cfg.resolved_image_model == "generator"
    result = fast_fit(blurry, cfg, seed=0)
    assert result.image.shape == blurry.shape and result.kernel.sum() == pytest.approx(1.0)
    assert all(level["steps"] == 5 for level in result.levels)
    with pytest.raises(BlindDeconvolutionError):
        FastConfig(method=method, image_model="pixels")


def test_parse_overrides_casts_by_field_type() -> None:
    paper = parse_overrides("paper", ["prefit=0", "bright_var_bug=true", "milestones=10,20",
                                      "lam=1e-3", "color=y"])
    assert paper == {"prefit": 0, "bright_var_bug": True, "milestones": (10, 20), "lam": 1e-3,
                     "color": "y"}
    assert parse_overrides("fast", ["alpha=1", "lam=0.5"]) == {"alpha": 1.0, "lam": 0.5}
    for bad in (["nope=1"], ["prefit"], ["prefit=x"], ["bright_var_bug=maybe"], ["method=dip"]):
        with pytest.raises(BlindDeconvolutionError):
            parse_overrides("paper", bad)
    with pytest.raises(BlindDeconvolutionError):
        paper_config("vdip-sparse", (5, 5), color="lab")


def test_fast_variants_vote_for_the_medoid_kernel() -> None:
    rng = np.random.default_rng(2)
    sharp = np.kron(rng.random((10, 10)), np.ones((8, 8)))[..., None].astype(np.float32)
    k = np.zeros((5, 5))
    k[1:4, 2] = 1 / 3
    blurry = convolve(sharp, k, boundary="reflect")
    cfg = FastConfig(kernel_size=(5, 5), kernel_margin=2, outer=3, cg=4,
                     variants=((("outer", 4),), (("kernel_margin", 4),)))
    result = fast_fit(blurry, cfg)
    chosen = [entry for entry in result.levels if entry["chosen"]]
    assert len(result.levels) == 3 and len(chosen) == 1
    assert result.kernel.shape == (5, 5)  # every variant is cropped to the size asked for
