"""Image files in and out, keeping bit depth, alpha, EXIF and ICC.

Pixels come from decoders that keep the file's sample type (Pillow turns 16-bit RGB PNG into 8
bits): tifffile for TIFF, then OpenCV ``imdecode(IMREAD_UNCHANGED)`` for everything else and for the
TIFFs tifffile cannot do (LZW, JPEG-in-TIFF, palette, CMYK). Files are read through Python, so any
path works. The header alone (Pillow's lazy plugins, tifffile's IFD) gives the size for the
decompression-bomb guard, the ICC profile, the EXIF block and the orientation, before any decoding.

Metadata: EXIF orientation 2-8 is applied to pixels and alpha on read and the stored ``exif`` says
Orientation=1, other tags kept; it is TIFF-structured bytes without JPEG's ``Exif\\0\\0`` prefix.
PNG, JPEG and WebP outputs get EXIF and ICC via OpenCV's ``imencodeWithMetadata`` (OpenCV >= 4.13).
TIFF outputs get ICC (tag 34675) but no EXIF; TIFF inputs give no EXIF, only their orientation is
honoured. BMP carries neither. A PNG eXIf chunk after the image data is not read.
"""
from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin
from PIL import Image as PILImage

from deblurcli._atomic import atomic_path
from deblurcli.errors import (
    ImageError,
    ImageFormatError,
    ImageTooLargeError,
    LossyConversionWarning,
    UnsupportedImageError,
    UsageError,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 200_000_000
"""Largest width*height read by default; ``DEBLURCLI_MAX_PIXELS`` or ``max_pixels`` override it."""

MAX_PIXELS_ENV = "DEBLURCLI_MAX_PIXELS"
_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
                   ".webp": "webp", ".bmp": "bmp"}  # fmt: skip
IMAGE_SUFFIXES: frozenset[str] = frozenset(_SUFFIX_FORMATS)
"""Lower-case file suffixes read and written (``.png .jpg .jpeg .tif .tiff .webp .bmp``)."""

_EXT = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "webp": ".webp", "bmp": ".bmp"}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"))
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
# Header-only Pillow parsers, instantiated directly: ``PIL.Image.open`` would apply Pillow's global
# bomb limit (89 Mpx warning, 179 Mpx error) instead of ours. ``.load()`` is never called, so
# Pillow's check never runs; should a Pillow version run it anyway, its error maps to ours.
_PIL_HEADERS: dict[str, Any] = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.JpegImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
}
_ALPHA_FORMATS = ("png", "tiff", "webp")
_METADATA_FORMATS = ("png", "jpeg", "webp")
_ORIENT_TAG, _ICC_TAG = 0x0112, 34675
HEADER_LIMIT = 64 << 20
"""Most bytes read before the pixel data while looking for the image header (PNG/JPEG)."""
_SNIFF_BYTES = 64 << 10
_SLACK_BYTES = 64 << 20
_BYTES_PER_PIXEL = 16
"""File size bound: an image of W×H pixels needs at most 16·W·H bytes (4 float32 samples) plus
:data:`_SLACK_BYTES` of metadata; larger files are refused before they are read."""

