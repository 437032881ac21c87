"""UML-IN: a U-shaped multi-level invertible network (Wang, Wen, Liu, Electronics 2022).

Reconstructed from what the paper states (codec-unified wavelet invertible networks, two branches,
sharp latents guiding blur latents level by level, L1-sparse latents); every detail below is an
inferred choice of ``../shared/specs/models.md`` §1.3 ([I]), since the paper's body is lost.

- **Haar step** (orthonormal, 1/2 scaling, so volume-preserving): ``C×H×W → 4C×H/2×W/2``,
  channels ordered ``[LL; LH; HL; HH]`` so the first C are the low-pass band.
- **Coupling block** on ``[x_lo (C), x_hi (3C)]``: additive (default)
  ``y_lo = x_lo + F(x_hi)``, ``y_hi = x_hi + G(y_lo)``; or affine (IRN style)
  ``y_hi = x_hi ⊙ exp(κ(2σ(H(y_lo)) − 1)) + G(y_lo)``. F, G, H are IRN dense blocks
  (``dense_layers`` 3×3 convs of ``growth`` channels with LeakyReLU 0.2, Xavier ×0.1, then a
  **zero-initialised** 3×3 output conv, so every block starts as the identity).
- **Branch** (L ``levels`` × K ``blocks``): at level l, Haar, then K blocks; below the last
  level the 3C detail channels leave as latent ``z_l`` and the C low channels go down; the last
  level emits all 4C. The latents hold ``C·H·W`` values, as many as the image.
- **Model**: a blur branch B and a sharp branch S of the same structure; the output is
  ``S⁻¹(B(x))`` — B's forward pass is the U's analysis arm, S's inverse its synthesis arm, and
  the latents ``z_l`` are the skips at matching resolutions. At initialisation both branches are
  the same pure Haar pyramid, so an untrained model returns its input (to float32 rounding).

Training (:mod:`deblurcli.train.losses`): in training mode ``forward`` keeps B's latents;
``model.latents`` lists their detail parts (the sparsity term ``loss.latent_l1``), and the hook
:meth:`UMLIN.training_terms` runs S on the sharp target, adds S's detail latents to
``model.latents`` and returns the level-wise guidance ``Σ_l mean (z^B_l − z^S_l)²``
(``loss.latent_guidance``). See ``docs/uml_in.md``.

Presets (:data:`PRESETS`; counted once with ``torch.utils.flop_counter`` on 128² crops; GMAC/MP
is per megapixel of input at inference, S⁻¹(B(x)); "step" is one forward + backward of the full
objective on a batch of 8×128², i.e. B(blurry), S⁻¹ and S(sharp); "model step" counts only
``model(x)`` forward + backward, as ``bench train`` does):

=======  ========================================  ==========  ========  ===========  ==========
preset   config                                    parameters  GMAC/MP   model step   step
=======  ========================================  ==========  ========  ===========  ==========
paper    L=3, K=4, growth 32, 4 layers, additive   3.34 M      364       286 GFLOP    429 GFLOP
cpu      L=3, K=2, growth 16, 4 layers, additive   0.51 M      55.1      43.2 GFLOP   64.8 GFLOP
=======  ========================================  ==========  ========  ===========  ==========

For comparison, ``configs/resunet_shake.toml``'s residual U-net: 4.28 M, 87.9 GMAC/MP, 69.0 GFLOP
per step. The spec's "≈5 M" for the defaults counts three sub-networks per block, i.e. the
affine variant: ``paper`` with ``coupling = "affine"`` has 5.00 M parameters (``cpu``: 0.76 M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from deblurcli.archs._registry import ArchDefaults, ArchSpec


@dataclass(frozen=True)
class UMLINConfig:
    """Hyper-parameters of :class:`UMLIN` (stored as JSON in checkpoints). Defaults: ``paper``."""

    in_channels: int = 3
    """Image channels C; each Haar step splits C low-pass | 3C detail channels."""
    levels: int = 3
    """Wavelet levels L; inputs must be multiples of ``2**levels``."""
    blocks: int = 4
    """Coupling blocks K per level."""
    growth: int = 32
    """Channels added by each conv of a dense sub-network."""
    dense_layers: int = 4
    """Growth convs per dense sub-network (before its zero-initialised output conv)."""
    coupling: Literal["additive", "affine"] = "additive"
    """``additive`` (volume-preserving, default) or ``affine`` (IRN style, adds a sub-net H)."""
    affine_clamp: float = 1.0
    """κ of the affine scale ``exp(κ(2σ(H) − 1))``."""

    def __post_init__(self) -> None:
        if self.coupling not in ("additive", "affine"):
            raise ValueError(f"coupling must be 'additive' or 'affine', got {self.coupling!r}")
        if min(self.in_channels, self.levels, self.blocks, self.growth, self.dense_layers) < 1:
            raise ValueError("in_channels, levels, blocks, growth and dense_layers must be >= 1")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"levels": 3, "blocks": 2, "growth": 16, "dense_layers": 4},
}
"""Named configs: ``paper`` (models.md §1.3 defaults) and ``cpu`` (sized for 2-core training)."""


def preset(name: str, **overrides: Any) -> UMLINConfig:
    """The config of preset ``name`` (``paper`` or ``cpu``), with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown UML-IN preset {name!r}; known: {', '.join(PRESETS)}")
    return UMLINConfig(**{**PRESETS[name], **overrides})


