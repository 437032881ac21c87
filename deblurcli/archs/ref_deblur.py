"""Reference-based dynamic scene deblurring (Liu, Hua, Li, KSII TIIS 2024).

The network restores a blurry photo with the help of a sharp **reference** of the same place (a
neighbouring video frame, another shot of the burst, a photo taken from a little further away).
Layout of ``../shared/specs/models.md`` §2.2 (widths confirmed by the paper's parameter count):

- **Blur encoder**: ``E0 = conv(I_b)``; ``E1 = RG(E0)`` at full resolution,
  ``E2 = RG(SFFM(Down(E1), I_b↓2))`` at 1/2 and ``E3 = RG(SFFM(Down(E2), I_b↓4))`` at 1/4. An RG
  (ResBlock group) is ``blocks`` ResBlocks ``x + conv(relu(conv(x)))``; Down is a stride-2 conv.
  The **SFFM** modulates a feature F with the downsampled blurry image: four convs on the image,
  concatenated with it, give ``γ = conv1×1`` and ``β = conv3×3(γ)``; the output is ``γ ⊙ F + β``.
- **Shallow reference encoder** (own weights): two convs per scale, ``F1_ref`` (1), ``F2_ref``
  (1/2), ``F3_ref`` (1/4).
- **Matching, once**, at 1/4 scale: every 3×3 patch of the blurry descriptor map is compared with
  every 3×3 patch of the reference's by cosine similarity; the arg-max is the index map ``P``
  and the maximum the confidence map ``C`` (:func:`match`). The descriptor is parameter-free
  (:func:`ncc_descriptors`, the spec's ``pixel-ncc``): both images are normalised per channel
  (mean/std, so exposure and white balance may differ), 4×4 average-pooled (which also evens out
  the blur between them), given Sobel gradients of their luminance, unfolded 3×3 and made
  zero-mean/unit-norm per patch, so the cosine is a normalised cross-correlation.
- **Transfer** at three scales (:func:`transfer`): for query position ``i`` the reference patch
  ``P_i`` of ``F_s_ref`` (a ``3k × 3k`` window, ``k = 4, 2, 1``) is gathered and the patches are
  folded back (overlaps averaged over the 9 patches): TTSR's unfold/gather/fold, computed as 9
  block shifts so no ``3k × 3k`` unfolding is ever materialised.
- **Three cascaded REAMs**: ``Fb_1 = ResBlock(conv(I_b))``, ``R_s = Fuse(Fb_s, T_s, C)``,
  ``Fb_{s+1} = ResBlock(Down(R_s))``, with the confidence-weighted fusion
  ``Fuse(F, T, C) = conv3×3([F, T]) ⊙ conv3×3(C↑) + F``.
- **Decoder**: ``D3 = RG(conv1×1([E3, R3]))``, ``D2 = RG(conv1×1([Up(D3), E2, R2]))``,
  ``D1 = RG(conv1×1([Up(D2), E1, R1]))`` (Up: 4×4 transposed conv, stride 2); the output is
  ``I_b + conv(D1)`` (global skip). The last conv starts at zero: an untrained model returns its
  input.

**Matching that scales** (the paper's stated limitation). Matching is exact and its memory is
bounded: the similarity matrix is never formed; query chunks are compared with reference chunks
of at most :data:`MATCH_CHUNK_ENTRIES` similarities at a time, keeping a running max/arg-max
(:func:`match`, equal to the dense arg-max, first index on ties). When a pair has more than
``global_match_limit`` query × reference positions (a 1280×720 pair with a same-size reference
has 3.3 G and is matched globally; a 12 MP pair has 560 G), each block of ``window_block``²
query positions searches only a window of ``search_radius`` positions around where its content
lies in the reference (:func:`match_windowed`). That location is found by a coarse global
match of the same descriptor at a further-pooled scale (:func:`block_centres`), so references
that are shifted or framed differently still work (that match has at most 1/16 of
``global_match_limit`` entries); cost and memory are then linear in the image size. The
reference may have any size: it is padded to a multiple of 4 inside.

Presets (:data:`PRESETS`; MACs counted with ``torch.utils.flop_counter`` on a square pair,
per megapixel of the blurry input, with a same-size reference, matching excluded; a training
step of ``cpu`` on 8×120² triplets is 79 GFLOP forward + backward, as ``bench train`` counts):

=======  =======================  ==========  ========  ==============================
preset   config                   parameters  GMAC/MP   without reference modules
=======  =======================  ==========  ========  ==============================
paper    width 32, blocks 16      14.23 M     2 000     13.05 M, 1 838 GMAC/MP
cpu      width 16, blocks 2       0.85 M      114       0.55 M, 73 GMAC/MP
=======  =======================  ==========  ========  ==============================

Matching adds ``45 · N_ref / 16`` MAC per pixel (``N_ref``: reference positions at 1/4 scale,
at most ``(window_block + 2·search_radius)²`` in the windowed search): 2.9 GMAC/MP for a 128²
reference, 162 GMAC/MP for a 1280×720 one, 26 GMAC/MP in the windowed search (96² window)
plus its coarse global match.
The spec's arithmetic gives 14.23 M for ``paper`` against the paper's stated 14.09 M.
``reference = false`` is the ablation without the reference modules (no reference encoder, no
REAMs; a one-input model), ``sffm = false`` the one without SFFMs.

``descriptor = "vgg19"`` is the spec's faithful φ (frozen VGG19 relu3_1, 2304-dimensional patch
descriptors, the reference blurred ↓↑ first); its weights come from a user-given safetensors file
(``model.descriptor_weights``, loaded by the training loop) and travel in the checkpoint. Not
implemented: ``--match-stride 3``; see ``docs/deblur_ref.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from deblurcli.archs._registry import ArchDefaults, ArchSpec

MATCH_CHUNK_ENTRIES = 1 << 24
"""Similarities computed at once by :func:`match` (16 M entries = 64 MiB in float32)."""
COARSE_FRACTION = 16
"""The coarse match guiding the windowed search may have ``global_match_limit / 16`` entries."""


@dataclass(frozen=True)
class RefDeblurConfig:
    """Hyper-parameters of :class:`RefDeblur` (JSON in checkpoints). Defaults: ``paper``."""

    in_channels: int = 3
    """Image channels in and out (3 for RGB, 1 for grayscale)."""
    width: int = 32
    """Channels at full resolution; 2× at 1/2 and 4× at 1/4 (paper: 32/64/128)."""
    blocks: int = 16
    """ResBlocks per ResBlock group (the paper's n; six groups in all)."""
    sffm: bool = True
    """SFFMs in front of the 2nd and 3rd encoder groups (false: the ablation without them)."""
    reference: bool = True
    """Reference encoder, matching and REAMs (false: the ablation without the reference)."""
    descriptor: Literal["ncc", "vgg19"] = "ncc"
    """Matching descriptor: ``ncc``, parameter-free normalised cross-correlation of 3×3 patches
    of 4×4-pooled colour + gradient maps (models.md §2.3 ``pixel-ncc``); ``vgg19``: 3×3 patches
    of frozen VGG19 relu3_1 features (the paper's φ), whose weights come from a user-given file
    (``model.descriptor_weights``) and are then stored in the checkpoint."""
    global_match_limit: int = 1 << 32
    """Query × reference positions (at 1/4 scale) up to which matching is global."""
    search_radius: int = 32
    """Beyond that limit: positions (at 1/4 scale, i.e. ×4 pixels) searched around each block's
    guided location."""
    window_block: int = 32
    """Beyond that limit: side of the query blocks that share one search window (1/4 scale)."""

    def __post_init__(self) -> None:
        if min(self.in_channels, self.width, self.blocks, self.search_radius,
               self.window_block) < 1:
            raise ValueError("in_channels, width, blocks, search_radius and window_block must "
                             "be >= 1")
        if self.width < 4 + self.in_channels:
            raise ValueError(f"width must be at least {4 + self.in_channels}")
        if self.descriptor not in ("ncc", "vgg19"):
            raise ValueError(f"descriptor must be 'ncc' or 'vgg19', got {self.descriptor!r}")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"width": 16, "blocks": 2},
}
"""Named configs: ``paper`` (models.md §2.2) and ``cpu`` (sized for 2-core training)."""


