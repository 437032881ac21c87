"""Typed errors of deblurcli and the exit codes the CLI maps them to.

Every error a user can cause (bad file, missing model, checksum mismatch, ...) is a
:class:`DeblurError` subclass carrying a one-line message and a documented exit code, so the CLI
maps library failures to exit codes in exactly one place (``deblurcli.cli.app.main``).

Exit codes (also in ``deblurcli --help`` and the README):

==== =============================================================================
code meaning
==== =============================================================================
0    every requested item succeeded (items skipped by policy count as success)
1    internal error (a bug); ``DEBLURCLI_DEBUG=1`` shows the traceback
2    usage or pre-flight error: bad option, no inputs, output conflict, a bad kernel or
     config file, a file outside a batch that cannot be read or written
3    some items failed (unreadable input, output taken by another run, write error), the
     others were written
4    model unavailable: unknown name, not shipped, not cached under ``--offline``, Hub error
5    integrity failure: sha256/size mismatch or a corrupt checkpoint header
6    out of memory even at the smallest tile size
130  interrupted (Ctrl-C); no partial output is left behind
==== =============================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_MODEL_UNAVAILABLE = 4
EXIT_CHECKSUM = 5
EXIT_OUT_OF_MEMORY = 6
EXIT_INTERRUPTED = 130


class DeblurError(Exception):
    """Base class of every expected failure; ``str(err)`` is a one-line user-facing message."""

    exit_code: int = EXIT_INTERNAL


class UsageError(DeblurError):
    """The request itself is invalid (bad option combination, output conflict, bad value)."""

    exit_code = EXIT_USAGE


class KernelError(UsageError):
    """A blur-kernel file or array is invalid: unreadable, not 2-D, negative, zero-sum, too big."""


class ImageError(DeblurError):
    """An image could not be read or written; the message names the file.

    Raised per file, so a batch can report it and carry on (the batch then exits 3).
    """

    exit_code = EXIT_PARTIAL


class ImageFormatError(ImageError):
    """The file is empty, truncated, corrupt or not an image format deblurcli reads."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the decompression-bomb guard allows."""


class UnsupportedImageError(ImageError):
    """The image decodes but has a layout deblurcli cannot process (e.g. 2 channels, float16)."""


class ModelUnavailableError(DeblurError):
    """The model cannot be resolved: unknown name, not shipped, not cached offline, Hub error."""

    exit_code = EXIT_MODEL_UNAVAILABLE


class ChecksumMismatchError(DeblurError):
    """A checkpoint's sha256 or size differs from the model table, or its header is corrupt."""

    exit_code = EXIT_CHECKSUM


class CheckpointError(ChecksumMismatchError):
    """A ``.safetensors`` file is unreadable or lacks the deblurcli metadata."""


class UnsupportedDtypeError(UsageError):
    """A precision was requested that the model's descriptor does not allow."""


class TileOutOfMemoryError(DeblurError):
    """The device ran out of memory even at the smallest tile size."""

    exit_code = EXIT_OUT_OF_MEMORY


class FileAccessError(DeblurError):
    """A file outside a batch (a config, a table, a CSV report) cannot be read or written:
    permission, disk full, not a regular file, not UTF-8. The message names the file."""

    exit_code = EXIT_USAGE


class LossyConversionWarning(UserWarning):
    """Something in a file cannot be carried through (extra frames, HDR values, an alpha layout);
    the message names the file and what is lost. The CLI prints it as a warning line."""


__all__ = [
    "EXIT_CHECKSUM",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL_UNAVAILABLE",
    "EXIT_OK",
    "EXIT_OUT_OF_MEMORY",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "CheckpointError",
    "ChecksumMismatchError",
    "DeblurError",
    "FileAccessError",
    "ImageError",
    "ImageFormatError",
    "ImageTooLargeError",
    "KernelError",
    "LossyConversionWarning",
    "ModelUnavailableError",
    "TileOutOfMemoryError",
    "UnsupportedDtypeError",
    "UnsupportedImageError",
    "UsageError",
]
