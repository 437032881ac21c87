"""Per-image generator networks of Deep-Image-Prior blind deconvolution (SelfDeblur, VDIP).

Two small networks are fitted from scratch to every image (see ``docs``/``specs/vdip.md`` §5):

* :class:`SkipNet` — the DIP "skip" encoder-decoder that maps a fixed noise tensor to an image
  (SelfDeblur: one grey channel; VDIP: per-pixel mean and standard deviation, ``2·C`` channels).
* :class:`KernelFCN` — a two-layer fully connected network whose softmax output is a blur kernel
  (non-negative, unit sum).

They are *not* checkpointed models and are deliberately not in :data:`deblurcli.archs.REGISTRY`;
:mod:`deblurcli.optim` builds them per image from the frozen config dataclasses below.

BatchNorm is meant to stay in training mode (batch of one, statistics over the spatial
dimensions), also when the result is rendered: never call ``.eval()`` on a :class:`SkipNet`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "KernelFCN",
    "KernelFCNConfig",
    "NonLocalBlock",
    "SkipNet",
    "SkipNetConfig",
    "min_input_size",
]


@dataclass(frozen=True)
class SkipNetConfig:
    """Hyper-parameters of :class:`SkipNet` (defaults: the published 5×128 network)."""

    in_channels: int = 3
    """Channels of the noise input (VDIP 3, SelfDeblur 8)."""
    out_channels: int = 6
    """Output channels (VDIP ``2·C``: mean then std; SelfDeblur ``C``)."""
    down_channels: tuple[int, ...] = (128, 128, 128, 128, 128)
    """Width of the encoder branch at each scale; its length is the number of scales."""
    up_channels: tuple[int, ...] = (128, 128, 128, 128, 128)
    """Width of the decoder after each merge."""
    skip_channels: tuple[int, ...] = (16, 16, 16, 16, 16)
    """Width of the 1×1 skip branch at each scale (0 disables a skip)."""
    nonlocal_from: int | None = 2
    """Scales ``i >= nonlocal_from`` get a non-local block after their stride-2 conv; None: none."""
    upsample: str = "bilinear"
    """``bilinear`` (published) or ``nearest``."""
    extra_1x1: bool = True
    """The extra 1×1 conv block at the end of every decoder stage (published: on)."""
    negative_slope: float = 0.2
    """LeakyReLU slope."""

    def __post_init__(self) -> None:
        n = len(self.down_channels)
        if n < 1 or len(self.up_channels) != n or len(self.skip_channels) != n:
            raise ValueError("down/up/skip channel tuples must be non-empty and of equal length")
        if self.upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample must be bilinear or nearest, got {self.upsample!r}")


@dataclass(frozen=True)
class KernelFCNConfig:
    """Hyper-parameters of :class:`KernelFCN` (defaults: the published 200→1000→h·w net)."""

    kernel_size: tuple[int, int] = (21, 21)
    """``(h, w)`` of the generated kernel."""
    in_features: int = 200
    """Length of the fixed noise input vector."""
    hidden: int = 1000
    """Hidden width (ReLU6)."""


def min_input_size(config: SkipNetConfig) -> int:
    """Smallest spatial side :class:`SkipNet` accepts: the deepest map must be at least 2×2.

    Every scale halves the size (rounding up), so with ``n`` scales the side must exceed
    ``2**n``; the published 5-scale net needs 33.
    """
    return 2 ** len(config.down_channels) + 1


def _conv(c_in: int, c_out: int, size: int, stride: int = 1) -> nn.Sequential:
    """Reflection-padded convolution (padding ``(size-1)//2``)."""
    pad = (size - 1) // 2
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad)] if pad else []
    layers.append(nn.Conv2d(c_in, c_out, size, stride=stride))
    return nn.Sequential(*layers)


def _conv_bn_act(c_in: int, c_out: int, size: int, slope: float, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        _conv(c_in, c_out, size, stride), nn.BatchNorm2d(c_out), nn.LeakyReLU(slope)
    )


