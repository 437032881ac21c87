"""Image.to_tensor / with_tensor: the one layout conversion between images and tensors."""

from __future__ import annotations

import numpy as np
import torch

from deblurcli.io import Image


def test_to_tensor_and_with_tensor_round_trip_keeping_metadata() -> None:
    pixels = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    alpha = np.full((5, 7), 200, np.uint8)
    image = Image(pixels=pixels, dtype=np.dtype(np.uint8), alpha=alpha, icc=b"icc")
    x = image.to_tensor()
    assert x.shape == (1, 3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(x[0, 2], torch.from_numpy(pixels[..., 2]))
    back = image.with_tensor(x.double() * 0.5)
    assert back.pixels.dtype == np.float32 and np.allclose(back.pixels, pixels * 0.5)
    assert back.icc == b"icc" and back.alpha is alpha
    assert np.allclose(image.with_tensor(x[0]).pixels, pixels)  # C×H×W works too