Array = NDArray[Any]


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image plus what is needed to write it back faithfully.

    ``eq=False``: arrays do not compare to a single bool; compare fields explicitly.
    """

    pixels: NDArray[np.float32]
    """Shape (H, W, C), C in {1, 3} (RGB order), float32 in [0, 1]."""
    dtype: np.dtype[Any]
    """The decoder's sample type (uint8, uint16 or float32); the default output depth."""
    alpha: Array | None = None
    """Shape (H, W) in the original sample type, never modified; ``None`` when there is none."""
    exif: bytes | None = None
    """Raw TIFF-structured EXIF, orientation already applied to the pixels and reset to 1."""
    icc: bytes | None = None
    """ICC profile bytes, passed through untouched (no colour conversion is ever done)."""
    format: str = "png"
    """Container the pixels came from: ``png``, ``jpeg``, ``tiff``, ``webp`` or ``bmp``."""
    source: Path | None = None
    """The file it was read from, if any."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))  # accept np.uint8 as well
        if self.dtype not in (np.uint8, np.uint16, np.float32):
            raise ValueError(f"dtype must be uint8, uint16 or float32, got {self.dtype}")
        p = self.pixels
        if p.dtype != np.float32 or p.ndim != 3 or p.shape[2] not in (1, 3):
            raise ValueError(f"pixels must be float32 (H, W, 1|3), got {p.dtype} {p.shape}")
        if self.alpha is not None and self.alpha.shape != p.shape[:2]:
            raise ValueError(f"alpha shape {self.alpha.shape} does not match pixels {p.shape}")

    @property
    def height(self) -> int:
        """Number of rows H."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Number of columns W."""
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """Colour channels C (1 or 3), alpha not counted."""
        return int(self.pixels.shape[2])

    def with_pixels(self, pixels: Array) -> Image:
        """Return a copy with new pixels and the same metadata and alpha.

        Args:
            pixels: New colour data, cast to float32.

        Shape:
            pixels: (H, W, C) with the same H and W when the image has alpha, C in {1, 3}.
        """
        return replace(self, pixels=np.asarray(pixels, dtype=np.float32))

    def to_tensor(self) -> Any:
        """The pixels as a float32 torch tensor in [0, 1] (a copy; torch is imported lazily).

        Shape:
            output: (1, C, H, W).
        """
        return hwc_to_tensor(self.pixels)

    def with_tensor(self, tensor: Any) -> Image:
        """Like :meth:`with_pixels`, from a tensor on any device and of any float dtype.

        Shape:
            tensor: (1, C, H, W) or (C, H, W).
        """
        return self.with_pixels(tensor_to_hwc(tensor.float()))


