"""Losses as function + ``nn.Module`` pairs, and the weighted sum the training loop optimises.

Pixel losses take ``x`` (prediction) and ``y`` (target) of shape ``N × C × H × W``, an optional
``weight`` broadcastable to them, and ``reduction`` (``mean`` | ``sum`` | ``none``). GAN losses
take discriminator logits. Nothing here downloads anything: the perceptual loss only uses a
feature network whose weights the user gives as a safetensors file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

logger = logging.getLogger(__name__)

Reduction = Literal["mean", "sum", "none"]
GanKind = Literal["vanilla", "lsgan", "wgan-gp", "ragan"]


def _reduce(loss: Tensor, weight: Tensor | None, reduction: Reduction) -> Tensor:
    if weight is not None:
        loss = loss * weight
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(
            f"expected two N×C×H×W tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def l1_loss(
    x: Tensor, y: Tensor, *, weight: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """Mean absolute error. Shape: x, y ``N×C×H×W``; ``none`` keeps that shape."""
    _check_pair(x, y)
    return _reduce((x - y).abs(), weight, reduction)


def mse_loss(
    x: Tensor, y: Tensor, *, weight: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """Mean squared error. Shape: x, y ``N×C×H×W``; ``none`` keeps that shape."""
    _check_pair(x, y)
    return _reduce((x - y).pow(2), weight, reduction)


def charbonnier_loss(
    x: Tensor,
    y: Tensor,
    *,
    eps: float = 1e-3,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """``sqrt((x - y)² + eps²)``: a smooth L1. Shape: x, y ``N×C×H×W``."""
    _check_pair(x, y)
    return _reduce(torch.sqrt((x - y).pow(2) + eps * eps), weight, reduction)


def ssim_loss(x: Tensor, y: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    """``1 - SSIM`` per image (:func:`deblurcli.metrics.ssim`). Shape: ``N×C×H×W`` → ``(N,)``."""
    from deblurcli.metrics import ssim

    _check_pair(x, y)
    return _reduce(1.0 - ssim(x, y), None, reduction)


def fft_loss(
    x: Tensor, y: Tensor, *, weight: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """L1 distance of the 2-D spectra (real and imaginary parts; orthonormal FFT).

    Shape: x, y ``N×C×H×W``; ``none`` gives ``N×C×H×(W//2+1)×2``.
    """
    _check_pair(x, y)
    if x.dtype in (torch.float16, torch.bfloat16):  # the FFT needs at least float32
        x, y = x.float(), y.float()
    fx = torch.view_as_real(torch.fft.rfft2(x, norm="ortho"))
    fy = torch.view_as_real(torch.fft.rfft2(y, norm="ortho"))
    return _reduce((fx - fy).abs(), weight, reduction)


def latent_l1(latents: Sequence[Tensor], *, reduction: Reduction = "mean") -> Tensor:
    """Sparsity hook: the mean absolute value of each latent, summed over latents
    (``none``: one value per latent).

    Models that want it store their latents in ``model.latents`` during ``forward``.
    """
    if not latents:
        raise ValueError("latent_l1 needs at least one latent tensor")
    terms = torch.stack([t.abs().mean() for t in latents])
    return terms if reduction == "none" else terms.sum()


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = reduction

    def forward(self, x: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
        return l1_loss(x, y, weight=weight, reduction=self.reduction)


class MSELoss(L1Loss):
    """Module form of :func:`mse_loss`."""

    def forward(self, x: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
        return mse_loss(x, y, weight=weight, reduction=self.reduction)


class CharbonnierLoss(nn.Module):
    """Module form of :func:`charbonnier_loss`."""

    def __init__(self, eps: float = 1e-3, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.eps, self.reduction = eps, reduction

    def forward(self, x: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
        return charbonnier_loss(x, y, eps=self.eps, weight=weight, reduction=self.reduction)


class SSIMLoss(L1Loss):
    """Module form of :func:`ssim_loss`."""

    def forward(self, x: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
        return ssim_loss(x, y, reduction=self.reduction)


class FFTLoss(L1Loss):
    """Module form of :func:`fft_loss`."""

    def forward(self, x: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
        return fft_loss(x, y, weight=weight, reduction=self.reduction)


class LatentL1(L1Loss):
    """Module form of :func:`latent_l1`."""

    def forward(self, latents: Sequence[Tensor]) -> Tensor:  # type: ignore[override]
        return latent_l1(latents, reduction=self.reduction)


# --------------------------------------------------------------------------- perceptual

FEATURE_CHANNELS = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, 256)
"""A VGG19-style feature stack up to relu3_4 (conv3×3 + ReLU, ``pool`` = 2× max-pool)."""

PerceptualLayer = Literal["taps", "conv3_3", "relu3_3"]

VGG19_LAYERS: dict[str, int] = {"conv3_3": 14, "relu3_3": 15}
"""Single feature layers by name → index in :attr:`FeatureNet.layers` (torchvision's
``vgg19().features`` numbering): DeblurGAN compares conv3_3 (before its ReLU), the GAN paper's
Keras code ``block3_conv3`` (after it)."""


class FeatureNet(nn.Module):
    """VGG19-style convolutional features; weights come only from a user-given file.

    State-dict keys are ``layers.{i}.weight`` / ``layers.{i}.bias`` for the i-th layer of an
    ``nn.Sequential`` alternating conv and ReLU, as in torchvision's ``vgg19().features`` (whose
    indices match when the file was converted from it).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in FEATURE_CHANNELS:
            if spec == "pool":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(spec), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(spec)
        self.layers = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features after each ReLU that precedes a pool, and after the last layer."""
        x = (x - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            following = self.layers[index + 1] if index + 1 < len(self.layers) else None
            if isinstance(layer, nn.ReLU) and (
                following is None or isinstance(following, nn.MaxPool2d)
            ):
                taps.append(x)
        return taps

    def layer(self, x: Tensor, name: str) -> Tensor:
        """The features of one layer of :data:`VGG19_LAYERS` (e.g. ``conv3_3``).

        Shape: :math:`(N, 3, H, W)` in [0, 1] → :math:`(N, 256, H/4, W/4)`.
        """
        return self.layers[: VGG19_LAYERS[name] + 1]((x - self.mean) / self.std)


def load_feature_net(path: str | os.PathLike[str]) -> FeatureNet:
    """A frozen FeatureNet with weights from a safetensors file (missing keys are an error)."""
    from safetensors.torch import load_file

    net = FeatureNet()
    state = load_file(str(path))
    net.layers.load_state_dict(
        {k.removeprefix("layers."): v for k, v in state.items()}, strict=True
    )
    net.requires_grad_(False).eval()
    return net


def perceptual_loss(
    x: Tensor,
    y: Tensor,
    net: nn.Module,
    *,
    reduction: Reduction = "mean",
    layer: PerceptualLayer = "taps",
) -> Tensor:
    """Distance between feature maps of ``net``: with ``layer="taps"`` the L1 distance summed
    over its list of taps; with a :data:`VGG19_LAYERS` name the MSE of that one layer (DeblurGAN's
    content loss on ``conv3_3``)."""
    _check_pair(x, y)
    if layer != "taps":
        assert isinstance(net, FeatureNet)
        fx, fy = net.layer(x, layer), net.layer(y.detach(), layer)
        return _reduce((fx - fy).pow(2), None, reduction)
    pairs = zip(net(x), net(y.detach()), strict=True)
    terms = [_reduce((fx - fy).abs(), None, reduction) for fx, fy in pairs]
    return torch.stack(terms).sum(0)


class PerceptualLoss(nn.Module):
    """Module form of :func:`perceptual_loss`; ``weights_path`` empty → a warning and zero loss."""

    def __init__(
        self, weights_path: str | os.PathLike[str] | None = None, layer: PerceptualLayer = "taps"
    ) -> None:
        super().__init__()
        self.layer: PerceptualLayer = layer
        self.net = load_feature_net(weights_path) if weights_path else None
        if self.net is None:
            logger.warning(
                "perceptual loss skipped: no feature-network weights given "
                "(loss.perceptual_weights "
                "= path to a safetensors file); nothing is downloaded"
            )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if self.net is None:
            return x.new_zeros(())
        return perceptual_loss(x, y, self.net, layer=self.layer)


# --------------------------------------------------------------------------- GAN


def gan_generator_loss(kind: GanKind, fake: Tensor, real: Tensor | None = None) -> Tensor:
    """Adversarial loss of the generator from discriminator logits on fakes (and reals: RaGAN)."""
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return (fake - 1).pow(2).mean()
    if kind == "wgan-gp":
        return -fake.mean()
    if kind == "ragan":
        if real is None:
            raise ValueError("RaGAN needs the logits of real images too")
        real = real.detach()
        return 0.5 * (
            F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))
            + F.binary_cross_entropy_with_logits(real - fake.mean(), torch.zeros_like(real))
        )
    raise ValueError(f"unknown GAN loss {kind!r}")


def gan_discriminator_loss(kind: GanKind, real: Tensor, fake: Tensor) -> Tensor:
    """Loss of the discriminator from its logits on real and (detached) fake images.

    For ``wgan-gp`` this is the critic's Wasserstein term only; add :func:`gradient_penalty`.
    """
    if kind == "vanilla":
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    if kind == "ragan":
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))
        )
    raise ValueError(f"unknown GAN loss {kind!r}")


def gradient_penalty(
    disc: nn.Module, real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP: ``E[(‖∇D(x̂)‖₂ - 1)²]`` at random interpolates of real and fake images."""
    alpha = torch.rand(
        real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator
    )
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


