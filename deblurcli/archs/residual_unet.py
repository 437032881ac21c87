"""Plain residual U-net: the baseline every other deblurring model must beat.

A three-level encoder–decoder of residual conv blocks with additive skips and a global residual
(the network predicts ``sharp - blurry``). The last convolution starts at zero, so an untrained
model is exactly the identity and training starts from "return the input".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deblurcli.archs._registry import ArchDefaults, ArchSpec


@dataclass(frozen=True)
class ResidualUNetConfig:
    """Hyper-parameters of :class:`ResidualUNet` (stored as JSON in checkpoints)."""

    in_channels: int = 3
    """Image channels in and out (3 for RGB, 1 for grayscale)."""
    width: int = 32
    """Channels at full resolution; doubled at every level down."""
    levels: int = 3
    """Number of 2× downsamplings; inputs must be multiples of ``2**levels``."""
    blocks_per_level: int = 2
    """Residual blocks in each encoder and decoder stage."""


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with a learnable, zero-initialised scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.scale * self.conv2(self.act(self.conv1(x)))


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))


class ResidualUNet(nn.Module):
    """Residual U-net deblurring a single image.

    Shape:
        - Input: :math:`(N, C, H, W)`, H and W multiples of ``2**levels``, values in [0, 1].
        - Output: :math:`(N, C, H, W)`, not clamped.
    """

    def __init__(self, config: ResidualUNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.width * 2**i for i in range(config.levels + 1)]
        self.head = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.encoders = nn.ModuleList(_stage(w, config.blocks_per_level) for w in widths[:-1])
        self.downs = nn.ModuleList(
            nn.Conv2d(w, w_next, 2, stride=2) for w, w_next in itertools.pairwise(widths)
        )
        self.bottleneck = _stage(widths[-1], config.blocks_per_level)
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w_next, w * 4, 1), nn.PixelShuffle(2))
            for w, w_next in zip(widths[:-1], widths[1:], strict=False)
        )
        self.decoders = nn.ModuleList(_stage(w, config.blocks_per_level) for w in widths[:-1])
        self.tail = nn.Conv2d(widths[0], config.in_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        return 2**self.config.levels

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=False):
            features = encoder(features)
            skips.append(features)
            features = down(features)
        features = self.bottleneck(features)
        for up, decoder, skip in zip(
            reversed(self.ups), reversed(self.decoders), reversed(skips), strict=False
        ):
            features = decoder(up(features) + skip)
        return x + self.tail(features)


SPEC = ArchSpec(
    id="residual_unet",
    module_cls=ResidualUNet,
    config_cls=ResidualUNetConfig,
    defaults=ArchDefaults(size_multiple=8, tiling="supported", receptive_radius=64),
    tiny_config={"width": 4, "levels": 2, "blocks_per_level": 1},
    description="Plain residual U-net baseline (global residual, additive skips).",
)