def hwc_to_tensor(array: Array) -> Any:
    """A numpy image as a torch tensor in the network layout, same dtype and values.

    The one HWC → NCHW conversion of deblurcli (:meth:`Image.to_tensor` uses it). The result is a
    contiguous CPU copy, unless ``array`` is already laid out channel-first in memory; torch is
    imported lazily.

    Args:
        array: Pixels, channels last.

    Shape:
        - array: (H, W, C)
        - output: (1, C, H, W)

    Raises:
        ValueError: ``array`` is not 3-D.
    """
    import torch

    if array.ndim != 3:
        raise ValueError(f"expected an H×W×C array, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def tensor_to_hwc(tensor: Any) -> Array:
    """A torch image as a numpy array, channels last, same dtype and values.

    The one NCHW → HWC conversion of deblurcli (:meth:`Image.with_tensor` uses it). The tensor is
    detached and moved to the CPU; the result is a strided view of it, not a copy. Convert
    ``bfloat16``/``float16`` first (``tensor.float()``) when numpy needs float32.

    Args:
        tensor: One image, channels first, on any device.

    Shape:
        - tensor: (1, C, H, W) or (C, H, W)
        - output: (H, W, C)

    Raises:
        ValueError: ``tensor`` is neither (1, C, H, W) nor (C, H, W).
    """
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    elif tensor.ndim != 3:
        raise ValueError(f"expected a 1×C×H×W or C×H×W tensor, got shape {tuple(tensor.shape)}")
    return tensor.detach().cpu().permute(1, 2, 0).numpy()


def format_from_suffix(path: str | os.PathLike[str]) -> str:
    """Return the format name for ``path``'s suffix (case-insensitive), e.g. ``"jpeg"`` for .JPG.

    Raises:
        UnsupportedImageError: the suffix is not one of :data:`IMAGE_SUFFIXES`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        known = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UnsupportedImageError(f"{path}: unsupported image extension {suffix!r} ({known})")
    return _SUFFIX_FORMATS[suffix]


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a suffix deblurcli reads (no file access)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _max_pixels(override: int | None) -> int:
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if override is not None or not raw:
        return DEFAULT_MAX_PIXELS if override is None else override
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise UsageError(f"{MAX_PIXELS_ENV}={raw!r} is not an integer") from None


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in _TIFF_MAGIC:
        return "tiff"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def _exif_and_orientation(raw: bytes | None) -> tuple[bytes | None, int]:
    """Strip the ``Exif\\0\\0`` prefix, read Orientation and reset it to 1 in the returned block."""
    if not raw:
        return None, 1
    body = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    exif = PILImage.Exif()
    try:
        exif.load(body)
        orientation = int(exif.get(_ORIENT_TAG, 1))
        if orientation == 1:
            return body, 1
        exif[_ORIENT_TAG] = 1
        fixed = exif.tobytes()
    except Exception as err:  # malformed EXIF must not cost the image
        logger.warning("ignoring unreadable EXIF block (%s)", _one_line(err))
        return None, 1
    return fixed[6:] if fixed.startswith(b"Exif\x00\x00") else fixed, orientation


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    icc: bytes | None
    exif: bytes | None
    orientation: int
    frames: int


def _jpeg_header_end(handle: Any, size: int, path: Path) -> int:
    """Offset just past the start-of-scan segment, found by walking marker segments by length.

    Bounded: at most :data:`HEADER_LIMIT` bytes and 64 KiB of stray bytes between markers, so a
    file of zeros after the JPEG signature is refused at once instead of parsed byte by byte.
    """
    pos, junk = 2, 0
    while pos < min(size, HEADER_LIMIT):
        handle.seek(pos)
        head = handle.read(4)
        if len(head) < 2:
            break
        if head[0] != 0xFF:  # stray bytes: look for the next marker in one block
            handle.seek(pos)
            step = handle.read(1 << 16).find(b"\xff")
            junk += (1 << 16) if step < 0 else step
            if step < 0 or junk > (1 << 16):
                raise ImageFormatError(f"{path}: corrupt jpeg header (no marker found)")
            pos += step
            continue
        marker = head[1]
        if marker == 0xFF:
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
        else:
            if len(head) < 4:
                break
            pos += 2 + int.from_bytes(head[2:4], "big")
            if marker == 0xDA:
                return pos
    raise ImageFormatError(f"{path}: truncated or corrupt jpeg header (no image data found)")


def _png_header_end(handle: Any, size: int, path: Path) -> int:
    """Offset just past the first IDAT chunk header, walking chunks by their lengths."""
    pos = 8
    while pos + 8 <= min(size, HEADER_LIMIT):
        handle.seek(pos)
        length, kind = struct.unpack(">I4s", handle.read(8))
        if kind == b"IDAT":
            return pos + 8
        pos += 12 + length
    raise ImageFormatError(f"{path}: truncated or corrupt png header (no image data found)")


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas size from the first 30 bytes of a WebP file (VP8X, VP8 or VP8L)."""
    kind = head[12:16]
    if kind == b"VP8X" and len(head) >= 30:
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if kind == b"VP8 " and len(head) >= 30:
        return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                int.from_bytes(head[28:30], "little") & 0x3FFF)  # fmt: skip
    if kind == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def _header(handle: Any, size: int, fmt: str, path: Path, limit: int) -> _Header:
    """Parse the header without decoding pixels, reading only as much of the file as needed.

    Raises:
        ImageTooLargeError: more than ``limit`` pixels (WebP is checked before it is read).
    """
    if fmt == "tiff":
        import tifffile

        handle.seek(0)
        with tifffile.TiffFile(handle) as tif:
            page: Any = tif.pages[0]
            icc, orient = page.tags.get(_ICC_TAG), page.tags.get(_ORIENT_TAG)
            icc_bytes = bytes(icc.value) if icc else None
            orientation = int(orient.value) if orient else 1
            frames = len(tif.pages)
            return _Header(int(page.imagewidth), int(page.imagelength), icc_bytes, None,
                           orientation, frames)  # fmt: skip
    handle.seek(0)
    if fmt in ("jpeg", "png"):
        end = (_jpeg_header_end if fmt == "jpeg" else _png_header_end)(handle, size, path)
        handle.seek(0)
        prefix = handle.read(end)
    elif fmt == "webp":
        dims = _webp_size(handle.read(30))
        if dims is not None and dims[0] * dims[1] > limit:
            _too_large(path, *dims, limit)
        handle.seek(0)
        prefix = handle.read()
    else:
        prefix = handle.read(_SNIFF_BYTES)
    with _PIL_HEADERS[fmt](io.BytesIO(prefix)) as im:
        width, height = im.size
        icc, raw_exif = im.info.get("icc_profile"), im.info.get("exif")
        frames = int(getattr(im, "n_frames", 1) or 1)
    exif, orientation = _exif_and_orientation(raw_exif)
    return _Header(int(width), int(height), icc or None, exif, orientation, frames)


def _too_large(path: Path, width: int, height: int, limit: int) -> None:
    raise ImageTooLargeError(f"{path}: {width}x{height} = {width * height} pixels exceeds the "
                             f"limit of {limit} (raise it with --max-pixels or "
                             f"{MAX_PIXELS_ENV})")  # fmt: skip