class GANLoss(nn.Module):
    """Module form of the GAN losses: ``forward(real, fake, for_discriminator)``."""

    def __init__(self, kind: GanKind) -> None:
        super().__init__()
        self.kind: GanKind = kind

    def forward(self, real: Tensor | None, fake: Tensor, for_discriminator: bool) -> Tensor:
        if for_discriminator:
            if real is None:
                raise ValueError("the discriminator loss needs logits of real images")
            return gan_discriminator_loss(self.kind, real, fake)
        return gan_generator_loss(self.kind, fake, real)


# --------------------------------------------------------------------------- the weighted sum


class PixelObjective(nn.Module):
    """The configured weighted sum of the non-adversarial terms.

    ``forward`` returns ``(total, parts)`` with ``parts`` the unweighted value of every active
    term (detached, for logging).
    """

    def __init__(
        self,
        *,
        l1: float = 0.0,
        mse: float = 0.0,
        charbonnier: float = 0.0,
        charbonnier_eps: float = 1e-3,
        ssim: float = 0.0,
        fft: float = 0.0,
        latent_l1: float = 0.0,
        latent_guidance: float = 0.0,
        coarse_scales: float = 0.0,
        perceptual: float = 0.0,
        perceptual_weights: str = "",
        perceptual_fallback: str = "none",
        perceptual_layer: PerceptualLayer = "taps",
    ) -> None:
        super().__init__()
        self.terms: dict[str, tuple[float, nn.Module]] = {}
        if perceptual and not perceptual_weights and perceptual_fallback == "l1":
            logger.warning(
                "perceptual loss: no VGG19 weights (loss.perceptual_weights); using L1 with its "
                "weight instead (l1 %g -> %g)", l1, l1 + perceptual
            )
            l1, perceptual = l1 + perceptual, 0.0
        candidates = {
            "l1": (l1, L1Loss()),
            "mse": (mse, MSELoss()),
            "charbonnier": (charbonnier, CharbonnierLoss(charbonnier_eps)),
            "ssim": (ssim, SSIMLoss()),
            "fft": (fft, FFTLoss()),
        }
        for name, (weight, module) in candidates.items():
            if weight:
                self.terms[name] = (weight, module)
        self.latent_weight = latent_l1
        self.model_weights = {"latent_guidance": latent_guidance, "coarse_scales": coarse_scales}
        """Weights of the terms a model computes itself (``model.training_terms(sharp)``)."""
        self.perceptual = (
            PerceptualLoss(perceptual_weights, perceptual_layer) if perceptual else None
        )
        if self.perceptual is not None and self.perceptual.net is not None:
            self.terms["perceptual"] = (perceptual, self.perceptual)
        if not self.terms and not latent_l1 and not any(self.model_weights.values()):
            raise ValueError("no loss term has a non-zero weight")

    def forward(
        self,
        x: Tensor,
        y: Tensor,
        latents: Sequence[Tensor] | None = None,
        model_terms: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the image terms of ``(x, y)``, the sparsity of ``latents`` and the
        unweighted ``model_terms`` a model's ``training_terms`` hook returned (terms this
        objective has no weight for are an error; a zero weight drops the term)."""
        total = x.new_zeros((), dtype=torch.float32)
        parts: dict[str, Tensor] = {}
        for name, (weight, module) in self.terms.items():
            value = module(x.float(), y.float())
            total = total + weight * value
            parts[name] = value.detach()
        if self.latent_weight and latents:
            value = latent_l1(latents)
            total = total + self.latent_weight * value
            parts["latent_l1"] = value.detach()
        for name, value in (model_terms or {}).items():
            if name not in self.model_weights:
                raise ValueError(f"model term {name!r} has no loss weight; known: "
                                 f"{', '.join(self.model_weights)}")
            if self.model_weights[name]:
                total = total + self.model_weights[name] * value
                parts[name] = value.detach()
        return total, parts
