"""`deblurcli deconvolve` (work in progress; replaced by the measurement-core issue)."""

from __future__ import annotations


def deconvolve() -> None:
    """Not implemented yet."""
    raise NotImplementedError("deconvolve")
