"""Blur kernels: random camera shake, anisotropic Gaussian, defocus disk, and kernel files.

Conventions shared by every function here:

* kernels are 2-D ``numpy.float64`` arrays, non-negative, summing to 1;
* they are stored in **true-convolution orientation**: blurring is
  ``y = convolve(x, k)`` (:func:`deblurcli.degrade.convolve`), so an off-centre delta at
  ``(cy + 1, cx)`` moves the image one pixel *down*;
* generated kernels are centred: their centre of mass is the centre pixel ``(size // 2, size // 2)``
  (exactly for the Gaussian and the disk, to floating-point precision for camera shake).
  Kernels read from files are kept exactly as stored (only normalised), because benchmark kernels
  such as Levin's are deliberately not centred.

Generators take an explicit :class:`numpy.random.Generator`, so a kernel is a pure function of
the seed that made the generator.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deblurcli._atomic import atomic_path
from deblurcli.errors import KernelError

MAX_KERNEL_SIZE = 255
"""Largest kernel side accepted by :func:`read_kernel`."""

KERNEL_KINDS = ("motion", "gaussian", "defocus")
"""Kinds understood by :func:`random_kernel`."""

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_TEXT_SUFFIXES = {".txt", ".csv"}


def _normalised(kernel: np.ndarray) -> np.ndarray:
    kernel = np.clip(np.asarray(kernel, dtype=np.float64), 0.0, None)
    return kernel / kernel.sum()


def _check_size(size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")


def shake_trajectory(
    num_steps: int,
    *,
    rng: np.random.Generator,
    anxiety: float | None = None,
    centripetal: float | None = None,
    jitter: float | None = None,
    shake_rate: float | None = None,
) -> np.ndarray:
    """Random camera-shake path after Boracchi and Foi (2012): a particle with inertia.

    The particle starts at the origin with unit speed in a random direction. At each step its
    velocity receives a Gaussian kick (``jitter``) and a pull back toward the origin
    (``centripetal``), both scaled by ``anxiety``; with probability ``shake_rate * anxiety`` it
    makes an impulsive near-reversal (a "big shake"). Units follow the original 64-pixel canvas:
    the speed is renormalised after every step so that the whole path is 60 units long (callers
    rescale it to their canvas).

    Args:
        num_steps: Number of positions (samples over the exposure), at least 2.
        rng: Source of randomness.
        anxiety: Overall amount of erratic motion, default ``0.1 * U(0, 1)``.
        centripetal: Strength of the pull toward the start, default ``0.7 * U(0, 1)``.
        jitter: Standard deviation of the Gaussian kick, default ``10 * U(0, 1)``.
        shake_rate: Relative rate of impulsive reversals, default ``0.2 * U(0, 1)``.

    Returns:
        ``(num_steps, 2)`` float64 array of ``(row, col)`` positions, first one at the origin.
    """
    if num_steps < 2:
        raise ValueError("num_steps must be at least 2")
    draws = rng.random(5)
    anxiety = 0.1 * draws[0] if anxiety is None else anxiety
    centripetal = 0.7 * draws[1] if centripetal is None else centripetal
    jitter = 10.0 * draws[2] if jitter is None else jitter
    shake_rate = 0.2 * draws[3] if shake_rate is None else shake_rate
    step = 60.0 / (num_steps - 1)
    velocity = step * complex(math.cos(2 * math.pi * draws[4]), math.sin(2 * math.pi * draws[4]))
    kicks = rng.standard_normal((num_steps, 2))
    reversal_draws = rng.random(num_steps)
    reversal_angles = rng.random(num_steps) - 0.5
    position = 0j
    path = np.empty(num_steps, dtype=np.complex128)
    path[0] = position
    for t in range(1, num_steps):
        pull = jitter * complex(kicks[t, 0], kicks[t, 1]) - centripetal * position
        change = anxiety * step * pull
        if reversal_draws[t] < shake_rate * anxiety:
            change += 2 * velocity * complex(math.cos(math.pi + reversal_angles[t]),
                                             math.sin(math.pi + reversal_angles[t]))
        velocity += change
        speed = abs(velocity)
        velocity = step * (velocity / speed if speed > 0 else complex(1.0, 0.0))
        position += velocity
        path[t] = position
    return np.stack([path.imag, path.real], axis=1)


def rasterize_path(points: np.ndarray, size: int) -> np.ndarray:
    """Splat ``(row, col)`` points (centre-relative) onto a ``size × size`` grid, bilinearly.

    Bilinear splatting keeps each point's centre of mass, so the kernel's centroid is the mean of
    the points plus the centre. Points must lie within ``(size - 1) / 2 - 1`` of the centre.

    Shape:
        - points: ``(P, 2)``; returns ``(size, size)``, normalised to sum 1.
    """
    centre = size // 2
    coords = points + centre
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    kernel = np.zeros((size, size), dtype=np.float64)
    for dy in (0, 1):
        wy = frac[:, 0] if dy else 1.0 - frac[:, 0]
        for dx in (0, 1):
            wx = frac[:, 1] if dx else 1.0 - frac[:, 1]
            np.add.at(kernel, (base[:, 0] + dy, base[:, 1] + dx), wy * wx)
    return _normalised(kernel)


def motion_kernel(
    size: int,
    *,
    rng: np.random.Generator,
    extent: float | None = None,
    num_steps: int = 1000,
    anxiety: float | None = None,
    centripetal: float | None = None,
    jitter: float | None = None,
    shake_rate: float | None = None,
) -> np.ndarray:
    """Random camera-shake kernel (Boracchi–Foi trajectory, full exposure, bilinear raster).

    A path from :func:`shake_trajectory` is centred on its mean (so the kernel's centre of mass is
    the centre pixel), scaled so its farthest point reaches ``extent`` of the usable half-width
    ``(size - 1) / 2 - 1``, and splatted bilinearly onto the canvas.

    Args:
        size: Odd canvas side, at least 5 (31 is the DeblurGAN convention).
        rng: Source of randomness; the kernel is a pure function of its state.
        extent: Fraction in (0, 1] of the usable half-width that the path reaches; default drawn
            from ``U(0.4, 1.0)``.
        num_steps: Samples along the path.
        anxiety: See :func:`shake_trajectory` (as are ``centripetal``, ``jitter`` and
            ``shake_rate``); ``None`` draws it from ``rng``.
        centripetal: See :func:`shake_trajectory`.
        jitter: See :func:`shake_trajectory`.
        shake_rate: See :func:`shake_trajectory`.

    Returns:
        ``(size, size)`` float64 kernel, non-negative, sum 1.
    """
    _check_size(size)
    if size < 5:
        raise ValueError("motion kernels need size >= 5")
    extent = rng.uniform(0.4, 1.0) if extent is None else extent
    if not 0.0 < extent <= 1.0:
        raise ValueError(f"extent must be in (0, 1], got {extent}")
    path = shake_trajectory(num_steps, rng=rng, anxiety=anxiety, centripetal=centripetal,
                            jitter=jitter, shake_rate=shake_rate)
    path -= path.mean(axis=0)
    reach = np.abs(path).max()
    half = (size - 1) / 2 - 1
    if reach > 0:
        path *= extent * half / reach
    return rasterize_path(path, size)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> np.ndarray:
    """Anisotropic Gaussian sampled at pixel centres, truncated to ``size × size`` and normalised.

    Args:
        size: Odd kernel side.
        sigma_x: Standard deviation (pixels) along the principal axis at angle ``theta``.
        sigma_y: Standard deviation (pixels) along the perpendicular axis.
        theta: Angle in radians from the column (+x, rightward) axis to the ``sigma_x`` axis,
            turning toward +row (downward, the image's y axis).

    Returns:
        ``(size, size)`` float64 kernel, sum 1, symmetric about the centre pixel.
    """
    _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError("sigmas must be positive")
    r = np.arange(size, dtype=np.float64) - size // 2
    rows, cols = np.meshgrid(r, r, indexing="ij")
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    u = cos_t * cols + sin_t * rows
    v = -sin_t * cols + cos_t * rows
    return _normalised(np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2)))


def disk_kernel(radius: float, size: int | None = None, *, supersample: int = 8) -> np.ndarray:
    """Defocus (pillbox) kernel whose edge pixels hold the fraction of their area inside the disk.

    Coverage is estimated from a ``supersample × supersample`` grid of points inside each pixel.

    Args:
        radius: Disk radius in pixels, > 0.
        size: Odd side, default ``2 * ceil(radius) + 1``.
        supersample: Sub-pixel samples per axis for the anti-aliased edge.

    Returns:
        ``(size, size)`` float64 kernel, sum 1.
    """
    if radius <= 0:
        raise ValueError("radius must be positive")
    size = 2 * math.ceil(radius) + 1 if size is None else size
    _check_size(size)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    r = np.arange(size, dtype=np.float64) - size // 2
    fine = (r[:, None] + offsets[None, :]).ravel()
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius**2
    coverage = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    if coverage.sum() == 0:  # radius far below a pixel: a delta
        coverage[size // 2, size // 2] = 1.0
    return _normalised(coverage)


def random_kernel(
    rng: np.random.Generator,
    *,
    kinds: Sequence[str] = KERNEL_KINDS,
    max_size: int = 31,
) -> np.ndarray:
    """Draw a kernel of a random kind, always ``max_size × max_size`` (so batches stack).

    * ``"motion"``: :func:`motion_kernel` with all trajectory parameters drawn from ``rng``;
    * ``"gaussian"``: sigmas ``U(0.5, (max_size - 1) / 6)`` each, ``theta ~ U(0, π)``;
    * ``"defocus"``: radius ``U(1, (max_size - 1) / 2)``.

    Args:
        rng: Source of randomness.
        kinds: Kinds to choose from, uniformly.
        max_size: Odd kernel side, at least 5.

    Returns:
        ``(max_size, max_size)`` float64 kernel, non-negative, sum 1, centred.
    """
    _check_size(max_size)
    if max_size < 5:
        raise ValueError("max_size must be at least 5")
    unknown = set(kinds) - set(KERNEL_KINDS)
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty subset of {KERNEL_KINDS}, got {kinds!r}")
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "motion":
        return motion_kernel(max_size, rng=rng)
    if kind == "gaussian":
        top = max(0.6, (max_size - 1) / 6)
        sx, sy = rng.uniform(0.5, top, size=2)
        return gaussian_kernel(max_size, sx, sy, rng.uniform(0.0, math.pi))
    return disk_kernel(rng.uniform(1.0, (max_size - 1) / 2), max_size)


MAX_KERNEL_FILE_BYTES = 16 << 20
"""Largest kernel file read (a 255×255 text kernel of ``repr`` floats is under 2 MB)."""
_LUMA = np.array([0.299, 0.587, 0.114])


def _parse_text(path: Path, data: bytes) -> np.ndarray:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KernelError(f"{path}: kernel text is not UTF-8") from None
    rows = []
    for line in text.replace(",", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rows.append([float(tok) for tok in line.split()])
    if not rows or len({len(row) for row in rows}) != 1:
        raise KernelError(f"{path}: kernel text must be a non-empty rectangular table of numbers")
    return np.array(rows, dtype=np.float64)


def _luminance_image(path: Path, data: bytes) -> np.ndarray:
    """Brightness of a kernel image whatever its mode: palette entries are looked up (never used
    as values), colour becomes Rec. 601 luminance, alpha is dropped, 16-bit stays exact."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if max(width, height) > MAX_KERNEL_SIZE:  # checked from the header, before decoding
            raise KernelError(f"{path}: kernel image {width}x{height} exceeds "
                              f"{MAX_KERNEL_SIZE} px per side")  # fmt: skip
        if img.mode in ("P", "PA"):
            img = img.convert("RGBA")
        elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGB")
        pixels = np.asarray(img).astype(np.float64)
    if pixels.ndim == 3:
        channels = pixels.shape[2]
        pixels = pixels[..., :3] @ _LUMA if channels >= 3 else pixels[..., 0]
    return pixels


def _read_kernel_bytes(path: Path) -> bytes:
    """The bytes of a regular kernel file of at most :data:`MAX_KERNEL_FILE_BYTES`."""
    import stat

    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise KernelError(f"{path}: is a folder, not a kernel file")
    if not stat.S_ISREG(info.st_mode):
        raise KernelError(f"{path}: not a regular file (FIFO, device or socket); refused")
    if info.st_size > MAX_KERNEL_FILE_BYTES:
        raise KernelError(f"{path}: {info.st_size} bytes is too large for a kernel file "
                          f"(at most {MAX_KERNEL_FILE_BYTES})")  # fmt: skip
    with open(path, "rb") as handle:
        return handle.read(MAX_KERNEL_FILE_BYTES + 1)


def _load_raw(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix not in _TEXT_SUFFIXES | _IMAGE_SUFFIXES | {".npy"}:
        raise KernelError(f"{path}: unknown kernel format {suffix!r} "
                          "(use .png, .txt, .csv or .npy)")  # fmt: skip
    data = _read_kernel_bytes(path)
    if suffix in _TEXT_SUFFIXES:
        return _parse_text(path, data)
    if suffix == ".npy":
        import io

        array = np.load(io.BytesIO(data), allow_pickle=False)
        if array.dtype.kind not in "biuf":
            raise KernelError(f"{path}: kernel array has dtype {array.dtype}; use real numbers")
        return array
    return _luminance_image(path, data)


def read_kernel(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a kernel file and normalise it to sum 1 (orientation and position kept as stored).

    Formats: images (``.png``, ``.jpg``, ...; read as luminance whatever the mode: palette
    images are looked up, colour becomes Rec. 601 luminance, alpha is ignored; an 8-bit display
    scaling does not matter because of the normalisation), text (``.txt``/``.csv``: one row per
    line, numbers separated by whitespace and/or commas, ``#`` comment lines allowed) and ``.npy``.
    Only regular files up to :data:`MAX_KERNEL_FILE_BYTES` are read; image sizes are checked
    from the header before decoding.

    Raises:
        KernelError: missing, special or unreadable file, unknown suffix, not 2-D, non-finite
            or negative values, a zero or overflowing sum, or a side over
            :data:`MAX_KERNEL_SIZE`.
    """
    path = Path(path)
    try:
        raw = _load_raw(path)
    except KernelError:
        raise
    except FileNotFoundError:
        raise KernelError(f"{path}: no such kernel file") from None
    except Exception as exc:  # any decoder failure is a bad file, never a crash
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise KernelError(f"{path}: cannot read kernel ({message})") from None
    kernel = np.asarray(raw, dtype=np.float64)
    if kernel.ndim != 2 or kernel.size == 0:
        raise KernelError(f"{path}: a kernel must be a 2-D array, got shape {kernel.shape}")
    if max(kernel.shape) > MAX_KERNEL_SIZE:
        raise KernelError(f"{path}: kernel {kernel.shape} exceeds {MAX_KERNEL_SIZE} px per side")
    if not np.all(np.isfinite(kernel)):
        raise KernelError(f"{path}: kernel has non-finite values")
    if np.any(kernel < 0):
        raise KernelError(f"{path}: kernel has negative values (min {kernel.min():g})")
    if kernel.max() <= 0:
        raise KernelError(f"{path}: kernel sums to zero")
    with np.errstate(over="ignore"):
        total = kernel.sum()
    if not np.isfinite(total):  # huge values overflow the sum: scale by the peak first
        kernel = kernel / kernel.max()
        total = kernel.sum()
    if not np.isfinite(total) or total <= 0:
        raise KernelError(f"{path}: kernel sum is not a finite positive number")
    kernel = kernel / total
    if not np.all(np.isfinite(kernel)) or not np.isclose(kernel.sum(), 1.0):
        raise KernelError(f"{path}: kernel cannot be normalised to sum 1")
    return kernel


def encode_kernel(path: str | os.PathLike[str], kernel: np.ndarray) -> bytes:
    """The bytes :func:`write_kernel` writes for ``path``'s suffix (nothing is written).

    Raises:
        KernelError: not a finite 2-D kernel, or a suffix other than .png, .txt or .npy.
    """
    import io

    path = Path(path)
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or not np.all(np.isfinite(kernel)):
        raise KernelError(f"{path}: can only write a finite 2-D kernel, got shape {kernel.shape}")
    suffix = path.suffix.lower()
    if suffix not in {".png", ".txt", ".npy"}:
        raise KernelError(f"{path}: kernel files are written as .png, .txt or .npy")
    buffer = io.BytesIO()
    if suffix == ".png":
        from PIL import Image

        peak = kernel.max()
        scaled = kernel / peak if peak > 0 else kernel
        Image.fromarray(np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)).save(
            buffer, format="PNG")
    elif suffix == ".txt":
        lines = (" ".join(repr(float(v)) for v in row) for row in kernel)
        buffer.write(("\n".join(lines) + "\n").encode())
    else:
        np.save(buffer, kernel, allow_pickle=False)
    return buffer.getvalue()


def write_kernel(path: str | os.PathLike[str], kernel: np.ndarray, *,
                 overwrite: bool = True) -> None:  # fmt: skip
    """Write a kernel atomically: ``.png`` 8-bit scaled to its maximum (for viewing; reading it
    back gives the kernel up to 8-bit rounding), ``.txt`` with exact ``repr`` floats, ``.npy``
    exact. Without ``overwrite`` an existing file is never replaced (``FileExistsError``).
    """
    data = encode_kernel(path, kernel)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def center_of_mass(kernel: np.ndarray) -> tuple[float, float]:
    """``(row, col)`` centre of mass of a non-negative kernel."""
    kernel = np.asarray(kernel, dtype=np.float64)
    rows, cols = np.indices(kernel.shape)
    total = kernel.sum()
    return float((rows * kernel).sum() / total), float((cols * kernel).sum() / total)


__all__ = [
    "KERNEL_KINDS",
    "MAX_KERNEL_FILE_BYTES",
    "MAX_KERNEL_SIZE",
    "center_of_mass",
    "disk_kernel",
    "encode_kernel",
    "gaussian_kernel",
    "motion_kernel",
    "random_kernel",
    "rasterize_path",
    "read_kernel",
    "shake_trajectory",
    "write_kernel",
]
