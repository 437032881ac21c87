"""Losses: the function/module checklist (shape, reduction, gradcheck, module == function)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from deblurcli.train import losses

PAIRS: list[tuple[Callable[..., torch.Tensor], type[nn.Module]]] = [
    (losses.l1_loss, losses.L1Loss),
    (losses.mse_loss, losses.MSELoss),
    (losses.charbonnier_loss, losses.CharbonnierLoss),
    (losses.fft_loss, losses.FFTLoss),
    (losses.ssim_loss, losses.SSIMLoss),
]


def _pair(dtype: torch.dtype = torch.float32, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (
        torch.rand(2, 3, size, size, generator=gen, dtype=dtype),
        torch.rand(2, 3, size, size, generator=gen, dtype=dtype),
    )


@pytest.mark.parametrize(("fn", "module"), PAIRS)
def test_smoke_module_equals_function(
    fn: Callable[..., torch.Tensor], module: type[nn.Module]
) -> None:
    x, y = _pair()
    value = fn(x, y)
    assert value.shape == () and value > 0
    torch.testing.assert_close(module()(x, y), value)
    assert fn(x, x) < 1e-2  # zero (charbonnier: eps) for identical inputs
    assert fn(x, y, reduction="sum") >= value
    assert fn(x, y, reduction="none").shape[0] == 2


@pytest.mark.parametrize(("fn", "module"), PAIRS)
def test_non_contiguous_input(fn: Callable[..., torch.Tensor], module: type[nn.Module]) -> None:
    x, y = _pair()
    xt, yt = x.transpose(2, 3), y.transpose(2, 3)
    assert not xt.is_contiguous()
    torch.testing.assert_close(fn(xt, yt), fn(xt.contiguous(), yt.contiguous()))


@pytest.mark.parametrize(
    "fn",
    [losses.l1_loss, losses.mse_loss, losses.charbonnier_loss, losses.fft_loss, losses.ssim_loss],
)
def test_gradcheck(fn: Callable[..., torch.Tensor]) -> None:
    x, y = (t[:1] for t in _pair(torch.float64, size=11))
    x = (x * 0.5 + 0.25).requires_grad_(True)  # away from the L1 kink at x == y
    assert torch.autograd.gradcheck(lambda a: fn(a, y), (x,), eps=1e-6, atol=1e-4, fast_mode=True)


def test_weight_and_exceptions() -> None:
    x, y = _pair()
    weight = torch.zeros(1, 1, 16, 16)
    weight[..., :8] = 2.0
    assert losses.l1_loss(x, y, weight=weight) == pytest.approx(
        float((x - y)[..., :8].abs().mean()), rel=1e-5
    )
    with pytest.raises(ValueError, match="reduction"):
        losses.l1_loss(x, y, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="N×C×H×W"):
        losses.l1_loss(x, y[:, :1])


def test_latent_l1() -> None:
    latents = [torch.full((1, 2, 4, 4), -2.0), torch.ones(1, 3, 2, 2)]
    assert float(losses.latent_l1(latents)) == pytest.approx(3.0)
    assert losses.latent_l1(latents, reduction="none").tolist() == [2.0, 1.0]
    assert float(losses.LatentL1()(latents)) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        losses.latent_l1([])


def test_perceptual_without_weights_warns_and_is_zero(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="deblurcli.train.losses"):
        loss = losses.PerceptualLoss(None)
    assert "nothing is downloaded" in caplog.text
    x, y = _pair()
    assert float(loss(x, y)) == 0.0
    objective = losses.PixelObjective(l1=1.0, perceptual=1.0)
    assert "perceptual" not in objective.terms


def test_perceptual_loads_user_file(tmp_path: Path) -> None:
    net = losses.FeatureNet()
    path = tmp_path / "features.safetensors"
    save_file(
        {f"layers.{k}": v.contiguous() for k, v in net.layers.state_dict().items()}, str(path)
    )
    loss = losses.PerceptualLoss(path)
    assert loss.net is not None and not any(p.requires_grad for p in loss.net.parameters())
    x, y = _pair(size=32)
    x.requires_grad_(True)
    value = loss(x, y)
    value.backward()
    assert value > 0 and x.grad is not None
    torch.testing.assert_close(value, losses.perceptual_loss(x, y, loss.net))
    save_file({"layers.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(RuntimeError):
        losses.load_feature_net(path)


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "wgan-gp", "ragan"])
def test_gan_losses_prefer_the_right_side(kind: losses.GanKind) -> None:
    good, bad = torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), -3.0)
    if kind == "lsgan":
        good, bad = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    # a discriminator that separates real (good) from fake (bad) has a low loss
    assert losses.gan_discriminator_loss(kind, good, bad) < losses.gan_discriminator_loss(
        kind, bad, good
    )
    # a generator whose fakes are scored as real has a low loss
    assert losses.gan_generator_loss(kind, good, bad) < losses.gan_generator_loss(kind, bad, good)
    module = losses.GANLoss(kind)
    torch.testing.assert_close(
        module(good, bad, True), losses.gan_discriminator_loss(kind, good, bad)
    )
    torch.testing.assert_close(module(bad, good, False), losses.gan_generator_loss(kind, good, bad))


def test_ragan_needs_real_and_unknown_kind() -> None:
    with pytest.raises(ValueError, match="real"):
        losses.gan_generator_loss("ragan", torch.zeros(1))
    with pytest.raises(ValueError, match="unknown"):
        losses.gan_discriminator_loss("hinge", torch.zeros(1), torch.zeros(1))  # type: ignore[arg-type]


def test_gradient_penalty_is_differentiable() -> None:
    disc = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(1))
    real, fake = _pair()
    disc(real)
    penalty = losses.gradient_penalty(disc, real, fake, generator=torch.Generator().manual_seed(1))
    penalty.backward()
    assert penalty >= 0 and disc[0].weight.grad is not None  # type: ignore[union-attr]


def test_pixel_objective_sums_weighted_terms() -> None:
    x, y = _pair()
    objective = losses.PixelObjective(l1=2.0, fft=0.5, latent_l1=0.1)
    total, parts = objective(x, y, [torch.ones(1, 1, 2, 2)])
    expected = 2.0 * losses.l1_loss(x, y) + 0.5 * losses.fft_loss(x, y) + 0.1
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"l1", "fft", "latent_l1"}
    with pytest.raises(ValueError, match="no loss term"):
        losses.PixelObjective()
