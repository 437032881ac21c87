"""A small PatchGAN discriminator for the optional adversarial term (training only)."""

from __future__ import annotations

from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """Strided conv stack scoring overlapping patches: ``N×C×H×W`` → ``N×1×H/8×W/8`` logits.

    Spectral normalisation keeps the critic Lipschitz-ish, which suits every GAN loss offered
    (``wgan-gp`` adds its gradient penalty on top).
    """

    def __init__(self, in_channels: int = 3, width: int = 32, downsamplings: int = 3) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        channels = width
        for _ in range(downsamplings):
            nxt = min(channels * 2, width * 8)
            layers += [sn(nn.Conv2d(channels, nxt, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            channels = nxt
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