def haar(x: Tensor) -> Tensor:
    """Orthonormal 2-D Haar step; ``haar_inverse(haar(x)) == x`` and ``‖haar(x)‖ == ‖x‖``.

    Shape:
        - x: :math:`(N, C, H, W)`, H and W even → :math:`(N, 4C, H/2, W/2)`, channels
          ``[LL; LH; HL; HH]`` (each C wide).
    """
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    s, t = a + d, b + c  # shared sums keep the four bands to two additions each
    u, v = a - d, b - c
    return 0.5 * torch.cat([s + t, u - v, u + v, s - t], dim=1)


def haar_inverse(y: Tensor) -> Tensor:
    """Inverse of :func:`haar` (its transpose). Shape: :math:`(N, 4C, h, w) → (N, C, 2h, 2w)`."""
    ll, lh, hl, hh = y.chunk(4, dim=1)
    p, q = ll + hh, lh + hl
    r, s = ll - hh, hl - lh
    a, d = 0.5 * (p + q), 0.5 * (p - q)
    b, c = 0.5 * (r + s), 0.5 * (r - s)
    n, channels, h, w = ll.shape
    grid = torch.stack([a, b, c, d], dim=2).reshape(n, channels * 4, h, w)
    return F.pixel_shuffle(grid, 2)


