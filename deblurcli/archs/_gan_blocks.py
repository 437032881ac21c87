"""Building blocks shared by the GAN-paper generators (Lenka et al. 2019, models.md §3.1).

- :class:`SelfAttention2d` — SAGAN-style non-local attention ``Y = γ·v(softmax(g fᵀ) h) + X``
  with γ initialised to 0 (so a new block is the identity). Its memory does not grow with the
  square of the image: attention is **exact and global** over the feature map, computed in
  query blocks (each block scores ``chunk × N`` pairs, never ``N × N``), as long as the map has at
  most ``window²`` positions; a larger map (a large photo) is cut into a grid of near-equal
  windows of at most ``window × window`` positions and attention is exact **within each window**
  (the policy the architectures record as ``attention = "global-chunked, windowed above W²"``).
- :class:`ChannelAttention` — squeeze-and-excitation: global average pool → C/r → activation →
  C → sigmoid → channel-wise rescale (1×1 convolutions as the fully connected layers).
- :func:`maybe_spectral_norm` — wrap a conv/linear layer in spectral normalisation (one power
  iteration) when a switch is on.
- :func:`to_signed`, :func:`from_signed`, :func:`global_residual` — the [−1, 1] image scale of the
  authors' code and its two global residuals (``average`` for Pix2Pix/RiR, ``clip`` for
  DeblurGAN).

Tensor layout everywhere: ``N × C × H × W``.
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

M = TypeVar("M", bound=nn.Module)

ResidualMode = Literal["average", "clip", "none"]

DEFAULT_CHUNK = 1024
"""Queries scored at once by :func:`chunked_attention` (``chunk × N`` scores in memory)."""


class SpectralNorm(nn.Module):
    """Parametrisation ``W ↦ W / σ(W)``, σ estimated by power iteration (Miyato et al. 2018).

    ``u`` and ``v`` (buffers ``_u``, ``_v``) are refined by one iteration per forward pass in
    training mode and frozen in eval mode, as in SAGAN. Fifteen iterations at construction give a
    good first estimate — skipped on the ``meta`` device, where the engine plans a checkpoint's
    shapes without memory (and where each iteration would cost Python-level decompositions).

    Args:
        weight: The layer's weight; its ``dim`` axis is the output axis of the matrix.
        dim: 0 for convolutions and linear layers, 1 for transposed convolutions.
        eps: Floor of the norms.
    """

    def __init__(self, weight: Tensor, dim: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        rows, cols = self._matrix(weight).shape
        u, v = weight.new_empty(rows), weight.new_empty(cols)
        if not weight.is_meta:  # on meta: shapes only (no op dispatch at all)
            u = F.normalize(u.normal_(), dim=0, eps=eps)
            v = F.normalize(v.normal_(), dim=0, eps=eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        if not weight.is_meta:
            self._iterate(self._matrix(weight.detach()), 15)

    def _matrix(self, weight: Tensor) -> Tensor:
        return weight.movedim(self.dim, 0).flatten(1)

    @torch.no_grad()
    def _iterate(self, matrix: Tensor, steps: int) -> None:
        for _ in range(steps):
            self._v.copy_(F.normalize(matrix.t() @ self._u, dim=0, eps=self.eps))
            self._u.copy_(F.normalize(matrix @ self._v, dim=0, eps=self.eps))

    def forward(self, weight: Tensor) -> Tensor:
        # σ in float32 even under autocast: bf16 matmuls would mix dtypes with the fp32 buffers
        with torch.autocast(weight.device.type, enabled=False):
            matrix = self._matrix(weight.float())
            if self.training:
                self._iterate(matrix.detach(), 1)
            # fresh unit vectors: the in-place updates must not reach autograd, and an EMA of the
            # buffers (training's weight averaging) is no longer exactly of unit length
            u = F.normalize(self._u.float(), dim=0, eps=self.eps)
            v = F.normalize(self._v.float(), dim=0, eps=self.eps)
            sigma = torch.dot(u, matrix @ v)
        return weight / sigma.to(weight.dtype)


def maybe_spectral_norm(module: M, enabled: bool) -> M:
    """Return ``module`` with spectral normalisation on its ``weight`` when ``enabled``.

    One power iteration per training forward pass (SAGAN; :class:`SpectralNorm`). Transposed
    convolutions are normalised over their output axis. The parametrisation adds buffers
    (``_u``, ``_v``), not parameters, so parameter counts do not change.

    Args:
        module: A layer with a ``weight`` (``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.Linear``).
        enabled: Apply the normalisation; ``False`` returns ``module`` unchanged.

    Raises:
        TypeError: ``enabled`` but ``module`` has no ``weight`` parameter.
    """
    if not enabled:
        return module
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter):
        raise TypeError(f"spectral norm needs a layer with a weight, got {type(module).__name__}")
    transposed = nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d
    dim = 1 if isinstance(module, transposed) else 0
    nn.utils.parametrize.register_parametrization(
        module, "weight", SpectralNorm(weight, dim), unsafe=weight.is_meta  # meta: skip the check
    )
    return module


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether ``module``'s ``weight`` is spectrally normalised (by :func:`maybe_spectral_norm`)."""
    return nn.utils.parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, SpectralNorm) for p in module.parametrizations["weight"]  # type: ignore[union-attr]
    )