class NonLocalBlock(nn.Module):
    """Dot-product non-local block with 2×2 max-pooled keys/values (Wang et al. 2018).

    ``z = W(f·g) + x`` with ``f = θ(x)ᵀ φ(x) / N`` (no softmax) over the ``N`` pooled positions.
    ``W`` ends in a BatchNorm initialised to zero, so the block starts as the identity.

    Shape:
        - input: :math:`(B, C, H, W)` with ``H, W >= 2``
        - output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int, inner: int | None = None) -> None:
        super().__init__()
        inner = inner or max(1, channels // 2)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        self.out_bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.out_bn.weight)
        nn.init.zeros_(self.out_bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # B×c×HW
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # B×c×N
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # B×c×N
        affinity = theta.transpose(1, 2) @ phi / phi.shape[-1]  # B×HW×N
        y = (affinity @ g.transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
        return self.out_bn(self.out(y)) + x


class _Scale(nn.Module):
    """One encoder/decoder level: skip branch, strided deep branch (+ deeper levels), merge."""

    def __init__(self, config: SkipNetConfig, index: int, c_in: int) -> None:
        super().__init__()
        slope = config.negative_slope
        c_down = config.down_channels[index]
        c_skip = config.skip_channels[index]
        c_up = config.up_channels[index]
        self.skip = _conv_bn_act(c_in, c_skip, 1, slope) if c_skip else None
        deep: list[nn.Module] = [_conv_bn_act(c_in, c_down, 3, slope, stride=2)]
        if config.nonlocal_from is not None and index >= config.nonlocal_from:
            deep.append(NonLocalBlock(c_down))
        deep.append(_conv_bn_act(c_down, c_down, 3, slope))
        self.deep = nn.Sequential(*deep)
        last = index == len(config.down_channels) - 1
        self.deeper = None if last else _Scale(config, index + 1, c_down)
        c_deep = c_down if last else config.up_channels[index + 1]
        self.mode = config.upsample
        merge: list[nn.Module] = [
            nn.BatchNorm2d(c_skip + c_deep),
            _conv_bn_act(c_skip + c_deep, c_up, 3, slope),
        ]
        if config.extra_1x1:
            merge.append(_conv_bn_act(c_up, c_up, 1, slope))
        self.merge = nn.Sequential(*merge)

    def forward(self, x: Tensor) -> Tensor:
        d = self.deep(x)
        if self.deeper is not None:
            d = self.deeper(d)
        if self.mode == "bilinear":
            d = F.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            d = F.interpolate(d, scale_factor=2.0, mode="nearest")
        if self.skip is None:
            return self.merge(_centre_crop(d, x.shape[-2], x.shape[-1]))
        s = self.skip(x)
        h, w = min(s.shape[-2], d.shape[-2]), min(s.shape[-1], d.shape[-1])
        return self.merge(torch.cat([_centre_crop(s, h, w), _centre_crop(d, h, w)], dim=1))


def _centre_crop(x: Tensor, h: int, w: int) -> Tensor:
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


class SkipNet(nn.Module):
    """DIP "skip" encoder-decoder with sigmoid output (Ulyanov et al.; SelfDeblur; VDIP).

    Args:
        config: Network hyper-parameters; the module keeps it as ``.config``.

    Shape:
        - input: :math:`(1, C_{in}, H, W)` noise, ``H, W >= min_input_size(config)``
        - output: :math:`(1, C_{out}, H, W)` in (0, 1)
    """

    def __init__(self, config: SkipNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SkipNetConfig()
        self.body = _Scale(self.config, 0, self.config.in_channels)
        self.head = nn.Conv2d(self.config.up_channels[0], self.config.out_channels, 1)

    def forward(self, z: Tensor) -> Tensor:
        side = min(z.shape[-2:])
        if side < min_input_size(self.config):
            raise ValueError(
                f"SkipNet with {len(self.config.down_channels)} scales needs inputs of at least "
                f"{min_input_size(self.config)} px per side, got {tuple(z.shape[-2:])}"
            )
        return torch.sigmoid(self.head(self.body(z)))


class KernelFCN(nn.Module):
    """Kernel generator: ``softmax(W₂ · relu6(W₁ z + b₁) + b₂)`` reshaped to ``h×w``.

    Args:
        config: Network hyper-parameters; the module keeps it as ``.config``.

    Shape:
        - input: :math:`(F_{in},)` noise vector
        - output: :math:`(h, w)`, non-negative, summing to 1
    """

    def __init__(self, config: KernelFCNConfig | None = None) -> None:
        super().__init__()
        self.config = config or KernelFCNConfig()
        h, w = self.config.kernel_size
        self.hidden = nn.Linear(self.config.in_features, self.config.hidden)
        self.out = nn.Linear(self.config.hidden, h * w)

    def forward(self, z: Tensor) -> Tensor:
        logits = self.out(F.relu6(self.hidden(z)))
        return torch.softmax(logits, dim=-1).reshape(self.config.kernel_size)
