"""Residual-in-Residual (RiR) encoder–decoder of the GAN paper (Lenka et al. 2019, models.md §3.3).

Read from the authors' code [C] (inspired by RCAN):

- **Res unit** (C channels): conv k×k s1 → channel attention → conv k×k s1 → channel attention,
  plus the identity; no other nonlinearity. Channel attention: 1×1 convs, r = 8, ReLU.
- **Encode block** (C → 2C, half resolution): ``p1 + p2`` with p1 = ``units`` res units → conv
  k×k s2 → BN → ReLU and p2 = conv k×k s2 → BN → ReLU.
- **Decode block** (C → C/f, double resolution): the same two paths with transposed convs.
- **Generator** (``levels`` L = 5; ``large``: 6): en1 = conv k×k s2 (3 → w) → BN → ReLU; en2…enL
  encode blocks doubling to ``w·2^(L−1)``; **self-attention** on that bottleneck; deL = decode
  (f = 2); de(L−1)…de2 = decode(``[de(i+1), en(i)]``, f = 4); de1 = deconv(``[de2, en1]`` → 3) →
  BN → tanh; **global residual** ``(tanh + x) / 2`` in [−1, 1] (inputs/outputs here are [0, 1]).
- **Spectral normalisation** on every conv and deconv (``spectral_norm``).
- "Same" padding as TensorFlow: an even kernel at stride 1 pads one pixel more at the bottom and
  right; inputs must be multiples of ``2**levels`` (32, Large 64) — the engine pads and crops.
- Self-attention memory: exact in query chunks up to ``attention_window²`` positions, windowed
  above (:mod:`deblurcli.archs._gan_blocks`); at 1/32 scale that is a 2048² photo before any
  windowing.

Presets (:data:`PRESETS`); parameters are exact (tested on the meta device, no memory used):

=======  ===================================================  ==========  ========
preset   config                                               parameters  GMAC/MP
=======  ===================================================  ==========  ========
paper    w 64, L 5, 4×4 kernels, 2 units (the code)           232.73 M    1299
large    w 64, L 6, 4×4 kernels (the paper's "RiR (Large)")   936.12 M    1676
cpu      w 16, L 5, 3×3 kernels, 1 unit per block [I]         5.12 M      26.4
=======  ===================================================  ==========  ========

(GMAC per megapixel of input at inference, ``torch.utils.flop_counter`` on 256².)

``cpu`` deviates from the code (flagged non-faithful): 3×3 kernels instead of 4×4 (no asymmetric
padding), a quarter of the widths, one res unit per block instead of two. The spec's recommended
default (3×3, width ×0.5) is ``preset("cpu", width=32, units=2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deblurcli.archs._gan_blocks import (
    ChannelAttention,
    SelfAttention2d,
    from_signed,
    global_residual,
    maybe_spectral_norm,
    to_signed,
)
from deblurcli.archs._registry import ArchDefaults, ArchSpec


@dataclass(frozen=True)
class RiRConfig:
    """Hyper-parameters of :class:`RiR` (stored as JSON in checkpoints). Defaults: ``paper``."""

    in_channels: int = 3
    """Image channels in and out."""
    width: int = 64
    """Channels of en1; doubled by every encode block."""
    levels: int = 5
    """en1 plus ``levels − 1`` encode blocks; inputs must be multiples of ``2**levels``."""
    kernel_size: int = 4
    """Conv and deconv kernel side (the code: 4; 3 is the practical choice)."""
    units: int = 2
    """Res units in each encode/decode block (the code: 2)."""
    channel_attention: bool = True
    """Channel attention after every res-unit conv ("Ch. Attn")."""
    self_attention: bool = True
    """Self-attention on the bottleneck ("Sl. Attn")."""
    spectral_norm: bool = True
    """Spectral normalisation on every conv and deconv ("SN")."""
    global_residual: bool = True
    """Output ``(tanh + input) / 2`` in [−1, 1] ("GR")."""
    ca_reduction: int = 8
    """Channel-attention reduction r (the RiR code: 8, 1×1 convs with biases, ReLU)."""
    attention_window: int = 64
    """Maps above ``window²`` positions are attended within windows of ``window²`` (0: never)."""

    def __post_init__(self) -> None:
        if min(self.in_channels, self.width, self.units, self.ca_reduction) < 1:
            raise ValueError("in_channels, width, units and ca_reduction must be >= 1")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if self.kernel_size not in (3, 4):
            raise ValueError(f"kernel_size must be 3 or 4, got {self.kernel_size}")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "large": {"levels": 6},
    "cpu": {"width": 16, "kernel_size": 3, "units": 1},
}
"""``paper`` (the code), ``large`` (one more encode/decode pair) and ``cpu`` (deviations listed in
the module docstring; sized with ``bench train`` for two CPU cores)."""


def preset(name: str, **overrides: Any) -> RiRConfig:
    """The config of preset ``name`` (``paper``, ``large`` or ``cpu``), with ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown rir preset {name!r}; known: {', '.join(PRESETS)}")
    return RiRConfig(**{**PRESETS[name], **overrides})


