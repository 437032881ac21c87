"""Image.to_tensor / with_tensor: the one layout conversion between images and tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deblurcli.io import Image, hwc_to_tensor, tensor_to_hwc


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


def test_hwc_tensor_helpers_keep_dtype_and_values_and_refuse_other_shapes() -> None:
    for dtype in (np.float32, np.float64):
        array = np.random.default_rng(1).random((4, 6, 3)).astype(dtype)
        x = hwc_to_tensor(array)
        assert x.shape == (1, 3, 4, 6) and x.dtype == torch.from_numpy(array).dtype
        assert x.is_contiguous() and torch.equal(x[0, 1], torch.from_numpy(array[..., 1]))
        back = tensor_to_hwc(x.requires_grad_())
        assert back.dtype == array.dtype and np.array_equal(back, array)
        assert np.array_equal(tensor_to_hwc(x[0]), array)
    with pytest.raises(ValueError, match="H×W×C"):
        hwc_to_tensor(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="1×C×H×W or C×H×W"):
        tensor_to_hwc(torch.zeros(2, 3, 4, 6))


def test_image_methods_are_the_helpers() -> None:
    pixels = np.random.default_rng(2).random((3, 5, 1)).astype(np.float32)
    image = Image(pixels=pixels, dtype=np.dtype(np.uint16))
    assert torch.equal(image.to_tensor(), hwc_to_tensor(pixels))
    half = image.to_tensor().to(torch.bfloat16)
    assert np.array_equal(image.with_tensor(half).pixels, tensor_to_hwc(half.float()))
