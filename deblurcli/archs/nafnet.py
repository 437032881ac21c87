"""NAFNet: a U-net of nonlinear-activation-free blocks (Chen, Chu, Zhang and Sun, ECCV 2022).

"Simple Baselines for Image Restoration" replaces the activations of a restoration U-net by a
*simple gate* (split the channels in two halves and multiply them) and its attention by a
*simplified channel attention* (global average pool, one 1×1 convolution, a product). Each block
is two residual branches around a per-pixel LayerNorm:

    x → LN → 1×1 (C→2C) → 3×3 depthwise → gate (→C) → channel attention → 1×1 → ·β → + x
    y → LN → 1×1 (C→2C) → gate (→C) → 1×1 → ·γ → + y

with β and γ per-channel scales starting at zero. Most blocks sit at the coarse levels, where
they are cheap: at width ``C·2^l`` and scale ``2^-l`` a block costs the same ≈ 7·C² MACs per
input pixel at every level, while its receptive field grows 2^l times, which is what large camera
shake needs. Down-sampling is a 2×2 stride-2 convolution, up-sampling a 1×1 convolution and a
pixel shuffle, skips are additive, and the network predicts ``sharp − blurry``.

Deviation from the paper's code: the last convolution starts at zero (with β = γ = 0 an
untrained model is exactly the identity, as every network of this tool), and the width and block
counts are chosen for two CPU cores (the ``cpu`` preset of ``configs/nafnet_cpu.toml``), not the
paper's width 32 with 1/1/1/28 encoder blocks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from deblurcli.archs._registry import ArchDefaults, ArchSpec


@dataclass(frozen=True)
class NAFNetConfig:
    """Hyper-parameters of :class:`NAFNet` (stored as JSON in checkpoints)."""

    in_channels: int = 3
    """Image channels in and out (3 for RGB, 1 for grayscale)."""
    width: int = 16
    """Channels at full resolution; doubled at every level down."""
    encoder_blocks: tuple[int, ...] = (1, 1, 1, 8)
    """Blocks at each encoder level, finest first; its length is the number of 2× downsamplings
    (inputs are padded to multiples of ``2**len(encoder_blocks)``)."""
    middle_blocks: int = 4
    """Blocks at the coarsest scale."""
    decoder_blocks: tuple[int, ...] = (1, 1, 1, 1)
    """Blocks at each decoder level, finest first; as long as ``encoder_blocks``."""
    expand: int = 2
    """Channel expansion before each simple gate (the paper: 2)."""
    guide_channels: int = 0
    """Extra per-pixel input channels read beside the image (0: none). A finishing network of
    blind deconvolution reads its restoration's guide here
    (:func:`deblurcli.degrade.restoration_guide`, ``2 × in_channels``): the model input is the
    image and the guide stacked on channels, its output the image's channels."""
    attention_window: int = 0
    """Pixels (at full resolution) over which the channel attention averages: 0 averages the
    whole image, as the paper; N averages an N-px box around each pixel (N / 2^l at level l), so a
    photo much larger than the training crops sees statistics like a crop's (the paper's follow-up,
    TLC, uses 1.5× the training crop) and tiles compute what the whole photo would."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_blocks", tuple(int(b) for b in self.encoder_blocks))
        object.__setattr__(self, "decoder_blocks", tuple(int(b) for b in self.decoder_blocks))
        if len(self.encoder_blocks) != len(self.decoder_blocks):
            raise ValueError(f"encoder_blocks {self.encoder_blocks} and decoder_blocks "
                             f"{self.decoder_blocks} must have the same length")
        if not self.encoder_blocks:
            raise ValueError("encoder_blocks must name at least one level")
        if self.guide_channels < 0:
            raise ValueError(f"guide_channels must be >= 0, got {self.guide_channels}")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) tensor.

    Computed on the (N, H, W, C) view, which is contiguous for ``channels_last`` inputs.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def box_mean(x: Tensor, window: int) -> Tensor:
    """Mean of each (2r+1)² box around every pixel, ``r = window // 2``, over the pixels inside
    the image only; the whole-image mean, shape (N, C, 1, 1), when every box covers the image.

    Shape: (N, C, H, W) → (N, C, H, W) or (N, C, 1, 1).
    """
    height, width = x.shape[-2:]
    radius = window // 2
    if window <= 0 or (radius >= height - 1 and radius >= width - 1):
        return x.mean(dim=(2, 3), keepdim=True)
    out = x.float()
    counts = []
    for dim, size in ((2, height), (3, width)):
        cumulative = torch.cat([torch.zeros_like(out.narrow(dim, 0, 1)), out.cumsum(dim)], dim)
        positions = torch.arange(size, device=x.device)
        upper = (positions + radius + 1).clamp(max=size)
        lower = (positions - radius).clamp(min=0)
        out = cumulative.index_select(dim, upper) - cumulative.index_select(dim, lower)
        counts.append((upper - lower).to(out.dtype))
    area = counts[0][:, None] * counts[1][None, :]
    return (out / area).to(x.dtype)


def simple_gate(x: Tensor) -> Tensor:
    """(N, 2C, H, W) → (N, C, H, W): the product of the two channel halves."""
    first, second = x.chunk(2, dim=1)
    return first * second


class NAFBlock(nn.Module):
    """One NAFNet block: a gated depthwise-conv branch and a gated feed-forward branch.

    Shape: (N, C, H, W) → (N, C, H, W).
    """

    def __init__(self, channels: int, expand: int = 2, attention_window: int = 0) -> None:
        super().__init__()
        self.attention_window = attention_window
        hidden = channels * expand
        self.norm1 = LayerNorm2d(channels)
        self.expand1 = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.attention = nn.Conv2d(hidden // 2, hidden // 2, 1)
        self.project1 = nn.Conv2d(hidden // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.expand2 = nn.Conv2d(channels, hidden, 1)
        self.project2 = nn.Conv2d(hidden // 2, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = simple_gate(self.depthwise(self.expand1(self.norm1(x))))
        h = h * self.attention(box_mean(h, self.attention_window))
        y = x + self.beta * self.project1(h)
        h = simple_gate(self.expand2(self.norm2(y)))
        return y + self.gamma * self.project2(h)


def _stage(channels: int, blocks: int, expand: int, window: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(channels, expand, window) for _ in range(blocks)))


class NAFNet(nn.Module):
    """NAFNet deblurring a single image.

    Shape:
        - Input: :math:`(N, C, H, W)`, H and W multiples of ``2**len(encoder_blocks)``,
          values in [0, 1].
        - Output: :math:`(N, C, H, W)`, not clamped.
    """

    def __init__(self, config: NAFNetConfig) -> None:
        super().__init__()
        self.config = config
        levels = len(config.encoder_blocks)
        widths = [config.width * 2**i for i in range(levels + 1)]
        windows = [max(1, config.attention_window // 2**i) if config.attention_window else 0
                   for i in range(levels + 1)]
        self.head = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        # the guide's own head starts at zero: a guided model grown from an unguided one
        # (run.init_grow) computes exactly what its parent did
        self.guide_head = (nn.Conv2d(config.guide_channels, widths[0], 3, padding=1, bias=False)
                           if config.guide_channels else None)
        if self.guide_head is not None:
            nn.init.zeros_(self.guide_head.weight)
        self.encoders = nn.ModuleList(
            _stage(w, n, config.expand, win)
            for w, n, win in zip(widths, config.encoder_blocks, windows, strict=False)
        )
        self.downs = nn.ModuleList(
            nn.Conv2d(w, w_next, 2, stride=2) for w, w_next in itertools.pairwise(widths)
        )
        self.middle = _stage(widths[-1], config.middle_blocks, config.expand, windows[-1])
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w_next, w * 4, 1, bias=False), nn.PixelShuffle(2))
            for w, w_next in itertools.pairwise(widths)
        )
        self.decoders = nn.ModuleList(
            _stage(w, n, config.expand, win)
            for w, n, win in zip(widths, config.decoder_blocks, windows, strict=False)
        )
        self.tail = nn.Conv2d(widths[0], config.in_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        return 2 ** len(self.config.encoder_blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Deblur ``x`` (N, C + G, H, W) → (N, C, H, W): C image channels, then G =
        ``guide_channels`` guide channels (none by default)."""
        if self.guide_head is not None:
            x, guide = x[:, : self.config.in_channels], x[:, self.config.in_channels :]
            features = self.head(x) + self.guide_head(guide)
        else:
            features = self.head(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            features = encoder(features)
            skips.append(features)
            features = down(features)
        features = self.middle(features)
        for level in reversed(range(len(self.decoders))):
            features = self.decoders[level](self.ups[level](features) + skips[level])
        return x + self.tail(features)


SPEC = ArchSpec(
    id="nafnet",
    module_cls=NAFNet,
    config_cls=NAFNetConfig,
    defaults=ArchDefaults(size_multiple=16, tiling="supported", receptive_radius=96),
    tiny_config={"width": 4, "encoder_blocks": (1, 1), "middle_blocks": 1,
                 "decoder_blocks": (1, 1)},
    description="NAFNet: U-net of activation-free gated blocks (Chen et al. 2022).",
    cpu_channels_last=True,
)
