"""Discriminators for the optional adversarial term (training only).

:class:`PatchDiscriminator` (small, unconditional) and :class:`ConditionalPatchGAN` (the 70×70
PatchGAN of the GAN paper, models.md §3.2), chosen by ``loss.discriminator``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deblurcli.archs._gan_blocks import ChannelAttention, SelfAttention2d, maybe_spectral_norm


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


class ConditionalPatchGAN(nn.Module):
    """The 70×70 PatchGAN of pix2pix, conditional on the blurry image (models.md §3.2–3.3).

    ``[condition, image]`` (6 channels for RGB) → conv 4×4 s2 → ``width``, LeakyReLU 0.2 → then
    ``strided - 1`` more stride-2 convs and one stride-1 conv, doubling up to ``8 × width``, each
    with a norm and LeakyReLU 0.2 → a head giving one **logit** per patch (the sigmoid lives in
    the BCE-with-logits loss, numerically safer than the code's ``sigmoid`` + ``log(x + 1e-12)``).
    With the defaults a 256² input gives 30×30 logits, each seeing 70×70 pixels; 2.77 M
    parameters (3.43 M with ``attention``).

    Args:
        in_channels: Channels of the judged image.
        cond_channels: Channels of the condition (the blurry input); 0: unconditional.
        width: Channels of the first conv.
        strided: Stride-2 convs (3: the 70×70 receptive field).
        norm: ``batch`` (the code), ``instance`` or ``none``.
        norm_first: Also normalise the first conv (the RiR code; pix2pix does not).
        spectral_norm: Spectrally normalise every conv (the paper's SN switch).
        attention: Self-attention then channel attention after the second conv (the code also
            builds one after the 512 layer whose output it never uses; not copied).
        head: ``conv4`` (4×4 s1, padding 1: pix2pix) or ``conv3-valid`` (3×3, no padding: RiR).

    Shape:
        - image: :math:`(N, C, H, W)`; condition: :math:`(N, C_c, H, W)` → :math:`(N, 1, h, w)`.
    """

    def __init__(
        self,
        in_channels: int = 3,
        cond_channels: int = 3,
        *,
        width: int = 64,
        strided: int = 3,
        norm: str = "batch",
        norm_first: bool = False,
        spectral_norm: bool = False,
        attention: bool = False,
        head: str = "conv4",
    ) -> None:
        super().__init__()
        if norm not in ("batch", "instance", "none") or head not in ("conv4", "conv3-valid"):
            raise ValueError(
                f"norm must be batch, instance or none (got {norm!r}); "
                f"head must be conv4 or conv3-valid (got {head!r})"
            )
        if strided < 1 or width < 1:
            raise ValueError("strided and width must be >= 1")
        self.cond_channels = cond_channels

        def block(c_in: int, c_out: int, stride: int, normed: bool) -> list[nn.Module]:
            conv = nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1, bias=not normed)
            layers: list[nn.Module] = [maybe_spectral_norm(conv, spectral_norm)]
            if normed and norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            elif normed and norm == "instance":
                layers.append(nn.InstanceNorm2d(c_out))
            return [*layers, nn.LeakyReLU(0.2)]

        channels = [width * min(2**i, 8) for i in range(strided + 1)]
        layers = block(in_channels + cond_channels, width, 2, norm_first and norm != "none")
        for index in range(1, strided + 1):
            stride = 2 if index < strided else 1
            layers += block(channels[index - 1], channels[index], stride, norm != "none")
            if attention and index == 1:
                layers += [
                    SelfAttention2d(channels[1], spectral_norm=spectral_norm),
                    ChannelAttention(channels[1], spectral_norm=spectral_norm),
                ]
        last = (nn.Conv2d(channels[-1], 1, 4, padding=1) if head == "conv4"
                else nn.Conv2d(channels[-1], 1, 3))
        layers.append(maybe_spectral_norm(last, spectral_norm))
        self.net = nn.Sequential(*layers)

    @property
    def conditional(self) -> bool:
        """Whether :meth:`forward` needs the blurry image as ``condition``."""
        return self.cond_channels > 0

    def forward(self, image: Tensor, condition: Tensor | None = None) -> Tensor:
        if self.conditional:
            if condition is None:
                raise ValueError("this discriminator is conditional: pass the blurry image too")
            image = torch.cat([condition, image], dim=1)
        return self.net(image)


DISCRIMINATORS = ("patch", "patchgan70")
"""``loss.discriminator`` choices: the small unconditional :class:`PatchDiscriminator`, or the
70×70 :class:`ConditionalPatchGAN` (its keyword arguments in ``loss.disc_config``)."""


def build_discriminator(
    kind: str, in_channels: int, width: int, config: dict[str, Any] | None = None
) -> nn.Module:
    """The discriminator ``loss.discriminator`` names.

    Args:
        kind: ``patch`` or ``patchgan70``.
        in_channels: Image channels.
        width: ``loss.disc_width`` (first-layer channels).
        config: ``loss.disc_config``: extra keyword arguments of :class:`ConditionalPatchGAN`
            (``cond_channels`` defaults to ``in_channels``); must be empty for ``patch``.

    Raises:
        ValueError: unknown kind or keyword.
    """
    config = dict(config or {})
    if kind == "patch":
        if config:
            raise ValueError("loss.disc_config applies to discriminator = 'patchgan70' only")
        return PatchDiscriminator(in_channels, width)
    if kind == "patchgan70":
        config.setdefault("cond_channels", in_channels)
        try:
            return ConditionalPatchGAN(in_channels, width=width, **config)
        except TypeError as exc:
            raise ValueError(f"loss.disc_config: {exc}") from None
    raise ValueError(f"unknown discriminator {kind!r}; known: {', '.join(DISCRIMINATORS)}")


def judge(disc: nn.Module, image: Tensor, condition: Tensor) -> Tensor:
    """``disc``'s logits for ``image``, conditioned on ``condition`` when ``disc`` is conditional.

    Shape: image and condition :math:`(N, C, H, W)` → the discriminator's logits.
    """
    if getattr(disc, "conditional", False):
        return disc(image, condition)
    return disc(image)
