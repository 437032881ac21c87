"""The Restorer: a loaded network with a fixed inference contract.

``restorer(x)`` takes an N×C×H×W float tensor in [0, 1] on any device and returns one of the same
shape in [0, 1] on the CPU. Along the way it adapts grayscale/RGB to the model, pads to the size
multiple, tiles when the image is large, runs under ``torch.inference_mode`` in the chosen
precision (redoing a tile in fp32 if reduced precision produced NaN/Inf), clamps and crops. With
``ensemble=N`` it averages the network over N flipped/transposed copies of the image (geometric
self-ensemble): each copy is restored and turned back before the mean. On the CPU, the weights of
architectures whose registry entry sets ``cpu_channels_last`` are kept in that memory format
(measured faster there; the results are the same to float rounding).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from deblurcli.engine.device import dtype_name
from deblurcli.engine.info import ModelInfo
from deblurcli.engine.tiling import run_auto_tiled
from deblurcli.errors import UnsupportedImageError, UsageError

logger = logging.getLogger(__name__)

CPU_TILE_PIXELS = 2048 * 2048
"""On the CPU, ``tile="auto"`` runs images up to this many pixels whole, larger ones in tiles."""
MIN_TILE = 64

TileSetting = int | Literal["auto"] | None

ENSEMBLE_SIZES = (1, 2, 4, 8)
"""Allowed ``ensemble`` values: the first N of the 8 flips/transposes of :func:`dihedral`."""


def check_ensemble(value: int, option: str = "ensemble") -> None:
    """Raise :class:`UsageError` (naming ``option``) unless ``value`` is in ENSEMBLE_SIZES."""
    if value not in ENSEMBLE_SIZES:
        raise UsageError(f"{option} must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, "
                         f"got {value}")


def dihedral(x: Tensor, index: int, *, inverse: bool = False) -> Tensor:
    """One of the 8 flips/transposes of the image plane, or its inverse.

    ``index`` bit 0 flips left–right, bit 1 flips up–down, bit 2 transposes (applied first, so
    the inverse undoes it last). ``dihedral(dihedral(x, i), i, inverse=True)`` equals ``x``.

    Shape:
        - x: :math:`(N, C, H, W)` → :math:`(N, C, H, W)`, or :math:`(N, C, W, H)` when bit 2 is set.
    """
    if not 0 <= index < 8:
        raise ValueError(f"dihedral index must be 0..7, got {index}")
    if inverse:
        x = x.flip(-2) if index & 2 else x
        x = x.flip(-1) if index & 1 else x
        return x.transpose(-2, -1) if index & 4 else x
    x = x.transpose(-2, -1) if index & 4 else x
    x = x.flip(-1) if index & 1 else x
    return x.flip(-2) if index & 2 else x


def _prefers_channels_last(arch: str) -> bool:
    """Whether the registry marks ``arch`` as faster with ``channels_last`` weights on the CPU."""
    from deblurcli.archs import REGISTRY

    spec = REGISTRY.get(arch)  # a descriptor naming no registered architecture: plain layout
    return spec is not None and spec.cpu_channels_last


@dataclass
class RunStats:
    """What the last call did, for reports (``--json``) and tests."""

    tile: int | None = None
    overlap: int = 0
    tile_retries: int = 0
    fp32_fallbacks: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    """Pad bottom/right to multiples of ``multiple`` (reflect, replicate when too small).

    Shape:
        - x: :math:`(N, C, H, W)` → :math:`(N, C, H', W')`; also returns the pad sizes.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, 0, 0
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), pad_h, pad_w


def adapt_reference(reference: Tensor, image_channels: int, model_channels: int) -> Tensor:
    """The reference in the colour layout the blurry image is run in.

    A grayscale photo is restored against the luminance of a colour reference; a colour photo
    takes a grayscale reference as three equal channels.

    Shape:
        - reference: :math:`(1, C_r, H_r, W_r)`, C_r = 1 or 3 → :math:`(1, C_m, H_r, W_r)`
          (``C_m`` = ``model_channels``), float32 on the CPU.
    """
    ref = reference.detach().float().cpu()
    if ref.ndim != 4 or ref.shape[0] != 1 or ref.shape[1] not in (1, 3):
        raise UnsupportedImageError(
            f"reference must be one 1- or 3-channel image, got shape {tuple(ref.shape)}")
    if not torch.isfinite(ref).all():
        raise UnsupportedImageError("reference contains NaN or Inf values")
    if ref.shape[1] == 3 and (image_channels == 1 or model_channels == 1):
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        ref = (ref * weights).sum(dim=1, keepdim=True)
    if ref.shape[1] == 1 and model_channels == 3:
        ref = ref.expand(-1, 3, -1, -1)
    return ref