def _conv(c_in: int, c_out: int, config: RiRConfig, stride: int = 1) -> nn.Module:
    """k×k conv with TensorFlow "same" padding (output = input / stride)."""
    k, sn = config.kernel_size, config.spectral_norm
    if stride == 1 and k % 2 == 0:
        pad = nn.ZeroPad2d((k // 2 - 1, k // 2, k // 2 - 1, k // 2))
        return nn.Sequential(pad, maybe_spectral_norm(nn.Conv2d(c_in, c_out, k), sn))
    return maybe_spectral_norm(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2), sn)


def _deconv(c_in: int, c_out: int, config: RiRConfig) -> nn.Module:
    """k×k transposed conv, stride 2, output exactly twice the input."""
    k = config.kernel_size
    layer = nn.ConvTranspose2d(c_in, c_out, k, 2, padding=1, output_padding=k % 2)
    return maybe_spectral_norm(layer, config.spectral_norm)


def _bn_relu(layer: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.ReLU())


class ResUnit(nn.Module):
    """``x + CA(conv(CA(conv(x))))`` (channel attention as switched)."""

    def __init__(self, channels: int, config: RiRConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            layers.append(_conv(channels, channels, config))
            if config.channel_attention:
                layers.append(ChannelAttention(
                    channels, reduction=config.ca_reduction, activation="relu", bias=True,
                    spectral_norm=config.spectral_norm,
                ))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class RiRBlock(nn.Module):
    """Encode (``up=False``: C → c_out at half size) or decode (``up=True``: double size) block:
    ``p1 + p2`` with p1 = res units → (de)conv s2 → BN → ReLU, p2 = (de)conv s2 → BN → ReLU."""

    def __init__(self, c_in: int, c_out: int, config: RiRConfig, *, up: bool) -> None:
        super().__init__()

        def resample() -> nn.Module:
            return _deconv(c_in, c_out, config) if up else _conv(c_in, c_out, config, stride=2)

        units = [ResUnit(c_in, config) for _ in range(config.units)]
        self.p1 = nn.Sequential(*units, _bn_relu(resample(), c_out))
        self.p2 = _bn_relu(resample(), c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.p1(x) + self.p2(x)


class RiR(nn.Module):
    """The RiR generator (see the module docstring).

    Shape:
        - Input: :math:`(N, C, H, W)`, H and W multiples of ``2**levels``, values in [0, 1].
        - Output: :math:`(N, C, H, W)` in [0, 1].
    """

    def __init__(self, config: RiRConfig) -> None:
        super().__init__()
        self.config = config
        w, levels = config.width, config.levels
        widths = [w * 2**i for i in range(levels)]  # en1 … enL outputs
        self.head = _bn_relu(_conv(config.in_channels, w, config, stride=2), w)
        self.encoders = nn.ModuleList(
            RiRBlock(widths[i - 1], widths[i], config, up=False) for i in range(1, levels)
        )
        self.attention = (
            SelfAttention2d(widths[-1], spectral_norm=config.spectral_norm,
                            window=config.attention_window)
            if config.self_attention else nn.Identity()
        )
        decoders = [RiRBlock(widths[-1], widths[-1] // 2, config, up=True)]
        for i in range(levels - 2, 0, -1):  # de(L−1) … de2: input [de(i+1), en(i)]
            decoders.append(RiRBlock(2 * widths[i], widths[i] // 2, config, up=True))
        self.decoders = nn.ModuleList(decoders)
        self.tail = nn.Sequential(
            _deconv(2 * w, config.in_channels, config), nn.BatchNorm2d(config.in_channels),
            nn.Tanh(),
        )

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        return 2**self.config.levels

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f"rir input {tuple(x.shape[-2:])} is not a multiple of "
                             f"{self.size_multiple} (the engine pads; pad_to_multiple)")
        signed = to_signed(x)
        skips = [self.head(signed)]
        for encoder in self.encoders:
            skips.append(encoder(skips[-1]))
        features = self.attention(skips.pop())
        for decoder in self.decoders:
            features = decoder(features)
            features = torch.cat([features, skips.pop()], dim=1)
        decoded = self.tail(features)
        mode = "average" if self.config.global_residual else "none"
        return from_signed(global_residual(decoded, signed, mode))


SPEC = ArchSpec(
    id="rir",
    module_cls=RiR,
    config_cls=RiRConfig,
    defaults=ArchDefaults(size_multiple=8, tiling="supported", receptive_radius=128),
    tiny_config={"width": 4, "levels": 3, "kernel_size": 3, "units": 1},
    description="Residual-in-residual GAN generator (GAN paper): CA in res units, bottleneck "
    "self-attention exact (query chunks) up to attention_window² positions, windowed above",
)
