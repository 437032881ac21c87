"""The Restorer's contract: shapes, padding, clamping, channels, precision and its fallbacks."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from deblurcli.engine import ModelInfo, Restorer, resolve_device, resolve_dtype
from deblurcli.engine.restorer import dihedral, pad_to_multiple
from deblurcli.errors import UnsupportedDtypeError, UnsupportedImageError, UsageError

TEST_DEVICE = os.environ.get("DEBLURCLI_TEST_DEVICE", "cpu")


def _restorer(model: nn.Module, **info: object) -> Restorer:
    values = {"arch": "residual_unet", "size_multiple": 4, **info}
    device = torch.device(TEST_DEVICE)
    return Restorer(model, ModelInfo(**values), device=device, dtype=torch.float32)


class Gain(nn.Module):
    """Multiplies by a constant and records the input shapes it saw."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return x * self.gain


def test_pads_to_multiple_crops_back_and_clamps() -> None:
    gain = Gain(3.0)
    x = torch.rand(2, 3, 37, 53)
    y = _restorer(gain)(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert gain.seen == [(2, 3, 40, 56)]
    assert y.min() >= 0 and y.max() <= 1
    assert torch.allclose(y, (x * 3).clamp(0, 1))


def test_pad_to_multiple_falls_back_to_replicate_for_tiny_inputs() -> None:
    padded, ph, pw = pad_to_multiple(torch.rand(1, 1, 2, 3), 8)
    assert padded.shape == (1, 1, 8, 8) and (ph, pw) == (6, 5)


def test_grayscale_through_rgb_model_and_rgb_through_gray_model() -> None:
    gray = torch.rand(1, 1, 16, 16)
    assert _restorer(Gain(0.5))(gray).shape == (1, 1, 16, 16)
    rgb = torch.rand(1, 3, 16, 16)
    out = _restorer(Gain(0.5), in_channels=1, out_channels=1)(rgb)
    assert torch.allclose(out, rgb * 0.5)
    with pytest.raises(UnsupportedImageError):
        _restorer(Gain(1.0))(torch.rand(1, 2, 16, 16))


def test_rejects_non_finite_input_and_reference_mismatch() -> None:
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(UnsupportedImageError):
        _restorer(Gain(1.0))(x)
    with pytest.raises(UsageError, match="takes no reference"):
        _restorer(Gain(1.0))(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(UsageError, match="needs a reference"):
        _restorer(Gain(1.0), inputs=2)(torch.rand(1, 3, 16, 16))


def test_forced_tiles_cover_the_image_and_internal_models_refuse_tiling(tiny_model) -> None:
    restorer = _restorer(tiny_model, size_multiple=4, receptive_radius=8)
    x = torch.rand(1, 3, 150, 170)
    whole = restorer(x, tile=None)
    tiled = restorer(x, tile=64, overlap=32)
    assert restorer.last_run.tile == 64
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 1e-3
    with pytest.raises(UsageError, match="cannot be tiled"):
        _restorer(tiny_model, tiling="internal")(x, tile=64)


class NanInReducedPrecision(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return torch.full_like(x, float("nan"))
        return x * 0.5


def test_reduced_precision_tile_with_nan_is_redone_in_fp32() -> None:
    info = ModelInfo(arch="residual_unet", supports_bf16=True)
    restorer = Restorer(
        NanInReducedPrecision(), info, device=torch.device("cpu"), dtype=torch.bfloat16
    )
    x = torch.rand(1, 3, 16, 16)
    y = restorer(x)
    assert restorer.last_run.fp32_fallbacks == 1
    assert torch.allclose(y, x * 0.5)


def test_precision_resolution_follows_the_descriptor() -> None:
    cpu = resolve_device("cpu")
    info = ModelInfo(arch="residual_unet", supports_fp16=False, supports_bf16=True)
    assert resolve_dtype("auto", cpu, info) == torch.float32
    assert resolve_dtype("bf16", cpu, info) == torch.bfloat16
    with pytest.raises(UnsupportedDtypeError):
        resolve_dtype("fp16", cpu, info)
    with pytest.raises(UnsupportedDtypeError):
        resolve_dtype("bf16", cpu, ModelInfo(arch="residual_unet", supports_bf16=False))
    with pytest.raises(UsageError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")


def test_dihedral_covers_eight_distinct_orientations_and_inverts_each() -> None:
    x = torch.rand(1, 2, 5, 7)
    turned = [dihedral(x, i) for i in range(8)]
    for i, t in enumerate(turned):
        assert t.shape == ((1, 2, 7, 5) if i & 4 else (1, 2, 5, 7))
        assert torch.equal(dihedral(t, i, inverse=True), x)
    flat = {(tuple(t.shape), tuple(t.flatten().tolist())) for t in turned}
    assert len(flat) == 8
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_ensemble_of_an_equivariant_model_is_exact_and_runs_every_orientation() -> None:
    gain = Gain(0.5)
    x = torch.rand(1, 3, 37, 53)
    restorer = _restorer(gain)
    assert torch.allclose(restorer(x, ensemble=8), x * 0.5, atol=1e-6)
    assert sorted(set(gain.seen)) == [(1, 3, 40, 56), (1, 3, 56, 40)]
    assert len(gain.seen) == 8


class ShiftRight(nn.Module):
    """Not flip-equivariant: moves the image one pixel to the right (wrapping)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, 1, dims=-1)


def test_ensemble_averages_the_orientations_turned_back() -> None:
    x = torch.rand(1, 3, 8, 12)
    restorer = _restorer(ShiftRight(), size_multiple=1)
    assert torch.equal(restorer(x), torch.roll(x, 1, dims=-1))
    # left-right flip turns the shift around; up-down flip leaves it; transposes shift rows
    expected2 = (torch.roll(x, 1, dims=-1) + torch.roll(x, -1, dims=-1)) / 2
    assert torch.allclose(restorer(x, ensemble=2), expected2, atol=1e-6)
    rows = (torch.roll(x, 1, dims=-2) + torch.roll(x, -1, dims=-2)) / 2
    assert torch.allclose(restorer(x, ensemble=8), (expected2 + rows) / 2, atol=1e-6)


def test_ensemble_progress_counts_every_copy_and_bad_sizes_are_refused(tiny_model) -> None:
    restorer = _restorer(tiny_model, receptive_radius=8)
    seen: list[tuple[int, int]] = []
    restorer(torch.rand(1, 3, 150, 170), tile=64, overlap=32, ensemble=4,
             on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] and {t for _, t in seen} == {seen[-1][1]}
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(UsageError, match="ensemble"):
        restorer(torch.rand(1, 3, 16, 16), ensemble=3)


@pytest.mark.skipif(TEST_DEVICE != "cpu", reason="the memory format is a CPU choice")
def test_cpu_channels_last_follows_the_registry_and_changes_no_result() -> None:
    from deblurcli.archs import REGISTRY, build

    torch.manual_seed(0)
    x = torch.rand(1, 3, 40, 56)
    marked = {arch for arch, spec in REGISTRY.items() if spec.cpu_channels_last}
    assert {"nafnet", "residual_unet"} <= marked and "deblurgan" not in marked
    for arch in ("nafnet", "deblurgan"):
        model = build(arch, REGISTRY[arch].tiny_config).eval()
        for p in model.parameters():  # not the identity the tiny models start as
            p.data.add_(0.05 * torch.randn_like(p))
        plain = model(pad_to_multiple(x, model.size_multiple)[0])[..., :40, :56].clamp(0, 1)
        info = ModelInfo.for_model(arch, model)
        restorer = Restorer(model, info, device=torch.device("cpu"), dtype=torch.float32)
        convs = [m.weight for m in restorer.model.modules() if isinstance(m, nn.Conv2d)
                 and m.weight.shape[-1] > 1 and m.weight.shape[1] > 1]
        in_cl = [w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                 for w in convs]
        assert all(in_cl) if arch in marked else not any(in_cl)
        with torch.no_grad():
            assert torch.allclose(restorer(x), plain.detach(), atol=1e-5)