def chunked_attention(
    query: Tensor, key: Tensor, value: Tensor, chunk: int = DEFAULT_CHUNK
) -> Tensor:
    """Exact ``softmax(query · keyᵀ) · value`` (no ``1/√d`` scaling), ``chunk`` queries at a time.

    Each query row's softmax runs over all keys, so splitting the queries changes nothing but
    memory: a block holds ``chunk × N_k`` scores (plain batched matmuls and an in-place softmax:
    on the CPU about 2.5× faster than ``scaled_dot_product_attention``'s fallback for values
    wider than the keys). In training, autograd keeps every block's scores.

    Args:
        query: Queries, :math:`(B, N_q, D)`.
        key: Keys, :math:`(B, N_k, D)`.
        value: Values, :math:`(B, N_k, E)`.
        chunk: Queries per block (>= 1).

    Returns:
        :math:`(B, N_q, E)`.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    keys_t = key.transpose(1, 2)
    blocks = []
    for i in range(0, query.shape[1], chunk):
        scores = torch.bmm(query[:, i : i + chunk], keys_t)
        blocks.append(torch.bmm(torch.softmax(scores, dim=-1), value))
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)


def dense_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Reference: ``softmax(query · keyᵀ) · value`` with the whole ``N_q × N_k`` matrix.

    Shape: as :func:`chunked_attention`. For tests and tiny inputs only.
    """
    return torch.softmax(query @ key.transpose(1, 2), dim=-1) @ value


