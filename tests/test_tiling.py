"""Tiling: even plans, weights that sum to one, exactness for local models, no seams, OOM split."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deblurcli.engine.tiling import axis_weights, plan_axis, run_auto_tiled, run_tiled
from deblurcli.errors import TileOutOfMemoryError


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "multiple"),
    [(317, 64, 16, 1), (200, 100, 24, 8), (64, 64, 16, 1), (1008, 256, 64, 16), (130, 96, 32, 2)],
)
def test_plan_covers_evenly_and_weights_sum_to_one(length, tile, overlap, multiple) -> None:
    plan = plan_axis(length, tile, overlap, multiple)
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.size == length
    assert plan.size <= max(tile, length if length <= tile else tile + multiple)
    assert all(s % multiple == 0 for s in plan.starts)
    gaps = [b - a for a, b in zip(plan.starts, plan.starts[1:], strict=False)]
    assert not gaps or max(gaps) - min(gaps) <= multiple  # evenly spaced
    total = torch.zeros(length, dtype=torch.float64)
    for start, weight in zip(plan.starts, axis_weights(plan), strict=False):
        assert weight.min() >= 0
        total[start : start + plan.size] += weight
    assert torch.allclose(total, torch.ones(length, dtype=torch.float64), atol=1e-12)


def _local_net() -> nn.Module:
    """Receptive radius 3 (three 3×3 convolutions)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 3, 3, padding=1),
    ).eval()


@pytest.mark.parametrize(("tile", "overlap"), [(64, 16), (48, 12), (100, 40)])
def test_tiled_equals_untiled_when_receptive_field_fits_the_overlap(tile, overlap) -> None:
    net = _local_net()
    x = torch.rand(2, 3, 131, 197)
    with torch.no_grad():
        whole = net(x)
        tiled = run_tiled(net, x, tile=tile, overlap=overlap)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-5


class TileMeanShift(nn.Module):
    """Seam-prone on purpose: adds a fraction of each tile's own mean, so tiles disagree."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * x.mean(dim=(2, 3), keepdim=True)


def _hard_stitched(fn, x: torch.Tensor, tile: int) -> torch.Tensor:
    out = torch.empty_like(x)
    for top in range(0, x.shape[2], tile):
        for left in range(0, x.shape[3], tile):
            window = (..., slice(top, top + tile), slice(left, left + tile))
            out[window] = fn(x[window])
    return out


def _border_vs_elsewhere(out: torch.Tensor, borders: set[int]) -> tuple[float, float]:
    steps = (out[..., :, 1:] - out[..., :, :-1]).abs().amax(dim=(0, 1, 2))  # step j → j+1
    at = [steps[j - 1].item() for j in borders if 0 < j < out.shape[-1]]
    rest = [steps[j].item() for j in range(len(steps)) if j + 1 not in borders]
    return max(at), max(rest)


def test_seam_prone_model_shows_no_seam_when_blended() -> None:
    h, w = 64, 256
    ramp = torch.linspace(0, 1, w).expand(1, 3, h, w).contiguous() ** 2  # means differ per tile
    net = TileMeanShift()
    blended = run_tiled(net, ramp, tile=64, overlap=32)
    plan = plan_axis(w, 64, 32)
    edges = {s for s in plan.starts[1:]} | {s + plan.size for s in plan.starts[:-1]}
    at_edges, elsewhere = _border_vs_elsewhere(blended, edges)
    assert at_edges <= elsewhere + 1e-6
    # the same model pasted tile by tile does show seams: the check can fail
    hard = _hard_stitched(net, ramp, 64)
    at_edges_hard, elsewhere_hard = _border_vs_elsewhere(hard, set(range(64, w, 64)))
    assert at_edges_hard > 2 * elsewhere_hard


def test_auto_tiling_halves_on_out_of_memory_until_it_fits() -> None:
    sizes: list[int] = []

    def fussy(tile: torch.Tensor) -> torch.Tensor:
        sizes.append(tile.shape[-1])
        if tile.shape[-1] * tile.shape[-2] > 70 * 70:
            raise torch.OutOfMemoryError("fake: tile too big")
        return tile * 2

    x = torch.rand(1, 3, 256, 256)
    result = run_auto_tiled(fussy, x, tile=None, overlap=16, multiple=8, min_tile=32)
    assert result.retries == 2 and result.tile == 64
    assert torch.allclose(result.output, x * 2, atol=1e-6)


def test_auto_tiling_gives_typed_error_at_minimum_tile_and_reraises_other_errors() -> None:
    def always_oom(tile: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("fake")

    with pytest.raises(TileOutOfMemoryError):
        run_auto_tiled(always_oom, torch.rand(1, 1, 128, 128), tile=None, overlap=8, min_tile=32)

    def broken(tile: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory (just a message, not the typed error)")

    with pytest.raises(RuntimeError):
        run_auto_tiled(broken, torch.rand(1, 1, 128, 128), tile=None, overlap=8, min_tile=32)


def _oom_above(limit: int, calls: list[int]):
    def fn(tile: torch.Tensor) -> torch.Tensor:
        calls.append(tile.shape[-1])
        if tile.shape[-1] * tile.shape[-2] > limit:
            raise torch.OutOfMemoryError("simulated: tile too big")
        return tile * 2

    return fn


def test_tiling_policy_holds_under_simulated_out_of_memory(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    x = torch.rand(1, 3, 128, 128)
    calls: list[int] = []
    with pytest.raises(TileOutOfMemoryError, match="cannot be tiled"):
        run_auto_tiled(_oom_above(70 * 70, calls), x, tile=None, overlap=16, policy="internal")
    assert calls == [128]  # never retried in tiles
    calls.clear()
    with caplog.at_level("WARNING"):
        result = run_auto_tiled(_oom_above(70 * 70, calls), x, tile=None, overlap=16,
                                min_tile=32, policy="discouraged")
    assert result.tile == 64 and "sensitive" in caplog.text
    assert torch.allclose(result.output, x * 2, atol=1e-6)


@pytest.mark.parametrize("policy", ["supported", "discouraged", "internal"])
def test_restorer_keeps_the_models_tiling_policy_on_out_of_memory(policy: str) -> None:
    from deblurcli.engine import ModelInfo, Restorer

    calls: list[int] = []

    class Hungry(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _oom_above(80 * 80, calls)(x) / 2

    info = ModelInfo(arch="residual_unet", tiling=policy, receptive_radius=4)  # type: ignore[arg-type]
    restorer = Restorer(Hungry(), info, device=torch.device("cpu"), dtype=torch.float32)
    x = torch.rand(1, 3, 128, 128)
    if policy == "internal":
        with pytest.raises(TileOutOfMemoryError):
            restorer(x, tile="auto")
        assert calls == [128]
    else:
        out = restorer(x, tile="auto")
        assert restorer.last_run.tile_retries >= 1 and torch.allclose(out, x, atol=1e-6)
        assert max(calls[1:]) <= 80
