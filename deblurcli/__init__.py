"""deblurcli: remove blur from photographs.

The top-level import is light (no torch); the library API lives in submodules:

- :mod:`deblurcli.io` — ``read_image`` / ``write_image`` (bit depth, alpha, EXIF, ICC kept).
- :mod:`deblurcli.engine` — ``load_model`` and the ``Restorer`` (devices, precision, tiling).
- :mod:`deblurcli.metrics` — PSNR, SSIM, MSE and the shift-tolerant Levin protocol.
- :mod:`deblurcli.errors` — typed errors and the CLI exit codes.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