def _decode_tifffile(data: bytes, fmt: str) -> Array | None:
    """Decode plain gray/RGB TIFF (any bit depth tifffile handles without extra codecs)."""
    if fmt != "tiff":
        return None
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page: Any = tif.pages[0]
            if int(page.photometric) not in (1, 2):  # MINISBLACK, RGB; others via OpenCV
                return None
            arr = np.asarray(page.asarray())
            if arr.ndim == 3 and int(page.planarconfig) == 2:
                arr = np.moveaxis(arr, 0, -1)
            return arr
    except Exception as err:  # e.g. LZW without imagecodecs: let the next decoder try
        logger.debug("tifffile could not decode: %s", _one_line(err))
        return None


def _decode_opencv(data: bytes, fmt: str) -> Array | None:
    """Decode with OpenCV, keeping the sample type; return RGB(A) or gray(+alpha) order."""
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    if arr is None:
        return None
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
        if fmt == "png" and data[25] == 4 and arr.shape[2] == 4:  # gray+alpha expanded to 4
            arr = arr[..., [0, 3]]
    return np.ascontiguousarray(arr)


DECODERS: list[tuple[str, Callable[[bytes, str], Array | None]]] = [
    ("tifffile", _decode_tifffile),
    ("opencv", _decode_opencv),
]
"""Tried in order; a decoder returns ``None`` for data it does not handle. Add formats here."""


def _orient(arr: Array, orientation: int) -> Array:
    """Apply an EXIF orientation (1-8) to an (H, W, ...) array, as ``ImageOps.exif_transpose``."""
    ops: dict[int, Callable[[Array], Array]] = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
    }  # fmt: skip
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Image:
    """Read an image file, keeping its sample type, alpha, EXIF and ICC.

    Args:
        path: PNG, JPEG, TIFF, WebP or BMP file; the content, not the suffix, picks the decoder.
        max_pixels: Refuse images with more pixels than this (default: ``DEBLURCLI_MAX_PIXELS``
            or :data:`DEFAULT_MAX_PIXELS`); checked from the header, before decoding.

    Returns:
        The image; ``pixels`` has shape (H, W, C) after the EXIF orientation is applied.

    Raises:
        ImageFormatError: missing, unreadable, empty, truncated, corrupt or non-image file, or an
            unknown extension.
        ImageTooLargeError: width*height exceeds the limit.
        UnsupportedImageError: decodable but unusable (sample type, channel count, NaN/Inf).
    """
    path = Path(path)
    if not is_image_path(path):
        known = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ImageFormatError(f"{path}: not an image file extension ({known})")
    limit = _max_pixels(max_pixels)
    data, fmt, head = _read_bounded(path, limit)
    arr = next((a for _, dec in DECODERS if (a := dec(data, fmt)) is not None), None)
    if arr is None:
        raise ImageFormatError(f"{path}: cannot decode {fmt} data (truncated or corrupt)")
    if arr.dtype not in (np.uint8, np.uint16, np.float32):
        raise UnsupportedImageError(f"{path}: {arr.dtype} samples are not supported "
                                    "(uint8, uint16 or float32 only)")  # fmt: skip
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise UnsupportedImageError(f"{path}: unsupported layout {arr.shape} (gray or RGB, +alpha)")
    if head.frames > 1:
        _lossy(f"{path}: has {head.frames} frames; only the first is read and written")
    has_alpha = arr.shape[2] in (2, 4)
    color, alpha = (arr[..., :-1], arr[..., -1]) if has_alpha else (arr, None)
    if arr.dtype == np.float32:
        if not np.isfinite(arr).all():
            raise UnsupportedImageError(f"{path}: float image contains NaN or Inf values")
        low, high = float(color.min()), float(color.max())
        if low < 0.0 or high > 1.0:
            _lossy(f"{path}: float samples span [{low:g}, {high:g}]; values outside [0, 1] are "
                   "clipped (HDR highlights are lost)")  # fmt: skip
        pixels = np.clip(color, 0.0, 1.0)
    else:
        pixels = color.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    orientation = head.orientation
    return Image(pixels=_orient(pixels, orientation),
                 alpha=None if alpha is None else _orient(alpha.copy(), orientation),
                 dtype=arr.dtype, exif=head.exif, icc=head.icc, format=fmt,
                 source=path)  # fmt: skip


def _lossy(message: str) -> None:
    warnings.warn(message, LossyConversionWarning, stacklevel=3)


