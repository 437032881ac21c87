"""Image degradations for synthetic training pairs: convolution, noise, JPEG, frame averaging.

Images are ``H × W × C`` (or ``H × W``) float32 numpy arrays in [0, 1]; results keep the input's
layout and are float32. The functions are fast enough for data-loader workers on 256 × 256 crops
(OpenCV does the convolution, switching to the DFT for large kernels).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from deblurcli.errors import UsageError

Boundary = Literal["reflect", "replicate", "wrap", "zero"]
"""How pixels beyond the image are defined for :func:`convolve`:

* ``reflect``: mirrored without repeating the edge pixel (``d c b | a b c d | c b a``), as numpy's
  and torch's ``reflect``;
* ``replicate``: the edge pixel repeated;
* ``wrap``: periodic (the circular convolution an FFT model assumes);
* ``zero``: zeros (the image darkens near the border).
"""

_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "wrap": "wrap", "zero": "constant"}
_CV_BORDERS = {
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
    "zero": cv2.BORDER_CONSTANT,
}
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def convolve(
    image: np.ndarray, kernel: np.ndarray, *, boundary: Boundary = "reflect"
) -> np.ndarray:
    """True 2-D convolution of every channel with ``kernel``; the output has the input's size.

    ``out[y, x] = sum_{i, j} kernel[i, j] * image[y - i + ci, x - j + cj]`` with the kernel
    centre ``(ci, cj) = (kh // 2, kw // 2)``, so a delta at the centre is the identity and a delta
    one pixel right of it moves the image one pixel right.

    Args:
        image: ``H × W`` or ``H × W × C`` float image.
        kernel: 2-D kernel (any size; not re-normalised here).
        boundary: Border handling, see :data:`Boundary`.

    Returns:
        float32 array of the input's shape.
    """
    if boundary not in _PAD_MODES:
        raise ValueError(f"boundary must be one of {tuple(_PAD_MODES)}, got {boundary!r}")
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {kernel.shape}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be H×W or H×W×C, got shape {image.shape}")
    kh, kw = kernel.shape
    ci, cj = kh // 2, kw // 2
    h, w = image.shape[:2]
    top, left = kh - 1 - ci, kw - 1 - cj  # out[y] reads image[y - top .. y + ci]
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # OpenCV correlates
    anchor = (left, top)  # (x, y) of the flipped kernel's centre
    if boundary != "wrap" and max(top, ci) < h and max(left, cj) < w:
        source, border, (oy, ox) = image, _CV_BORDERS[boundary], (0, 0)
    else:  # OpenCV has no periodic border; kernels wider than the image also go this way
        pad = [(top, ci), (left, cj)] + [(0, 0)] * (image.ndim - 2)
        source = np.pad(image, pad, mode=_PAD_MODES[boundary])  # type: ignore[call-overload]
        border, (oy, ox) = cv2.BORDER_CONSTANT, (top, left)

    def filt(plane: np.ndarray) -> np.ndarray:
        out = cv2.filter2D(plane, cv2.CV_32F, flipped, anchor=anchor, borderType=border)
        return out[oy : oy + h, ox : ox + w]

    if image.ndim == 2 or image.shape[2] <= 4:
        return filt(source).reshape(image.shape)
    return np.stack([filt(source[..., c]) for c in range(image.shape[2])], axis=2)


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma`` (on the [0, 1] scale) and clip.

    Returns:
        float32 array of the input's shape, clipped to [0, 1].
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    image = np.asarray(image, dtype=np.float32)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(image + noise, 0.0, 1.0)


def jpeg_degrade(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through 8-bit JPEG at ``quality`` (1–100, libjpeg scale, 4:2:0 for colour).

    Accepts grey (``H × W`` or ``H × W × 1``), RGB and RGBA (alpha passes through untouched).

    Returns:
        float32 array of the input's shape, values on the 8-bit grid.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ValueError(f"JPEG needs 1, 3 or 4 channels, got {image.shape[2]}")
    colour = image.ndim == 3 and image.shape[2] >= 3
    rgb = image[..., :3] if colour else image.reshape(image.shape[:2])
    u8 = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    if colour:
        u8 = cv2.cvtColor(u8, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if colour:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    out = decoded.astype(np.float32) / 255.0
    if colour and image.shape[2] == 4:
        return np.concatenate([out, image[..., 3:]], axis=2)
    return out.reshape(image.shape)


def average_frames(frames: Sequence[np.ndarray], *, gamma: float | None = 2.2) -> np.ndarray:
    """GoPro-style blur: the mean of consecutive sharp frames, computed in (approximately)
    linear light.

    Each frame's stored (gamma-encoded) values are raised to ``gamma``, averaged, and encoded back
    with ``1 / gamma``, as a sensor integrates light over the exposure. ``gamma=None`` (or 1)
    averages the stored values directly. On the bundled ``gopro_dev`` pairs of sequence
    GOPR0477_11_00, ``gamma=2.2`` reproduces three of the four blurred images to about 50.6 dB
    (the JPEG floor of the stored frames); the fourth matches the plain average instead.

    Shape:
        - frames: N arrays of one shape (``H × W`` or ``H × W × C``), N ≥ 1; returns that shape.
    """
    if len(frames) == 0:
        raise ValueError("average_frames needs at least one frame")
    first = np.asarray(frames[0])
    acc = np.zeros(first.shape, dtype=np.float64)
    linear = gamma is not None and gamma != 1
    for frame in frames:
        frame = np.asarray(frame, dtype=np.float64)
        if frame.shape != first.shape:
            raise ValueError(f"frames differ in shape: {frame.shape} vs {first.shape}")
        acc += np.clip(frame, 0.0, 1.0) ** gamma if linear else frame  # type: ignore[operator]
    acc /= len(frames)
    if linear:
        acc = acc ** (1.0 / gamma)  # type: ignore[operator]
    return acc.astype(np.float32)


def _natural_key(path: Path) -> list[object]:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", path.name)]


def read_frame_sequence(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a frame folder, in natural order (``frame2`` before ``frame10``).

    Raises:
        UsageError: ``folder`` is not a directory or holds no image files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a directory of frames")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise UsageError(f"{folder}: no frame images ({', '.join(FRAME_SUFFIXES)})")
    return sorted(files, key=_natural_key)


__all__ = [
    "FRAME_SUFFIXES",
    "Boundary",
    "add_gaussian_noise",
    "average_frames",
    "convolve",
    "jpeg_degrade",
    "read_frame_sequence",
]