def _splits(size: int, window: int) -> list[tuple[int, int]]:
    """``size`` cut into ``ceil(size / window)`` near-equal ``(start, stop)`` spans."""
    count = max(1, math.ceil(size / window))
    edges = [round(i * size / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


class SelfAttention2d(nn.Module):
    """SAGAN non-local block: ``Y = γ·v(O) + X``, ``O = softmax(g(X) f(X)ᵀ) h(X)``, γ₀ = 0.

    ``f``, ``g``: 1×1 convs C → C/``reduction``; ``h``, ``v``: 1×1 convs C → C. Memory policy: see
    the module docstring (global exact attention in query blocks of ``chunk`` up to ``window²``
    positions, exact attention inside a grid of windows above that; ``window = 0``: always global).

    Args:
        channels: C.
        reduction: C / (query and key width); 8 in SAGAN and the authors' code.
        spectral_norm: Spectrally normalise the four 1×1 convs.
        window: Side (in feature positions) of the largest map attended globally.
        chunk: Queries scored at once.

    Shape:
        - Input: :math:`(N, C, H, W)`. Output: the same.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 8,
        spectral_norm: bool = False,
        window: int = 64,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.f = maybe_spectral_norm(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.g = maybe_spectral_norm(nn.Conv2d(channels, inner, 1), spectral_norm)
        self.h = maybe_spectral_norm(nn.Conv2d(channels, channels, 1), spectral_norm)
        self.v = maybe_spectral_norm(nn.Conv2d(channels, channels, 1), spectral_norm)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.window, self.chunk = window, chunk

    def _attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """``O`` on one map or window: maps :math:`(N, C', h, w)` → :math:`(N, C, h, w)`."""
        n, c, h, w = value.shape
        out = chunked_attention(
            query.flatten(2).transpose(1, 2),  # N × hw × C/r
            key.flatten(2).transpose(1, 2),
            value.flatten(2).transpose(1, 2),  # N × hw × C
            self.chunk,
        )
        return out.transpose(1, 2).reshape(n, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        query, key, value = self.g(x), self.f(x), self.h(x)  # 1×1 convs: once for all windows
        h, w = x.shape[-2:]
        if not self.window or h * w <= self.window * self.window:
            attended = self._attend(query, key, value)
        else:
            attended = torch.empty_like(value, memory_format=torch.contiguous_format)
            for r0, r1 in _splits(h, self.window):
                for c0, c1 in _splits(w, self.window):
                    parts = (t[..., r0:r1, c0:c1] for t in (query, key, value))
                    attended[..., r0:r1, c0:c1] = self._attend(*parts)
        return x + self.gamma * self.v(attended)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: ``x · σ(W₂ act(W₁ avgpool(x)))``.

    Args:
        channels: C.
        reduction: r; the hidden width is ``max(1, C // r)`` (Pix2Pix code 16, RiR code 8).
        activation: ``lrelu`` (LeakyReLU 0.2, the Pix2Pix code) or ``relu`` (RiR, SE paper).
        bias: Biases on the two 1×1 convs (Pix2Pix code: none; RiR: yes).
        spectral_norm: Spectrally normalise the two 1×1 convs.

    Shape:
        - Input: :math:`(N, C, H, W)`. Output: the same.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        activation: Literal["lrelu", "relu"] = "lrelu",
        bias: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        act: nn.Module = nn.LeakyReLU(0.2) if activation == "lrelu" else nn.ReLU()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            maybe_spectral_norm(nn.Conv2d(channels, hidden, 1, bias=bias), spectral_norm),
            act,
            maybe_spectral_norm(nn.Conv2d(hidden, channels, 1, bias=bias), spectral_norm),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


def to_signed(x: Tensor) -> Tensor:
    """[0, 1] → [−1, 1], the image scale of the authors' code. Shape preserved."""
    return 2.0 * x - 1.0


def from_signed(y: Tensor) -> Tensor:
    """[−1, 1] → [0, 1]. Shape preserved."""
    return 0.5 * (y + 1.0)


def global_residual(decoded: Tensor, image: Tensor, mode: ResidualMode) -> Tensor:
    """Combine a generator's ``tanh`` output with its input, both in [−1, 1].

    Args:
        decoded: ``tanh`` of the last layer, :math:`(N, C, H, W)`.
        image: The (signed) input image, the same shape.
        mode: ``average`` — ``(decoded + image) / 2`` (Pix2Pix and RiR code; stays in [−1, 1]);
            ``clip`` — ``clamp(decoded + image, −1, 1)`` (DeblurGAN); ``none`` — ``decoded``.

    Returns:
        :math:`(N, C, H, W)` in [−1, 1].
    """
    if mode == "average":
        return 0.5 * (decoded + image)
    if mode == "clip":
        return (decoded + image).clamp(-1.0, 1.0)
    if mode == "none":
        return decoded
    raise ValueError(f"global residual must be 'average', 'clip' or 'none', got {mode!r}")


__all__ = [
    "ChannelAttention",
    "SelfAttention2d",
    "SpectralNorm",
    "chunked_attention",
    "dense_attention",
    "from_signed",
    "global_residual",
    "has_spectral_norm",
    "maybe_spectral_norm",
    "to_signed",
]