def _read_bounded(path: Path, limit: int) -> tuple[bytes, str, _Header]:
    """Read a regular file whose header says it holds at most ``limit`` pixels.

    Special files (FIFOs, devices, sockets) are refused before they are opened, the header is
    parsed from a bounded prefix, and a file far larger than its pixels can need is refused
    before it is read into memory.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageFormatError(f"{path}: no such file") from None
    except OSError as err:
        raise ImageFormatError(f"{path}: cannot read ({err.strerror or _one_line(err)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageFormatError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageFormatError(f"{path}: not a regular file (FIFO, device or socket); refused")
    if info.st_size == 0:
        raise ImageFormatError(f"{path}: empty file")
    try:
        with open(path, "rb") as handle:
            fmt = _sniff(handle.read(32))
            if fmt is None:
                raise ImageFormatError(f"{path}: not a PNG, JPEG, TIFF, WebP or BMP image")
            try:
                head = _header(handle, info.st_size, fmt, path, limit)
            except ImageError:
                raise
            except PILImage.DecompressionBombError as err:
                raise ImageTooLargeError(f"{path}: {_one_line(err)}") from None
            except Exception as err:
                raise ImageFormatError(f"{path}: corrupt {fmt} header ({_one_line(err)})") from None
            if head.width * head.height > limit:
                _too_large(path, head.width, head.height, limit)
            most = _BYTES_PER_PIXEL * head.width * head.height + _SLACK_BYTES
            if info.st_size > most:
                raise ImageFormatError(f"{path}: {info.st_size} bytes is far more than a "
                                       f"{head.width}x{head.height} image needs (corrupt or "
                                       "padded file); refused")  # fmt: skip
            handle.seek(0)
            data = handle.read()
    except OSError as err:
        raise ImageFormatError(f"{path}: cannot read ({err.strerror or _one_line(err)})") from None
    return data, fmt, head


def _quantise(arr: Array, dtype: np.dtype[Any]) -> Array:
    """Convert samples to ``dtype``: integers are rescaled exactly, floats clipped then rounded."""
    if arr.dtype.kind in "ui":
        if arr.dtype == dtype:
            return arr
        arr = arr / float(np.iinfo(arr.dtype).max)
    x = np.clip(arr, 0.0, 1.0)
    if dtype == np.float32:
        return x.astype(np.float32)
    return np.rint(x * float(np.iinfo(dtype).max)).astype(dtype)


def _output_dtype(fmt: str, source: np.dtype[Any], bit_depth: object) -> np.dtype[Any]:
    if bit_depth not in ("same", 8, 16):
        raise ValueError(f"bit_depth must be 'same', 8 or 16, got {bit_depth!r}")
    if fmt in ("jpeg", "webp", "bmp") or bit_depth == 8:
        return np.dtype(np.uint8)
    if bit_depth == 16 or (fmt == "png" and source == np.float32):
        return np.dtype(np.uint16)
    return source


def _encode(fmt: str, arr: Array, image: Image, quality: int) -> bytes | None:
    """Encode (H, W, C) RGB(A)/gray(+alpha) samples as a ``fmt`` file; ``None`` if refused."""
    if fmt == "tiff":
        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, arr if arr.shape[2] > 1 else arr[..., 0], metadata=None,
                         photometric="rgb" if arr.shape[2] >= 3 else "minisblack",
                         planarconfig="contig" if arr.shape[2] > 1 else None,
                         extrasamples=["unassalpha"] if image.alpha is not None else None,
                         compression="zlib", predictor=2 if arr.dtype != np.float32 else None,
                         iccprofile=image.icc)  # fmt: skip
        return buf.getvalue()
    if arr.shape[2] == 2 and fmt == "png":  # OpenCV writes no gray+alpha PNG: do it here
        return _encode_png_gray_alpha(arr, image)
    if arr.shape[2] == 2:  # WebP has no gray+alpha: spread the gray over R, G and B
        _lossy(f"{fmt.upper()} cannot store gray+alpha; written as RGBA (use .png or .tif to "
               "keep it)")  # fmt: skip
        arr = arr[..., [0, 0, 0, 1]]
    if arr.shape[2] >= 3:
        arr = np.ascontiguousarray(arr[..., [2, 1, 0, 3][: arr.shape[2]]])
    params: list[int] = []
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif fmt == "webp":  # OpenCV: quality > 100 means lossless
        params = [cv2.IMWRITE_WEBP_QUALITY, 101 if quality == 100 else quality]
    kinds: list[int] = []
    blobs: list[Array] = []
    for kind, blob in ((cv2.IMAGE_METADATA_EXIF, image.exif), (cv2.IMAGE_METADATA_ICCP, image.icc)):
        if blob and fmt in _METADATA_FORMATS:
            kinds.append(kind)
            blobs.append(np.frombuffer(blob, np.uint8))
    try:
        if kinds:
            ok, out = cv2.imencodeWithMetadata(_EXT[fmt], arr, kinds, blobs, params)
        else:
            ok, out = cv2.imencode(_EXT[fmt], arr, params)
    except cv2.error as err:
        logger.debug("OpenCV %s encoder: %s", fmt, _one_line(err))
        return None
    return out.tobytes() if ok else None


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode_png_gray_alpha(arr: Array, image: Image) -> bytes:
    """A gray+alpha PNG (colour type 4, 8 or 16 bits) with its ICC profile and EXIF."""
    height, width = arr.shape[:2]
    depth = 16 if arr.dtype == np.uint16 else 8
    rows = arr.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0))]
    if image.icc:
        chunks.append(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(image.icc)))
    if image.exif:
        chunks.append(_png_chunk(b"eXIf", image.exif))
    chunks += [_png_chunk(b"IDAT", zlib.compress(raw, 6)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def encode_image(
    path: str | os.PathLike[str], image: Image, *, bit_depth: Literal["same", 8, 16] = "same",
    quality: int = 95,
) -> bytes:
    """Encode ``image`` as the file :func:`write_image` would write to ``path`` (nothing written).

    Raises:
        UnsupportedImageError: unknown suffix, alpha into JPEG/BMP, or the encoder refused.
    """
    fmt = format_from_suffix(path)
    check_writable(path, image)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1-100, got {quality}")
    dtype = _output_dtype(fmt, image.dtype, bit_depth)
    arr = _quantise(image.pixels, dtype)
    if image.alpha is not None:  # alpha already in the output type is passed through untouched
        alpha = image.alpha if image.alpha.dtype == dtype else _quantise(image.alpha, dtype)
        arr = np.concatenate([arr, alpha[..., None]], axis=2)
    data = _encode(fmt, arr, image, quality)
    if data is None:
        raise UnsupportedImageError(f"{path}: the {fmt} encoder refused this image "
                                    f"({arr.dtype}, {arr.shape[2]} channels)")  # fmt: skip
    return data


def check_writable(path: str | os.PathLike[str], image: Image) -> None:
    """Raise if ``image`` cannot be stored as ``path``'s format (checked before any compute).

    Raises:
        UnsupportedImageError: unknown suffix, or alpha into a format without alpha (JPEG, BMP).
    """
    fmt = format_from_suffix(path)
    if image.alpha is not None and fmt not in _ALPHA_FORMATS:
        raise UnsupportedImageError(f"{path}: {fmt.upper()} cannot store the alpha channel; "
                                    "write .png, .tif or .webp instead")  # fmt: skip


def write_image(path: str | os.PathLike[str], image: Image, *,
                bit_depth: Literal["same", 8, 16] = "same", quality: int = 95,
                overwrite: bool = True) -> None:  # fmt: skip
    """Write ``image`` atomically in the format of ``path``'s suffix, with its alpha and metadata.

    Args:
        path: Target file; its suffix picks the format (it may differ from ``image.format``).
        image: Pixels are clipped to [0, 1] and rounded to the output depth.
        bit_depth: ``"same"`` keeps ``image.dtype`` (float32 becomes 16-bit in PNG, stays float32
            in TIFF); 8 or 16 force the depth. JPEG, WebP and BMP are always 8-bit.
        quality: JPEG/WebP quality 1-100; for WebP, 100 means lossless.
        overwrite: Replace an existing file. When false the file is claimed at the moment of
            writing and an existing one (even one another process just wrote) is never replaced.

    Raises:
        UnsupportedImageError: unknown suffix, or alpha into JPEG/BMP.
        ImageError: the file could not be written, or exists and ``overwrite`` is false.
    """
    from deblurcli._atomic import OutputExistsError

    data = encode_image(path, image, bit_depth=bit_depth, quality=quality)
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_bytes(data)
    except OutputExistsError as err:
        raise ImageError(str(err)) from None
    except OSError as err:
        raise ImageError(f"{path}: cannot write ({err.strerror or _one_line(err)})") from None


__all__ = [
    "DECODERS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS_ENV",
    "HEADER_LIMIT",
    "Image",
    "check_writable",
    "encode_image",
    "format_from_suffix",
    "hwc_to_tensor",
    "is_image_path",
    "read_image",
    "tensor_to_hwc",
    "write_image",
]
