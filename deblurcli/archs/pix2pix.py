"""Pix2Pix U-net generator with the GAN paper's switches (Lenka et al. 2019, models.md §3.2).

The generator of the authors' code [C], with every switch of the paper's Pix2Pix table:

- **Encoder** e1…eL (L = ``levels``, 8 in the code): e1 = conv 4×4 s2 (3 → ngf), no norm; then
  LeakyReLU 0.2 → conv 4×4 s2 → BatchNorm, widths ``ngf · min(2^(i−1), max_mult)``
  (64, 128, 256, 512, 512, …). The innermost block has **no BatchNorm** (fix [I]: with batch 1 the
  code's BN zeroes the 1×1 bottleneck; the original pix2pix omits it too).
- **Bottleneck channel attention** on eL's output (``bottleneck_attention``; the code applies it
  even in the plain model).
- **Decoder** dL…d2: ReLU → deconv 4×4 s2 → BatchNorm (dropout 0.5 in the first three, off in
  eval mode), each later one fed ``[d(i+1), e(i)]``; d1: ReLU → deconv → 3 channels → tanh.
- **Attention sites** ("after every three encoder/decoder blocks" [S]): self-attention and/or
  channel attention before the conv of encoder blocks 4, 7, … and before the deconv of decoder
  layers 2, 5, 8, … (for L = 8 and 256²: inputs 32²×256, 4²×512 and 1²×512, 8²×1024, 64²×256).
- **Spectral normalisation** (``spectral_norm``) on every conv and deconv, attention included.
- **Global residual** (``global_residual``): ``(tanh(d1) + x) / 2`` in the code's [−1, 1] scale;
  inputs and outputs here are [0, 1] (mapped on the way in and out).
- **Self-attention memory**: exact global attention in query chunks up to ``attention_window²``
  positions per map, exact within windows above that (:mod:`deblurcli.archs._gan_blocks`). Each
  preset's window is the largest map of its training crops (``paper`` 64 for 256², ``cpu`` 32 for
  128²), so training attends globally and inference never over more positions than trained.

Presets (:data:`PRESETS`; parameters exact; GMAC per megapixel of input at inference, counted
by ``torch.utils.flop_counter`` on 256² — the attention share grows with the map up to
``attention_window²`` positions and is flat per pixel above it; ``cpu`` uses a 32 window, the
largest map its 128² training crops produce):

=========================  ===============================  ==========  ========
preset                     config                           parameters  GMAC/MP
=========================  ===============================  ==========  ========
paper (plain row)          ngf 64, L 8, 4×4, code widths    54.45 M     92.3
paper + SA + CA (all)      the same, attention at 5 sites   58.50 M     184.7
cpu                        ngf 32, L 7, + SA + GR [I]       11.29 M     38.6
=========================  ===============================  ==========  ========
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
class Pix2PixConfig:
    """Hyper-parameters of :class:`Pix2Pix` (stored as JSON in checkpoints). Defaults: ``paper``
    widths with every switch off (the table's plain "Pix2Pix" row)."""

    in_channels: int = 3
    """Image channels in and out."""
    ngf: int = 64
    """Channels of e1; doubled per level up to ``ngf * max_mult``."""
    levels: int = 8
    """Stride-2 encoder blocks L; inputs must be multiples of ``2**levels`` (the code: 8)."""
    max_mult: int = 8
    """Width cap as a multiple of ``ngf`` (the code: 512 = 8 × 64)."""
    dropout: float = 0.5
    """Dropout after the first ``dropout_layers`` decoder layers (training only)."""
    dropout_layers: int = 3
    self_attention: bool = False
    """SAGAN self-attention at the attention sites (the paper's "Sl. Attn")."""
    channel_attention: bool = False
    """Channel attention at the attention sites, after the self-attention ("Ch. Attn")."""
    bottleneck_attention: bool = True
    """Channel attention on the innermost features (the code applies it in every model)."""
    spectral_norm: bool = False
    """Spectral normalisation on every conv and deconv of the generator ("SN")."""
    global_residual: bool = False
    """Output ``(tanh + input) / 2`` in [−1, 1] ("GR")."""
    attention_every: int = 3
    """Attention before encoder blocks i ≡ 1 and decoder layers i ≡ 2 (mod this), i ≥ 2."""
    attention_window: int = 64
    """Maps above ``window²`` positions are attended within windows of ``window²`` (0: never)."""
    ca_reduction: int = 16
    """Channel-attention reduction r (the Pix2Pix code: 16, bias-free, LeakyReLU 0.2)."""

    def __post_init__(self) -> None:
        if min(self.in_channels, self.ngf, self.levels, self.max_mult, self.attention_every) < 1:
            raise ValueError("in_channels, ngf, levels, max_mult and attention_every must be >= 1")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def width(self, level: int) -> int:
        """Output channels of encoder block ``level`` (1-based)."""
        return self.ngf * min(2 ** (level - 1), self.max_mult)

    def encoder_sites(self) -> list[int]:
        """Encoder blocks with attention before their conv (4 and 7 for the code)."""
        return [i for i in range(2, self.levels + 1) if (i - 1) % self.attention_every == 0]

    def decoder_sites(self) -> list[int]:
        """Decoder layers with attention before their deconv (8, 5 and 2 for the code)."""
        return [i for i in range(self.levels, 1, -1) if (i - 2) % self.attention_every == 0]


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"ngf": 32, "levels": 7, "self_attention": True, "global_residual": True,
            "attention_window": 32},
}
"""``paper``: the code's widths (switches off: set them per table row); ``cpu``: sized with
``bench train`` for two CPU cores, with the paper's best switches (self-attention + GR)."""