def preset(name: str, **overrides: Any) -> RefDeblurConfig:
    """The config of preset ``name`` (``paper`` or ``cpu``), with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown ref_deblur preset {name!r}; known: {', '.join(PRESETS)}")
    return RefDeblurConfig(**{**PRESETS[name], **overrides})


# ---------------------------------------------------------------------------------- matching


def ncc_descriptors(image: Tensor, pool: int = 4) -> Tensor:
    """Parameter-free patch descriptors: unit-norm, zero-mean 3×3 patches at 1/``pool`` scale.

    The image is normalised per channel by its own mean and standard deviation (so a brighter or
    differently balanced reference matches), average-pooled ``pool × pool``, extended with the
    Sobel gradients of its luminance, and every 3×3 neighbourhood (zero-padded at the border) is
    unfolded, centred and L2-normalised: the dot product of two descriptors is their normalised
    cross-correlation.

    Shape:
        - image: :math:`(N, C, H, W)`, H and W multiples of ``pool``.
        - Output: :math:`(N, D, H/pool, W/pool)` with ``D = 9 (C + 2)``.
    """
    x = image.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    x = F.avg_pool2d((x - mean) / std, pool)
    luma = x.mean(dim=1, keepdim=True)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                         device=x.device) / 8
    kernels = torch.stack([sobel, sobel.t()])[:, None]
    grads = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernels)
    features = torch.cat([x, grads], dim=1)
    n, _, h, w = features.shape
    patches = F.unfold(features, 3, padding=1)  # N × 9(C+2) × h·w
    patches = patches - patches.mean(dim=1, keepdim=True)
    patches = F.normalize(patches, dim=1, eps=1e-6)
    return patches.view(n, -1, h, w)


VGG19_RELU3_1 = (64, 64, "pool", 128, 128, "pool", 256)
"""torchvision ``vgg19().features[:12]``: conv1_1 … relu3_1 (conv3×3 + ReLU, ``pool``: 2× max)."""


def vgg19_relu3_1() -> nn.Sequential:
    """The frozen VGG19 stack up to relu3_1 (0.56 M parameters), indices as in torchvision.

    Its weights come only from a user-given file (:meth:`RefDeblur.load_descriptor`); keys of the
    perceptual loss's feature file (``layers.{i}.weight``) or of torchvision's
    (``features.{i}.weight``) both fit.
    """
    layers: list[nn.Module] = []
    channels = 3
    for spec in VGG19_RELU3_1:
        if spec == "pool":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, int(spec), 3, padding=1), nn.ReLU()]
            channels = int(spec)
    return nn.Sequential(*layers).requires_grad_(False)


def vgg_descriptors(vgg: nn.Module, image: Tensor, *, blur_reference: bool = False) -> Tensor:
    """Unit-norm 3×3 patches of VGG19 relu3_1 features (models.md §2.3, TTSR convention).

    The image is normalised with the ImageNet mean/std; a reference is first made blurry as
    ``bicubic ×1/4 then ×4`` (``blur_reference``). Each feature channel is normalised by its own
    mean and standard deviation over the image (so exposure differences do not dominate), then
    every 3×3 neighbourhood is unfolded and L2-normalised.

    Shape:
        - image: :math:`(N, 3, H, W)`, H and W multiples of 4 → :math:`(N, 2304, H/4, W/4)`.
    """
    x = image.float()
    if blur_reference:
        small = F.interpolate(x, scale_factor=0.25, mode="bicubic", align_corners=False)
        x = F.interpolate(small, size=x.shape[-2:], mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
    features = vgg((x.clamp(0, 1) - mean) / std)
    features = (features - features.mean(dim=(2, 3), keepdim=True)) / features.std(
        dim=(2, 3), keepdim=True).clamp_min(1e-3)
    n, _, h, w = features.shape
    patches = F.normalize(F.unfold(features, 3, padding=1), dim=1, eps=1e-6)
    return patches.view(n, -1, h, w)


def match(query: Tensor, keys: Tensor, *, chunk_entries: int = MATCH_CHUNK_ENTRIES
          ) -> tuple[Tensor, Tensor]:
    """Exact arg-max matching of every query descriptor against all keys, in bounded memory.

    Computes ``S = query @ keys.T`` chunk by chunk (at most ``chunk_entries`` similarities at a
    time), keeping a running maximum and arg-max per query; ties go to the first key, as
    ``torch.argmax`` does on the dense matrix, so the result equals the dense arg-max.

    Args:
        query: Descriptors, one per row.
        keys: Descriptors of the reference, one per row.
        chunk_entries: Similarities formed at once (memory bound, ``4 × chunk_entries`` bytes).

    Shape:
        - query: :math:`(N_q, D)`; keys: :math:`(N_r, D)`.
        - Output: index :math:`(N_q,)` int64 in ``[0, N_r)``, confidence :math:`(N_q,)`.
    """
    n_q, n_r = query.shape[0], keys.shape[0]
    if n_r == 0:
        raise ValueError("match: no reference positions")
    key_chunk = max(1, min(n_r, chunk_entries))
    query_chunk = max(1, chunk_entries // key_chunk)
    index = torch.empty(n_q, dtype=torch.int64, device=query.device)
    best = torch.empty(n_q, dtype=query.dtype, device=query.device)
    for q0 in range(0, n_q, query_chunk):
        q = query[q0 : q0 + query_chunk]
        run_max, run_arg = None, None
        for k0 in range(0, n_r, key_chunk):
            values, args = (q @ keys[k0 : k0 + key_chunk].t()).max(dim=1)
            args = args + k0
            if run_max is None or run_arg is None:
                run_max, run_arg = values, args
            else:
                better = values > run_max  # strict: an earlier chunk keeps a tie
                run_max = torch.where(better, values, run_max)
                run_arg = torch.where(better, args, run_arg)
        assert run_max is not None and run_arg is not None
        best[q0 : q0 + len(q)], index[q0 : q0 + len(q)] = run_max, run_arg
    return index, best


def dense_match(query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """The reference implementation of :func:`match`: one dense similarity matrix.

    Shape:
        - query: :math:`(N_q, D)`; keys: :math:`(N_r, D)` → index, confidence :math:`(N_q,)`.
    """
    values, index = (query @ keys.t()).max(dim=1)
    return index, values


def block_centres(query: Tensor, keys: Tensor, block: int, limit: int) -> tuple[Tensor, int]:
    """Where each query block's content lies in the reference: a coarse global match.

    Both descriptor maps are average-pooled by the smallest power of two ``s ≥ 2`` for which a
    global match has at most ``limit`` entries; every coarse query cell is matched globally and
    its displacement (reference position − own position) taken; a block's centre is its own
    centre plus the median displacement of the coarse cells inside it. The centres are good to
    about ``s`` positions, so a search window should reach at least that far.

    Shape:
        - query: :math:`(D, H_q, W_q)`; keys: :math:`(D, H_r, W_r)` (descriptor maps).
        - Output: :math:`(B_y, B_x, 2)` float (row, column) centres in reference positions,
          ``B_y = ⌈H_q / block⌉``, ``B_x = ⌈W_q / block⌉``; and ``s``.
    """
    d, hq, wq = query.shape
    _, hr, wr = keys.shape
    s = 2
    while math.ceil(hq / s) * math.ceil(wq / s) * math.ceil(hr / s) * math.ceil(wr / s) > limit:
        s *= 2
    pooled_q = F.normalize(F.avg_pool2d(query[None], s, ceil_mode=True)[0], dim=0, eps=1e-6)
    pooled_k = F.normalize(F.avg_pool2d(keys[None], s, ceil_mode=True)[0], dim=0, eps=1e-6)
    cq_h, cq_w = pooled_q.shape[1:]
    ck_w = pooled_k.shape[2]
    index, _ = match(pooled_q.reshape(d, -1).t(), pooled_k.reshape(d, -1).t())
    ry, rx = (index // ck_w).float(), (index % ck_w).float()
    own_y, own_x = torch.meshgrid(torch.arange(cq_h, device=query.device).float(),
                                  torch.arange(cq_w, device=query.device).float(), indexing="ij")
    dy = ((ry.view(cq_h, cq_w) - own_y) * s)
    dx = ((rx.view(cq_h, cq_w) - own_x) * s)
    blocks_y, blocks_x = math.ceil(hq / block), math.ceil(wq / block)
    centres = torch.empty(blocks_y, blocks_x, 2, device=query.device)
    for by in range(blocks_y):
        y0, y1 = by * block, min(hq, (by + 1) * block)
        cy0, cy1 = y0 // s, max(y0 // s + 1, math.ceil(y1 / s))
        for bx in range(blocks_x):
            x0, x1 = bx * block, min(wq, (bx + 1) * block)
            cx0, cx1 = x0 // s, max(x0 // s + 1, math.ceil(x1 / s))
            centres[by, bx, 0] = (y0 + y1 - 1) / 2 + dy[cy0:cy1, cx0:cx1].median()
            centres[by, bx, 1] = (x0 + x1 - 1) / 2 + dx[cy0:cy1, cx0:cx1].median()
    return centres, s


def match_windowed(query: Tensor, keys: Tensor, centres: Tensor, *, block: int, radius: int,
                   chunk_entries: int = MATCH_CHUNK_ENTRIES) -> tuple[Tensor, Tensor]:
    """Arg-max matching where each query block searches one window of the reference.

    Query block ``(by, bx)`` (``block × block`` positions) is matched exactly (:func:`match`)
    against the reference window of side ``block + 2·radius`` centred at ``centres[by, bx]``
    (moved inside the reference where it would stick out). With a window covering the whole
    reference this equals global matching.

    Shape:
        - query: :math:`(D, H_q, W_q)`; keys: :math:`(D, H_r, W_r)`; centres:
          :math:`(⌈H_q/block⌉, ⌈W_q/block⌉, 2)`.
        - Output: index :math:`(H_q W_q,)` into the flattened reference, confidence likewise.
    """
    d, hq, wq = query.shape
    _, hr, wr = keys.shape
    side = block + 2 * radius
    index = torch.empty(hq, wq, dtype=torch.int64, device=query.device)
    conf = torch.empty(hq, wq, dtype=query.dtype, device=query.device)
    for by in range(centres.shape[0]):
        for bx in range(centres.shape[1]):
            y0, x0 = by * block, bx * block
            y1, x1 = min(hq, y0 + block), min(wq, x0 + block)
            wy0 = _window_start(float(centres[by, bx, 0]), side, hr)
            wx0 = _window_start(float(centres[by, bx, 1]), side, wr)
            wy1, wx1 = min(hr, wy0 + side), min(wr, wx0 + side)
            q = query[:, y0:y1, x0:x1].reshape(d, -1).t()
            k = keys[:, wy0:wy1, wx0:wx1].reshape(d, -1).t()
            local, best = match(q, k, chunk_entries=chunk_entries)
            ww = wx1 - wx0
            glob = (local // ww + wy0) * wr + (local % ww + wx0)
            index[y0:y1, x0:x1] = glob.view(y1 - y0, x1 - x0)
            conf[y0:y1, x0:x1] = best.view(y1 - y0, x1 - x0)
    return index.view(-1), conf.view(-1)


def _window_start(centre: float, side: int, length: int) -> int:
    start = round(centre - (side - 1) / 2)
    return int(min(max(start, 0), max(0, length - side)))


def transfer(features: Tensor, index: Tensor, query_hw: tuple[int, int], scale: int) -> Tensor:
    """Fold of the gathered reference patches: TTSR's texture transfer at one scale.

    Position ``i`` of the query grid (1/4 scale) takes the ``3k × 3k`` reference window around
    block ``P_i`` (``k = scale``: 4 at full resolution, 2 at 1/2, 1 at 1/4); the windows are
    folded back onto the query image and the sum divided by 9. Equals
    ``fold(unfold(features, 3k, stride=k, padding=k)[:, :, P]) / 9`` with the same geometry, but
    is computed as 9 shifted block gathers (memory: one output's worth per shift).

    Shape:
        - features: :math:`(N, C, k H_r, k W_r)`; index: :math:`(N, H_q W_q)` into the
          :math:`H_r × W_r` grid; query_hw: :math:`(H_q, W_q)`.
        - Output: :math:`(N, C, k H_q, k W_q)`.
    """
    n, c = features.shape[:2]
    hq, wq = query_hw
    blocks = F.pixel_unshuffle(features, scale) if scale > 1 else features
    hr, wr = blocks.shape[-2:]
    cb = blocks.shape[1]
    padded = F.pad(blocks, (1, 1, 1, 1)).reshape(n, cb, -1)  # zero blocks around the reference
    ry, rx = index // wr, index % wr
    ry, rx = ry.view(n, 1, hq, wq), rx.view(n, 1, hq, wq)
    out = blocks.new_zeros(n, cb, hq, wq)
    src_y = F.pad(ry, (1, 1, 1, 1), value=-10)  # -10: no query there
    src_x = F.pad(rx, (1, 1, 1, 1), value=-10)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            # query block q receives, from the patch of query q - δ, its block at offset δ
            sy = src_y[..., 1 - dy : 1 - dy + hq, 1 - dx : 1 - dx + wq]
            sx = src_x[..., 1 - dy : 1 - dy + hq, 1 - dx : 1 - dx + wq]
            ty, tx = sy + dy + 1, sx + dx + 1  # +1: the zero padding
            valid = (ty >= 0) & (ty < hr + 2) & (tx >= 0) & (tx < wr + 2)
            flat = torch.where(valid, ty * (wr + 2) + tx, torch.zeros_like(ty))
            gathered = padded.gather(2, flat.view(n, 1, -1).expand(n, cb, -1))
            out += gathered.view(n, cb, hq, wq) * valid
    out = out / 9
    return F.pixel_shuffle(out, scale) if scale > 1 else out


# ------------------------------------------------------------------------------------ layers


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2)


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))``: the "modified ResBlock" of SRN (no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _group(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels) for _ in range(blocks)))


class SFFM(nn.Module):
    """Modulates a feature map with the (downsampled) blurry image: ``γ ⊙ F + β``.

    Four 3×3 convs (ReLU between) map the image to ``c − C`` channels; concatenated with the
    image they give ``γ = conv1×1(·)`` and ``β = conv3×3(γ)``.

    Shape:
        - features: :math:`(N, c, h, w)`; image: :math:`(N, C, h, w)` → :math:`(N, c, h, w)`.
    """

    def __init__(self, channels: int, image_channels: int) -> None:
        super().__init__()
        widths = [image_channels, max(1, channels // 4), max(1, channels // 2),
                  max(1, channels // 2), channels - image_channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(_conv(a, b))
            if i < 3:
                layers.append(nn.ReLU(inplace=True))
        self.image_net = nn.Sequential(*layers)
        self.gamma = _conv(channels, channels, 1)
        self.beta = _conv(channels, channels)

    def forward(self, features: Tensor, image: Tensor) -> Tensor:
        gamma = self.gamma(torch.cat([self.image_net(image), image], dim=1))
        return gamma * features + self.beta(gamma)


class Fuse(nn.Module):
    """Confidence-weighted aggregation: ``conv3×3([F, T]) ⊙ conv3×3(C↑) + F``.

    Shape:
        - features, transferred: :math:`(N, c, h, w)`; confidence: :math:`(N, 1, h', w')`
          (resized bilinearly to h × w) → :math:`(N, c, h, w)`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = _conv(2 * channels, channels)
        self.weight = _conv(1, channels)

    def forward(self, features: Tensor, transferred: Tensor, confidence: Tensor) -> Tensor:
        if confidence.shape[-2:] != features.shape[-2:]:
            confidence = F.interpolate(confidence, size=features.shape[-2:], mode="bilinear",
                                       align_corners=False)
        return self.mix(torch.cat([features, transferred], 1)) * self.weight(confidence) + features


class ReferenceEncoder(nn.Module):
    """Shallow encoder of the sharp reference: two convs (ReLU after each) per scale.

    Shape:
        - reference: :math:`(N, C, H, W)`, H and W multiples of 4 → features at 1, 1/2, 1/4
          with ``width``, ``2·width``, ``4·width`` channels.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        relu = nn.ReLU(inplace=True)
        self.s1 = nn.Sequential(_conv(in_channels, w1), relu, _conv(w1, w1), relu)
        self.s2 = nn.Sequential(_conv(w1, w2, stride=2), relu, _conv(w2, w2), relu)
        self.s3 = nn.Sequential(_conv(w2, w3, stride=2), relu, _conv(w3, w3), relu)

    def forward(self, reference: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f1 = self.s1(reference)
        f2 = self.s2(f1)
        return f1, f2, self.s3(f2)


# ------------------------------------------------------------------------------------- model


@dataclass
class MatchResult:
    """Index and confidence maps of one matching (1/4 scale)."""

    index: Tensor
    """:math:`(N, H_q W_q)` int64 indices into the flattened :math:`H_r × W_r` reference grid."""
    confidence: Tensor
    """:math:`(N, 1, H_q, W_q)` cosine similarity of the best match, in [-1, 1]."""
    reference_hw: tuple[int, int]
    windowed: bool
    """Whether the bounded-window search was used (the pair was over ``global_match_limit``)."""


class RefDeblur(nn.Module):
    """Reference-based deblurring network (see the module docstring).

    Shape:
        - blurry: :math:`(N, C, H, W)`, H and W multiples of 4, values in [0, 1].
        - reference: :math:`(N, C, H_r, W_r)` or :math:`(1, C, H_r, W_r)` (shared by the batch),
          any size of at least 4 × 4; ignored (may be None) when ``config.reference`` is false.
        - Output: :math:`(N, C, H, W)`, not clamped.
    """

    def __init__(self, config: RefDeblurConfig) -> None:
        super().__init__()
        self.config = config
        c, w, n = config.in_channels, config.width, config.blocks
        w1, w2, w3 = w, 2 * w, 4 * w
        self.head = _conv(c, w1)
        self.enc1 = _group(w1, n)
        self.down1 = _conv(w1, w2, stride=2)
        self.sffm2 = SFFM(w2, c) if config.sffm else None
        self.enc2 = _group(w2, n)
        self.down2 = _conv(w2, w3, stride=2)
        self.sffm3 = SFFM(w3, c) if config.sffm else None
        self.enc3 = _group(w3, n)
        ref_widths = (w1, w2, w3) if config.reference else (0, 0, 0)
        if config.reference:
            self.ref_encoder = ReferenceEncoder(c, w)
            self.ream_head = nn.Sequential(_conv(c, w1), ResBlock(w1))
            self.ream_down = nn.ModuleList([nn.Sequential(_conv(w1, w2, stride=2), ResBlock(w2)),
                                            nn.Sequential(_conv(w2, w3, stride=2), ResBlock(w3))])
            self.fuse = nn.ModuleList([Fuse(w1), Fuse(w2), Fuse(w3)])
        self.merge3 = _conv(w3 + ref_widths[2], w3, 1)
        self.dec3 = _group(w3, n)
        self.up3 = nn.ConvTranspose2d(w3, w2, 4, stride=2, padding=1)
        self.merge2 = _conv(2 * w2 + ref_widths[1], w2, 1)
        self.dec2 = _group(w2, n)
        self.up2 = nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1)
        self.merge1 = _conv(2 * w1 + ref_widths[0], w1, 1)
        self.dec1 = _group(w1, n)
        self.tail = _conv(w1, c)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.vgg = vgg19_relu3_1() if config.reference and config.descriptor == "vgg19" else None
        self.descriptor_loaded = False
        """Whether :meth:`load_descriptor` gave the VGG its weights (checkpoints carry them)."""
        self.last_match: MatchResult | None = None
        """The matching of the last forward pass (for inspection and tests)."""

    size_multiple = 4
    """Height and width of the blurry input must be multiples of this."""

    @property
    def inputs(self) -> int:
        """2 (blurry, reference), or 1 for the ablation without reference modules."""
        return 2 if self.config.reference else 1

    def load_descriptor(self, state: dict[str, Tensor]) -> None:
        """Give the ``vgg19`` descriptor its weights (tensors, e.g. from a safetensors file).

        Accepts the perceptual loss's feature file (``layers.{i}.…``), torchvision's
        ``vgg19().features`` (``features.{i}.…``) or bare ``{i}.…`` keys; keys beyond relu3_1
        are ignored, missing ones are an error.

        Raises:
            ValueError: the model has no VGG descriptor, or a weight is missing or misshapen.
        """
        if self.vgg is None:
            raise ValueError("this model's descriptor is not vgg19")
        wanted = self.vgg.state_dict()
        found: dict[str, Tensor] = {}
        for key, value in state.items():
            bare = key.removeprefix("layers.").removeprefix("features.")
            if bare in wanted:
                found[bare] = value
        missing = sorted(set(wanted) - set(found))
        if missing:
            raise ValueError(f"VGG19 weights lack {', '.join(missing[:4])} (relu3_1 needs "
                             f"{len(wanted)} tensors: conv1_1 … conv3_1)")
        try:
            self.vgg.load_state_dict(found, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"VGG19 weights do not fit: {exc}") from None
        self.descriptor_loaded = True

    @torch.no_grad()
    def match(self, blurry: Tensor, reference: Tensor) -> MatchResult:
        """Index and confidence maps of ``blurry`` against ``reference`` (both padded to ×4).

        Global (chunked, exact) when ``H_q W_q · H_r W_r`` at 1/4 scale is at most
        ``global_match_limit``, else the guided bounded-window search (module docstring).
        Always in float32, also under autocast.
        """
        with torch.autocast(blurry.device.type, enabled=False):  # similarities in float32
            return self._match(blurry.float(), reference.float())

    def _match(self, blurry: Tensor, reference: Tensor) -> MatchResult:
        cfg = self.config
        if self.vgg is not None:
            q_desc = vgg_descriptors(self.vgg, blurry)
            k_desc = vgg_descriptors(self.vgg, reference, blur_reference=True)
        else:
            q_desc, k_desc = ncc_descriptors(blurry), ncc_descriptors(reference)
        n, _, hq, wq = q_desc.shape
        hr, wr = k_desc.shape[-2:]
        windowed = hq * wq * hr * wr > cfg.global_match_limit
        indices, confidences = [], []
        for i in range(n):
            q, k = q_desc[i], k_desc[i if k_desc.shape[0] == n else 0]
            if windowed:
                centres, pool = block_centres(q, k, cfg.window_block,
                                              cfg.global_match_limit // COARSE_FRACTION)
                idx, conf = match_windowed(q, k, centres, block=cfg.window_block,
                                           radius=max(cfg.search_radius, 2 * pool))
            else:
                idx, conf = match(q.flatten(1).t(), k.flatten(1).t())
            indices.append(idx)
            confidences.append(conf.view(1, hq, wq))
        return MatchResult(torch.stack(indices), torch.stack(confidences), (hr, wr), windowed)

    def forward(self, blurry: Tensor, reference: Tensor | None = None) -> Tensor:
        cfg = self.config
        down2 = F.avg_pool2d(blurry, 2)
        down4 = F.avg_pool2d(down2, 2)
        e1 = self.enc1(self.head(blurry))
        x = self.down1(e1)
        e2 = self.enc2(self.sffm2(x, down2) if self.sffm2 is not None else x)
        x = self.down2(e2)
        e3 = self.enc3(self.sffm3(x, down4) if self.sffm3 is not None else x)
        refs: tuple[Tensor, ...] = ()  # R1, R2, R3 (none in the ablation without reference)
        if cfg.reference:
            if reference is None:
                raise ValueError("this RefDeblur model needs a reference image")
            refs = self._reference_features(blurry, reference)
        d3 = self.dec3(self.merge3(torch.cat([e3, *refs[2:3]], 1)))
        d2 = self.dec2(self.merge2(torch.cat([self.up3(d3), e2, *refs[1:2]], 1)))
        d1 = self.dec1(self.merge1(torch.cat([self.up2(d2), e1, *refs[0:1]], 1)))
        return blurry + self.tail(d1)

    def _reference_features(self, blurry: Tensor, reference: Tensor) -> tuple[Tensor, ...]:
        """R1, R2, R3: the three cascaded REAMs' outputs."""
        n = blurry.shape[0]
        if reference.shape[0] not in (1, n):
            raise ValueError(f"reference batch {reference.shape[0]} does not fit blurry batch {n}")
        h, w = reference.shape[-2:]
        pad_h, pad_w = (-h) % 4, (-w) % 4
        if pad_h or pad_w:
            reference = F.pad(reference, (0, pad_w, 0, pad_h), mode="replicate")
        found = self.match(blurry, reference)
        self.last_match = found
        feats = self.ref_encoder(reference)
        if feats[0].shape[0] != n:
            feats = tuple(f.expand(n, -1, -1, -1) for f in feats)
        hq, wq = blurry.shape[-2] // 4, blurry.shape[-1] // 4
        confidence = found.confidence.to(blurry.dtype)
        fb = self.ream_head(blurry)
        outputs = []
        for level, scale in enumerate((4, 2, 1)):
            if level:
                fb = self.ream_down[level - 1](outputs[-1])
            moved = transfer(feats[level], found.index, (hq, wq), scale)
            outputs.append(self.fuse[level](fb, moved.to(fb.dtype), confidence))
        return tuple(outputs)


SPEC = ArchSpec(
    id="ref_deblur",
    module_cls=RefDeblur,
    config_cls=RefDeblurConfig,
    defaults=ArchDefaults(inputs=2, size_multiple=4, tiling="supported", receptive_radius=64),
    tiny_config={"width": 8, "blocks": 1},
    description="Reference-based deblurring: blur encoder + SFFM, patch matching against a sharp "
                "reference, three REAMs, decoder with global skip.",
)
