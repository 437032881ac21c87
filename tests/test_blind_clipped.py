"""Clipped highlights are censored observations: the blind estimate must not fit them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from deblurcli.degrade import _line_kernel, convolve
from deblurcli.io import read_image
from deblurcli.optim.fast import (
    CLIP_LEVEL,
    CLIPPED_REGION,
    FastConfig,
    _EdgeObservations,
    _vb_level,
    fast_fit,
    observed_mask,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _photo() -> np.ndarray:
    return read_image("examples/gopro_sharp.png").pixels[..., :3].astype(np.float32)


def test_a_photo_without_clipped_blocks_has_no_mask() -> None:
    rng = np.random.default_rng(0)
    photo = rng.uniform(0.1, 0.9, (40, 50, 3)).astype(np.float32)
    assert observed_mask(photo) is None
    # single clipped pixels are noise cut at the maximum, not a highlight
    photo[rng.integers(0, 40, 30), rng.integers(0, 50, 30)] = 1.0
    assert observed_mask(photo) is None
    # nor is a block with one channel clipped (a noisy near-white area)
    photo[10:30, 10:30, 0] = 1.0
    assert observed_mask(photo) is None


def test_a_clipped_block_is_masked_and_grown_by_the_prefilter() -> None:
    photo = np.full((40, 50, 3), 0.5, np.float32)
    photo[10:20, 20:32] = CLIP_LEVEL
    bare = observed_mask(photo)
    assert bare is not None and bare.dtype == bool and bare.shape == (40, 50)
    assert not bare[10:20, 20:32].any() and bare.sum() == 40 * 50 - 10 * 12
    grown = observed_mask(photo, prefilter=1.0)  # 3 px of Gaussian support
    assert grown is not None
    assert not grown[7:23, 17:35].any() and grown.sum() == 40 * 50 - 16 * 18
    small = np.full((40, 50, 3), 0.5, np.float32)
    small[5 : 5 + CLIPPED_REGION - 1, 5 : 5 + CLIPPED_REGION - 1] = 1.0
    assert observed_mask(small) is None


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A blurred luma crop, a mask with a hole, and the same crop with other values there."""
    luma = torch.from_numpy(_photo()[:64, :72].mean(axis=2).copy())
    blurred = torch.from_numpy(convolve(luma.numpy(), _line_kernel(7, 0.4, 9), boundary="reflect"))
    observed = torch.ones_like(blurred)
    observed[20:34, 30:50] = 0
    changed = blurred.clone()
    changed[20:34, 30:50] = torch.rand(14, 20, generator=torch.Generator().manual_seed(1)) + 1.0
    return blurred.float(), observed.float(), changed.float()


def test_the_kernel_step_ignores_unobserved_pixels() -> None:
    blurred, observed, changed = _scene()
    latent = torch.nn.functional.pad(blurred[None, None], (4, 4, 4, 4), mode="replicate")[0, 0]
    start = torch.full((9, 9), 1 / 81)
    cfg = FastConfig(kernel_threshold=0.05)
    one = _EdgeObservations(blurred, (9, 9), observed).kernel_step(latent, start, cfg)
    other = _EdgeObservations(changed, (9, 9), observed).kernel_step(latent, start, cfg)
    assert torch.equal(one, other)
    unmasked = _EdgeObservations(changed, (9, 9)).kernel_step(latent, start, cfg)
    assert not torch.equal(one, unmasked)  # without the mask the values there do count


def test_the_variational_level_with_every_pixel_observed_is_the_unmasked_one() -> None:
    blurred, observed, _ = _scene()
    start = torch.full((9, 9), 1 / 81)
    cfg = FastConfig(outer=3, cg=4, kernel_threshold=0.05)

    def level(mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return _vb_level(blurred, start, cfg, with_sigma=True, report=lambda *_: None,
                         noise=0.01, observed=mask)

    unmasked, everywhere, holed = level(None), level(torch.ones_like(observed)), level(observed)
    assert all(torch.equal(a, b) for a, b in zip(unmasked, everywhere, strict=True))
    assert not torch.equal(unmasked[0], holed[0])


def test_an_unclipped_photo_is_estimated_exactly_as_without_the_mask() -> None:
    photo = _photo()[:96, :128] * 0.9
    blurry = np.clip(convolve(photo, _line_kernel(5, 0.3, 7), boundary="reflect"), 0, 1)
    cfg = FastConfig(kernel_size=(7, 7), outer=2, cg=3, crops=1, refine_iters=1, crop=64,
                     noise_sigma=0.01, finish="none")
    on = fast_fit(blurry.astype(np.float32), cfg)
    off = fast_fit(blurry.astype(np.float32), replace(cfg, mask_clipped=False))
    assert np.array_equal(on.kernel, off.kernel) and np.array_equal(on.image, off.image)
    assert on.clipped_pixels == 0


def test_the_values_under_a_clipped_block_barely_move_the_estimate() -> None:
    """Two photos that differ only inside a clipped block: with the mask their values reach
    the estimate only through the latent's starting point and the resized levels' mask
    threshold, so the kernels differ far less than without it."""
    photo = _photo()[:96, :128] * 0.9
    blurry = np.clip(convolve(photo, _line_kernel(5, 0.3, 7), boundary="reflect"), 0, 1)
    blurry = blurry.astype(np.float32)
    blurry[30:50, 60:90] = 1.0
    other = blurry.copy()
    other[36:44, 66:84] = np.float32(1.0) + np.arange(3, dtype=np.float32)  # still clipped
    # every level variational (top_scale 1): no refinement here to carry the mask to full size
    cfg = FastConfig(kernel_size=(7, 7), outer=2, cg=3, crops=1, refine_iters=0, crop=0,
                     noise_sigma=0.01, finish="none", photo_solve=False, prefilter=0.0,
                     top_scale=1.0)

    def change(c: FastConfig) -> float:
        one, two = fast_fit(blurry, c), fast_fit(other, c)
        assert one.clipped_pixels == two.clipped_pixels == (20 * 30 if c.mask_clipped else 0)
        return float(np.abs(one.kernel - two.kernel).max())

    assert change(cfg) < 0.1 * change(replace(cfg, mask_clipped=False))