class Restorer:
    """A network plus its descriptor, device and precision.

    Args:
        model: Network in fp32 (reduced precision runs through autocast).
        info: Its descriptor.
        device: Where tiles are computed; images stay on the CPU.
        dtype: Compute precision (float32, bfloat16 or float16).
        name: Human-readable model reference for reports.
        provenance: Where the weights came from (file, sha256, source), for reports.
    """

    def __init__(
        self, model: nn.Module, info: ModelInfo, *, device: torch.device, dtype: torch.dtype,
        name: str = "",
        provenance: dict[str, str] | None = None,
    ) -> None:
        self.model = model.to(device=device, dtype=torch.float32).eval()
        if device.type == "cpu" and _prefers_channels_last(info.arch):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.info = info
        self.device = device
        self.dtype = dtype
        self.name = name or info.arch
        self.provenance = provenance or {}
        self.last_run = RunStats()

    @property
    def precision(self) -> str:
        return dtype_name(self.dtype)

    def _forward(self, tile: Tensor, reference: Tensor | None, dtype: torch.dtype) -> Tensor:
        tile = tile.to(self.device, non_blocking=True)
        args = [tile] if reference is None else [tile, reference.to(self.device)]
        if dtype == torch.float32:
            out = self.model(*args)
        else:
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                out = self.model(*args)
        return out.float()

    def _tile_fn(self, reference: Tensor | None) -> Callable[[Tensor], Tensor]:
        def run(tile: Tensor) -> Tensor:
            out = self._forward(tile, reference, self.dtype)
            if self.dtype != torch.float32 and not torch.isfinite(out).all():
                self.last_run.fp32_fallbacks += 1
                logger.warning("non-finite output in %s; tile redone in fp32", self.precision)
                out = self._forward(tile, reference, torch.float32)
            return out.cpu()

        return run

    def _auto_tile(self, h: int, w: int) -> int | None:
        if self.info.tiling == "internal" or self.device.type != "cpu" or h * w <= CPU_TILE_PIXELS:
            return None  # on accelerators: whole image first, halved on out-of-memory
        side = int(math.sqrt(CPU_TILE_PIXELS))
        return side - side % self.info.size_multiple

    def _with_guide(self, batch: Tensor, guide: Tensor | None) -> Tensor:
        """``batch`` (N, C, H, W) with the guide's channels appended, as the model reads it."""
        wanted = self.info.guide_channels
        if guide is None and not wanted:
            return batch
        if guide is None:
            raise UsageError(
                f"model {self.name} finishes a blind deconvolution and reads its guide "
                f"({wanted} channels); run it with `deblurcli deconvolve-blind --finish "
                f"{self.name}`, not on a photo alone")
        if not wanted:
            raise UsageError(f"model {self.name} takes no guide")
        if guide.ndim != 4 or guide.shape[1] != wanted or guide.shape[-2:] != batch.shape[-2:]:
            raise UsageError(f"model {self.name}: guide of shape {tuple(guide.shape)} does not "
                             f"fit {wanted} channels of {tuple(batch.shape[-2:])}")
        guide = guide.detach().float().cpu().expand(batch.shape[0], -1, -1, -1)
        return torch.cat([batch, guide], dim=1)

    def __call__(
        self,
        x: Tensor,
        reference: Tensor | None = None,
        *,
        guide: Tensor | None = None,
        tile: TileSetting = "auto",
        overlap: int | None = None,
        ensemble: int = 1,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Tensor:
        """Restore ``x``.

        Args:
            x: Blurry images in [0, 1].
            reference: Sharp reference image, required by two-input models (never tiled).
            guide: Per-pixel guide channels, required by models with ``guide_channels`` (tiled
                with ``x``).
            tile: ``"auto"`` (whole image when it fits, else tiles; halved on out-of-memory),
                ``None``/0 (never tile) or a tile size in pixels.
            overlap: Pixels shared by neighbouring tiles (default: 2 × the model's receptive
                radius, at least 32).
            ensemble: Average over this many flipped/transposed copies (1, 2, 4 or 8); the
                run takes about that many times longer.
            on_progress: Called with (tiles done, tiles total), counted over all copies.

        Shape:
            - x: :math:`(N, C, H, W)`, C = 1 or 3; reference: :math:`(1, C, H_r, W_r)`;
              guide: :math:`(N, G, H, W)`, G = the model's ``guide_channels``.
            - Output: :math:`(N, C, H, W)` float32 on the CPU, values in [0, 1].
        """
        if x.ndim != 4:
            raise UsageError(f"expected an N×C×H×W tensor, got shape {tuple(x.shape)}")
        check_ensemble(ensemble)
        if (reference is None) != (self.info.inputs == 1):
            need = ("needs a reference image (`deblurcli deblur-ref`)" if self.info.inputs == 2
                    else "takes no reference")
            raise UsageError(f"model {self.name} {need}")
        channels = x.shape[1]
        if not torch.isfinite(x).all():
            raise UnsupportedImageError("input contains NaN or Inf values")
        x = x.detach().float().cpu()
        model_channels = self.info.in_channels
        if channels == model_channels:
            batch = x
        elif channels == 1 and model_channels == 3:
            batch = x.expand(-1, 3, -1, -1)
        elif channels == 3 and model_channels == 1:
            batch = x.reshape(-1, 1, *x.shape[-2:])
        else:
            raise UnsupportedImageError(
                f"{channels}-channel input cannot go through the {model_channels}-channel "
                f"model {self.name}"
            )
        if reference is not None:
            reference = adapt_reference(reference, channels, model_channels)
        batch = self._with_guide(batch, guide)
        overlap = overlap if overlap is not None else max(32, 2 * self.info.receptive_radius)
        self.last_run = RunStats(overlap=overlap)
        total: Tensor | None = None
        for index in range(ensemble):
            def progress(done: int, count: int, index: int = index) -> None:
                if on_progress is not None:
                    on_progress(index * count + done, ensemble * count)

            turned = dihedral(batch, index)
            ref = None if reference is None else dihedral(reference, index)
            out = dihedral(self._restore_plane(turned, ref, tile, overlap, progress), index,
                           inverse=True)
            total = out if total is None else total.add_(out)
        assert total is not None
        out = total.div_(ensemble).clamp_(0.0, 1.0)
        if channels == 1 and model_channels == 3:
            out = out.mean(dim=1, keepdim=True)
        elif channels == 3 and model_channels == 1:
            out = out.reshape(x.shape)
        return out

    def _restore_plane(
        self, batch: Tensor, reference: Tensor | None, tile: TileSetting, overlap: int,
        on_progress: Callable[[int, int], None],
    ) -> Tensor:
        """Pad, run (tiled when needed) and crop one orientation of the model-ready ``batch``."""
        multiple = max(1, self.info.size_multiple)
        padded, pad_h, pad_w = pad_to_multiple(batch, multiple)
        h, w = padded.shape[-2:]
        tile_size = self._auto_tile(h, w) if tile == "auto" else tile or None
        if tile_size is not None and self.info.tiling == "internal":
            raise UsageError(f"model {self.name} cannot be tiled; use --tile 0")
        if tile_size is not None and self.info.tiling == "discouraged":
            logger.warning("model %s is sensitive to tiling; results may differ", self.name)
        with torch.inference_mode():
            result = run_auto_tiled(
                self._tile_fn(reference), padded, tile=tile_size, overlap=overlap,
                multiple=multiple, min_tile=max(MIN_TILE, multiple),
                out_channels=self.info.out_channels, on_progress=on_progress,
                policy=self.info.tiling, name=f"model {self.name}",
            )
        self.last_run.tile = result.tile
        self.last_run.tile_retries += result.retries
        # a normal tensor (not an inference tensor) so callers may modify it in place
        return result.output[..., : h - pad_h, : w - pad_w].clone()
