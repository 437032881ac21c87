"""Tiled inference: even tile plans, seam-free blending and out-of-memory split-and-retry.

Pure tensor functions with no knowledge of models or devices beyond the callable they are given.

Blending: two neighbouring tiles overlap by ``o`` pixels. In each overlap the outer quarter on
either side is discarded (weight 0 for the tile whose edge it is near) and the middle half is a
complementary sin²/cos² ramp, so the weights of all tiles sum to exactly 1 everywhere and are 1 at
the image borders. A model whose receptive radius is at most ``o // 4`` therefore gives the same
output tiled as untiled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from deblurcli.archs._registry import Tiling
from deblurcli.engine.device import is_out_of_memory
from deblurcli.errors import TileOutOfMemoryError

logger = logging.getLogger(__name__)

TileFn = Callable[[Tensor], Tensor]
"""Maps an N×C×h×w tile (CPU) to an N×C'×h×w result (CPU)."""


@dataclass(frozen=True)
class AxisPlan:
    """Tile starts along one axis; every tile has length ``size``."""

    starts: tuple[int, ...]
    size: int


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> AxisPlan:
    """Evenly spaced tiles covering ``length`` with at least ``overlap`` between neighbours.

    The tile count is chosen first, then the tile size is the smallest multiple of ``multiple``
    that covers ``length`` with that count, and starts are spread evenly (rounded down to
    ``multiple``). ``length`` must itself be a multiple of ``multiple``.
    """
    if length <= tile:
        return AxisPlan((0,), length)
    overlap = min(overlap, tile // 2)
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    size = min(length, math.ceil(size / multiple) * multiple)
    span = length - size
    starts = tuple((round(i * span / (count - 1)) // multiple) * multiple for i in range(count))
    starts = starts[:-1] + (span,)
    return AxisPlan(starts, size)


def axis_weights(plan: AxisPlan) -> list[Tensor]:
    """1-D blend weights of each tile (float64); across tiles they sum to exactly 1."""
    weights = [torch.ones(plan.size, dtype=torch.float64) for _ in plan.starts]
    for i in range(len(plan.starts) - 1):
        left_end = plan.starts[i] + plan.size
        right_start = plan.starts[i + 1]
        overlap = left_end - right_start
        if overlap <= 0:
            continue
        margin = overlap // 4
        ramp = overlap - 2 * margin
        t = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
        rising = torch.sin(t * math.pi / 2) ** 2
        # right tile: zero over its first margin, rising ramp, then one
        right = weights[i + 1]
        right[:margin] = 0.0
        right[margin : margin + ramp] *= rising
        # left tile: one, falling ramp (exact complement), zero over its last margin
        left = weights[i]
        offset = right_start - plan.starts[i]
        left[offset + margin : offset + margin + ramp] *= 1.0 - rising
        left[offset + margin + ramp :] = 0.0
    return weights


def run_tiled(
    fn: TileFn,
    x: Tensor,
    *,
    tile: int | tuple[int, int],
    overlap: int,
    multiple: int = 1,
    out_channels: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Apply ``fn`` tile by tile and blend the results into one image.

    This is the package's one tiler: the Restorer (networks) and the non-blind solvers of
    :mod:`deblurcli.deconv` both use it.

    Args:
        fn: The per-tile computation.
        x: Input whose H and W are multiples of ``multiple``.
        tile: Maximum tile side, or ``(height, width)`` (rounded to ``multiple``).
        overlap: Pixels shared by neighbouring tiles.
        multiple: Tile sizes and starts are multiples of this.
        out_channels: Channels of ``fn``'s output (default: same as input).
        on_progress: Called with (tiles done, tiles total).

    Shape:
        - x: :math:`(N, C, H, W)`; returns :math:`(N, C', H, W)` on x's device, float64 when
          ``x`` is float64, else float32.
    """
    n, c, h, w = x.shape
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    tile_h, tile_w = (max(multiple, (t // multiple) * multiple) for t in (tile_h, tile_w))
    rows = plan_axis(h, tile_h, overlap, multiple)
    cols = plan_axis(w, tile_w, overlap, multiple)
    row_w, col_w = axis_weights(rows), axis_weights(cols)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.zeros(n, out_channels or c, h, w, dtype=dtype, device=x.device)
    norm = torch.zeros(1, 1, h, w, dtype=dtype, device=x.device)
    total, done = len(rows.starts) * len(cols.starts), 0
    for top, wy in zip(rows.starts, row_w, strict=False):
        for left, wx in zip(cols.starts, col_w, strict=False):
            patch = x[:, :, top : top + rows.size, left : left + cols.size]
            result = fn(patch).to(dtype)
            weight = (wy[:, None] * wx[None, :]).to(dtype).to(x.device)
            out[:, :, top : top + rows.size, left : left + cols.size] += result * weight
            norm[:, :, top : top + rows.size, left : left + cols.size] += weight
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    return out / norm.clamp_min(1e-12)


@dataclass
class AutoTileResult:
    """Output of :func:`run_auto_tiled` and how it was obtained."""

    output: Tensor
    tile: int | None
    """Tile size finally used (None: the whole image at once)."""
    retries: int
    """How many times an out-of-memory error halved the tile."""


def run_auto_tiled(
    fn: TileFn,
    x: Tensor,
    *,
    tile: int | None,
    overlap: int,
    multiple: int = 1,
    min_tile: int = 64,
    out_channels: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    policy: Tiling = "supported",
    name: str = "the model",
) -> AutoTileResult:
    """Run whole (``tile=None``) or tiled; on out-of-memory halve the tile and retry.

    Only torch's typed ``OutOfMemoryError`` triggers a retry; any other error propagates. The
    model's tiling ``policy`` holds on out-of-memory too: ``internal`` (it cannot be tiled) fails
    at once instead of tiling, ``discouraged`` tiles with a warning.

    Raises:
        TileOutOfMemoryError: still out of memory at ``min_tile``, or at all for ``internal``.
    """
    _, _, h, w = x.shape
    current = tile
    retries = 0
    while True:
        try:
            if current is None or current >= max(h, w):
                output = fn(x).to(torch.float32)
                if on_progress is not None:
                    on_progress(1, 1)
            else:
                output = run_tiled(
                    fn, x, tile=current, overlap=overlap, multiple=multiple,
                    out_channels=out_channels, on_progress=on_progress,
                )
            return AutoTileResult(output, current, retries)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if policy == "internal":
                raise TileOutOfMemoryError(
                    f"out of memory running {name} on the whole {w}x{h} image, and it cannot be "
                    "tiled (tiling policy internal); try --device cpu or a smaller image"
                ) from None
            size = current if current is not None else max(h, w)
            halved = max(multiple, ((size // 2) // multiple) * multiple)
            if size <= min_tile or halved < min_tile:
                raise TileOutOfMemoryError(
                    f"out of memory even with {size}px tiles; try --device cpu or a smaller "
                    "--tile/--max-memory"
                ) from None
            if policy == "discouraged" and retries == 0:
                logger.warning("%s: out of memory at %dpx; tiling although the model is "
                               "sensitive to it (results may differ)", name, size)
            current = halved
            retries += 1