TABLE_ROWS: dict[str, dict[str, Any]] = {
    "pix2pix": {},
    "sa": {"self_attention": True},
    "sa-gr": {"self_attention": True, "global_residual": True},
    "sa-sn": {"self_attention": True, "spectral_norm": True},
    "sa-ca-gr-sn-percep": {
        "self_attention": True, "channel_attention": True, "global_residual": True,
        "spectral_norm": True,
    },
}
"""Generator switches of each row of the paper's Pix2Pix table (the last row also needs the
perceptual loss; ``sn`` rows also spectrally normalise the discriminator: ``docs/gan.md``)."""


def preset(name: str, **overrides: Any) -> Pix2PixConfig:
    """The config of preset ``name`` (``paper`` or ``cpu``), with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown pix2pix preset {name!r}; known: {', '.join(PRESETS)}")
    return Pix2PixConfig(**{**PRESETS[name], **overrides})


def _attention(channels: int, config: Pix2PixConfig) -> nn.Module:
    """The site module: SA then CA, as switched (identity when both are off)."""
    sn = config.spectral_norm
    layers: list[nn.Module] = []
    if config.self_attention:
        layers.append(SelfAttention2d(channels, spectral_norm=sn, window=config.attention_window))
    if config.channel_attention:
        layers.append(ChannelAttention(channels, reduction=config.ca_reduction, spectral_norm=sn))
    return nn.Sequential(*layers) if layers else nn.Identity()


class Pix2Pix(nn.Module):
    """The Pix2Pix U-net generator (see the module docstring).

    Shape:
        - Input: :math:`(N, C, H, W)`, H and W multiples of ``2**levels``, values in [0, 1].
        - Output: :math:`(N, C, H, W)` in [0, 1].
    """

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__()
        self.config = config
        c, sn, levels = config, config.spectral_norm, config.levels
        enc_sites, dec_sites = set(c.encoder_sites()), set(c.decoder_sites())
        self.encoders = nn.ModuleList()
        self.encoder_attention = nn.ModuleList()
        for i in range(1, levels + 1):
            c_in = c.in_channels if i == 1 else c.width(i - 1)
            conv = maybe_spectral_norm(nn.Conv2d(c_in, c.width(i), 4, 2, 1), sn)
            if i == 1:
                block: nn.Module = conv
            else:
                norm = nn.BatchNorm2d(c.width(i)) if i < levels else nn.Identity()
                block = nn.Sequential(nn.LeakyReLU(0.2), conv, norm)
            self.encoders.append(block)
            self.encoder_attention.append(
                _attention(c_in, c) if i in enc_sites else nn.Identity()
            )
        self.bottleneck = (
            ChannelAttention(c.width(levels), reduction=c.ca_reduction, spectral_norm=sn)
            if c.bottleneck_attention else nn.Identity()
        )
        self.decoders = nn.ModuleList()  # decoders[0] is dL, …, decoders[-1] is d1
        self.decoder_attention = nn.ModuleList()
        for i in range(levels, 0, -1):
            c_in = c.width(levels) if i == levels else 2 * c.width(i)
            c_out = c.in_channels if i == 1 else c.width(i - 1)
            deconv = maybe_spectral_norm(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), sn)
            layers: list[nn.Module] = [nn.ReLU(), deconv]
            if i == 1:
                layers.append(nn.Tanh())
            else:
                layers.append(nn.BatchNorm2d(c_out))
                if levels - i < c.dropout_layers and c.dropout > 0:
                    layers.append(nn.Dropout(c.dropout))
            self.decoders.append(nn.Sequential(*layers))
            self.decoder_attention.append(
                _attention(c_in, c) if i in dec_sites else nn.Identity()
            )

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        return 2**self.config.levels

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f"pix2pix input {tuple(x.shape[-2:])} is not a multiple of "
                             f"{self.size_multiple} (the engine pads; pad_to_multiple)")
        signed = to_signed(x)
        features, skips = signed, []
        for attention, encoder in zip(self.encoder_attention, self.encoders, strict=True):
            features = encoder(attention(features))
            skips.append(features)
        features = self.bottleneck(skips.pop())
        for index, (attention, decoder) in enumerate(
            zip(self.decoder_attention, self.decoders, strict=True)
        ):
            if index:
                features = torch.cat([features, skips.pop()], dim=1)
            features = decoder(attention(features))
        mode = "average" if self.config.global_residual else "none"
        return from_signed(global_residual(features, signed, mode))


SPEC = ArchSpec(
    id="pix2pix",
    module_cls=Pix2Pix,
    config_cls=Pix2PixConfig,
    defaults=ArchDefaults(size_multiple=8, tiling="supported", receptive_radius=128),
    tiny_config={"ngf": 4, "levels": 3, "max_mult": 2, "self_attention": True,
                 "channel_attention": True, "global_residual": True},
    description="Pix2Pix U-net (GAN paper): switches SA, CA, SN, GR; self-attention exact "
    "(query chunks) up to attention_window² positions per map, windowed above",
)
