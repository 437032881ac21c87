"""Plain residual U-net: the baseline every other deblurring model must beat.

A three-level encoder–decoder of residual conv blocks with additive skips and a global residual
(the network predicts ``sharp - blurry``). The last convolution starts at zero, so an untrained
model is exactly the identity and training starts from "return the input".

With ``multi_scale`` (after MIMO-UNet, Cho et al. 2021) the average-pooled blurry image also
enters every coarser encoder level, and every coarser decoder level predicts the sharp image at
its own scale. Those coarse predictions exist for training only (the loss term
``coarse_scales``): at 1/4 scale a 40-px shake is a 10-px blur, which a small network learns to
remove quickly, and that supervision reaches the coarse levels directly. Inference returns the
full-resolution output alone. The added convolutions start at zero, so a plain checkpoint grown
into a multi-scale one (``run.init_grow``) computes exactly what it did before.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
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
    multi_scale: bool = False
    """Feed the pooled input to every coarser encoder level and predict the sharp image at every
    coarser decoder level (supervised in training by ``loss.coarse_scales``)."""


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
        self.scale_inputs = nn.ModuleList()
        self.scale_outputs = nn.ModuleList()
        if config.multi_scale:  # levels 1 .. L take the pooled image; 1 .. L-1 predict
            self.scale_inputs.extend(
                nn.Conv2d(config.in_channels, w, 3, padding=1) for w in widths[1:]
            )
            self.scale_outputs.extend(
                nn.Conv2d(w, config.in_channels, 3, padding=1) for w in widths[1:-1]
            )
            for conv in [*self.scale_inputs, *self.scale_outputs]:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        self._coarse: list[Tensor] = []

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        return 2**self.config.levels

    def forward(self, x: Tensor) -> Tensor:
        """Deblur ``x`` (N, C, H, W) → (N, C, H, W); in training mode with ``multi_scale`` the
        coarse predictions are kept for :meth:`training_terms`."""
        pooled = [x]  # pooled[l]: the input at scale 1/2**l
        for _ in self.scale_inputs:
            pooled.append(F.avg_pool2d(pooled[-1], 2))
        features = self.head(x)
        skips = []
        for level, (encoder, down) in enumerate(zip(self.encoders, self.downs, strict=True)):
            features = encoder(features)
            skips.append(features)
            features = down(features)
            if self.scale_inputs:
                features = features + self.scale_inputs[level](pooled[level + 1])
        features = self.bottleneck(features)
        coarse = []
        for level in reversed(range(len(self.decoders))):
            features = self.decoders[level](self.ups[level](features) + skips[level])
            if level and self.scale_outputs and self.training:
                coarse.append(pooled[level] + self.scale_outputs[level - 1](features))
        self._coarse = coarse
        return x + self.tail(features)

    def training_terms(self, sharp: Tensor) -> dict[str, Tensor]:
        """Training hook, called by the loop after ``forward(blurry)`` with the sharp target.

        Returns ``coarse_scales``: the mean over the coarser decoder levels of the L1 distance
        between the level's prediction and ``sharp`` average-pooled to that scale (nothing for a
        model without ``multi_scale``).

        Shape:
            - sharp: the shape of the last ``forward`` input.
        """
        coarse, self._coarse = self._coarse, []
        if not coarse:
            return {}
        distances = []
        target = sharp
        for prediction in reversed(coarse):  # finest (1/2) first
            target = F.avg_pool2d(target, 2)
            distances.append((prediction.float() - target.float()).abs().mean())
        return {"coarse_scales": torch.stack(distances).mean()}


SPEC = ArchSpec(
    id="residual_unet",
    module_cls=ResidualUNet,
    config_cls=ResidualUNetConfig,
    defaults=ArchDefaults(size_multiple=8, tiling="supported", receptive_radius=64),
    tiny_config={"width": 4, "levels": 2, "blocks_per_level": 1},
    description="Plain residual U-net baseline (global residual, additive skips).",
    cpu_channels_last=True,
)