class DenseNet(nn.Module):
    """IRN's dense sub-network: growth convs on the running concatenation, zero-init output."""

    def __init__(self, c_in: int, c_out: int, growth: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in + i * growth, growth, 3, padding=1) for i in range(layers)
        )
        self.out = nn.Conv2d(c_in + layers * growth, c_out, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        for conv in self.convs:
            nn.init.xavier_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in self.convs:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return self.out(torch.cat(features, dim=1))


class Coupling(nn.Module):
    """One invertible block on ``[x_lo (C), x_hi (3C)]`` (additive or affine, see the module)."""

    def __init__(self, config: UMLINConfig) -> None:
        super().__init__()
        lo, hi = config.in_channels, 3 * config.in_channels
        self.lo = lo
        args = (config.growth, config.dense_layers)
        self.f = DenseNet(hi, lo, *args)
        self.g = DenseNet(lo, hi, *args)
        self.h = DenseNet(lo, hi, *args) if config.coupling == "affine" else None
        self.clamp = config.affine_clamp

    def _scale(self, y_lo: Tensor) -> Tensor:
        assert self.h is not None
        return self.clamp * (2 * torch.sigmoid(self.h(y_lo)) - 1)

    def forward(self, x: Tensor) -> Tensor:
        x_lo, x_hi = x[:, : self.lo], x[:, self.lo :]
        y_lo = x_lo + self.f(x_hi)
        if self.h is None:
            y_hi = x_hi + self.g(y_lo)
        else:
            y_hi = x_hi * torch.exp(self._scale(y_lo)) + self.g(y_lo)
        return torch.cat([y_lo, y_hi], dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        y_lo, y_hi = y[:, : self.lo], y[:, self.lo :]
        if self.h is None:
            x_hi = y_hi - self.g(y_lo)
        else:
            x_hi = (y_hi - self.g(y_lo)) * torch.exp(-self._scale(y_lo))
        x_lo = y_lo - self.f(x_hi)
        return torch.cat([x_lo, x_hi], dim=1)


class Branch(nn.Module):
    """A multi-level wavelet invertible network: image ↔ latents ``[z_1 … z_L]``.

    Shape:
        - image: :math:`(N, C, H, W)`, H and W multiples of ``2**levels``.
        - ``z_l`` (l < L): :math:`(N, 3C, H/2^l, W/2^l)`; ``z_L``: :math:`(N, 4C, H/2^L, W/2^L)`.
    """

    def __init__(self, config: UMLINConfig) -> None:
        super().__init__()
        self.channels = config.in_channels
        self.levels = nn.ModuleList(
            nn.ModuleList(Coupling(config) for _ in range(config.blocks))
            for _ in range(config.levels)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        latents: list[Tensor] = []
        low = x
        for index, blocks in enumerate(self.levels):
            h = haar(low)
            for block in blocks:  # type: ignore[union-attr]
                h = block(h)
            if index < len(self.levels) - 1:
                low = h[:, : self.channels]
                latents.append(h[:, self.channels :])
            else:
                latents.append(h)
        return latents

    def inverse(self, latents: list[Tensor]) -> Tensor:
        if len(latents) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} latents, got {len(latents)}")
        low: Tensor | None = None
        for index in reversed(range(len(self.levels))):
            h = latents[index] if low is None else torch.cat([low, latents[index]], dim=1)
            for block in reversed(self.levels[index]):  # type: ignore[arg-type]
                h = block.inverse(h)
            low = haar_inverse(h)
        assert low is not None
        return low


class UMLIN(nn.Module):
    """UML-IN: ``x̂ = S⁻¹(B(x))`` with a blur branch B and a sharp branch S.

    Attributes:
        latents: After a forward pass in training mode, the detail latents of B (every level's
            3C detail channels; not the last level's C low-pass channels); after
            :meth:`training_terms`, S's detail latents are appended. Empty in eval mode.

    Shape:
        - Input: :math:`(N, C, H, W)`, H and W multiples of ``2**levels``, values in [0, 1].
        - Output: :math:`(N, C, H, W)`, not clamped.
    """

    def __init__(self, config: UMLINConfig) -> None:
        super().__init__()
        self.config = config
        self.blur = Branch(config)
        self.sharp = Branch(config)
        self.latents: list[Tensor] = []
        self._blur_latents: list[Tensor] | None = None

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        return 2**self.config.levels

    def encode_blur(self, x: Tensor) -> list[Tensor]:
        """B(x): latents ``[z_1 … z_L]`` of a blurry image (the U's analysis arm)."""
        return self.blur(x)

    def encode_sharp(self, x: Tensor) -> list[Tensor]:
        """S(x): the target latents of a sharp image."""
        return self.sharp(x)

    def decode(self, latents: list[Tensor]) -> Tensor:
        """S⁻¹(latents): an image (the U's synthesis arm)."""
        return self.sharp.inverse(latents)

    def detail(self, latents: list[Tensor]) -> list[Tensor]:
        """The detail parts of ``latents`` (the last level's low-pass channels left out)."""
        return [*latents[:-1], latents[-1][:, self.config.in_channels :]]

    def forward(self, x: Tensor) -> Tensor:
        z = self.encode_blur(x)
        if self.training:
            self._blur_latents = z
            self.latents = self.detail(z)
        else:
            self._blur_latents, self.latents = None, []
        return self.decode(z)

    def training_terms(self, sharp: Tensor) -> dict[str, Tensor]:
        """Training hook, called by the loop after ``forward(blurry)`` with the sharp target.

        Runs S on ``sharp``, appends S's detail latents to :attr:`latents` (so
        ``loss.latent_l1`` is the sparsity of both branches) and returns the unweighted
        level-wise guidance ``latent_guidance = Σ_l mean (z^B_l − z^S_l)²`` (gradients reach
        both branches).

        Shape:
            - sharp: the shape of the last ``forward`` input.
        """
        if self._blur_latents is None:
            raise RuntimeError("training_terms needs a forward pass in training mode first")
        z_blur, self._blur_latents = self._blur_latents, None
        z_sharp = self.encode_sharp(sharp)
        self.latents = [*self.latents, *self.detail(z_sharp)]
        guidance = torch.stack(
            [(b.float() - s.float()).pow(2).mean() for b, s in zip(z_blur, z_sharp, strict=True)]
        ).sum()
        return {"latent_guidance": guidance}


SPEC = ArchSpec(
    id="uml_in",
    module_cls=UMLIN,
    config_cls=UMLINConfig,
    defaults=ArchDefaults(size_multiple=8, tiling="supported", receptive_radius=64),
    tiny_config={"levels": 2, "blocks": 1, "growth": 4, "dense_layers": 1},
    description="UML-IN: two-branch multi-level invertible wavelet network, x̂ = S⁻¹(B(x)).",
)
