"""`deblurcli deblur` (work in progress)."""

from __future__ import annotations


def deblur() -> None:
    """Not implemented yet."""
    raise NotImplementedError("deblur")
