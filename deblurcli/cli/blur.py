"""`deblurcli blur` (work in progress; replaced by the measurement-core issue)."""

from __future__ import annotations


def blur() -> None:
    """Not implemented yet."""
    raise NotImplementedError("blur")
