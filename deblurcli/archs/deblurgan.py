"""DeblurGAN (Kupyn et al. 2018) and the two variants of Lenka et al. 2019: edge input, feedback.

The generator of ``../shared/specs/models.md`` §3.4, from Kupyn's official code [C]:

- reflect-pad 3 → conv 7×7 C→w → InstanceNorm → ReLU; two conv 3×3 stride-2 downsamplings
  (w→2w→4w, each IN + ReLU);
- ``blocks`` ResBlocks at 4w channels, each ``x + IN(conv(pad(Dropout(ReLU(IN(conv(pad(x))))))))``
  with reflect padding 1 — **two** convs per block, as intended. The official PyTorch ResBlock
  builds only one (a conditional expression swallows the list: 6.07 M parameters instead of
  11.38 M); that bug is not copied;
- two transposed conv 3×3 stride-2 upsamplings (4w→2w→w, output padding 1, IN + ReLU);
  reflect-pad 3 → conv 7×7 w→C → tanh;
- **global residual** ``clamp(tanh(dec) + x, −1, 1)`` on images scaled to [−1, 1]. This module
  takes and returns [0, 1] images and does the scaling itself (``2x − 1`` in, ``(y + 1)/2`` out).

InstanceNorm has no affine parameters; every conv has a bias (as in the official code).

Variants (config switches, one architecture id):

- ``edge_input``: the generator's input gets a 4th channel, the Canny edge map of the **blurred**
  input (the only image there is at test time), computed by the model itself
  (:func:`canny_edges`: grayscale, Gaussian σ 1.4, thresholds 0.1/0.2 of the maximum gradient,
  binary → {−1, 1}); users pass only the photo. Not differentiable (it needs none: it depends on
  the input only). The authors' TF test routine passes the blurred RGB as the "edge" input; not
  copied.
- ``feedback_iterations`` T > 0: a ConvLSTM (3×3 gates, hidden 4w) between the encoder and the
  ResBlocks. The encoder runs once; each iteration feeds the encoder features and the previous
  state ``(h, c)`` to the ConvLSTM, then the ResBlocks and the decoder make that iteration's
  output from ``h``. Weights are shared across iterations; the state starts at zero for every
  image and carries over between iterations. ``forward`` returns the last output;
  :meth:`DeblurGAN.forward_iterations` returns all T. In training mode ``forward`` keeps them, and
  the training loop's hook :meth:`DeblurGAN.training_outputs` hands them over so that the loss is
  the mean over iterations (models.md §3.4 [I]).

A trained generator can be widened without changing what it computes (:func:`widen_state`,
used by ``run.init_grow`` when only ``width`` grows).

The critic (training only) is the shared :class:`deblurcli.train.discriminator.ConditionalPatchGAN`
configured as DeblurGAN's unconditional PatchGAN: ``loss.discriminator = "patchgan70"`` with
``loss.disc_config = {cond_channels = 0, norm = "instance"}`` and ``loss.disc_width = 64``: 4×4
convs 3→64 (stride 2, LeakyReLU 0.2), 128, 256 (stride 2), 512 (stride 1), each IN + LeakyReLU,
then 4×4 → 1 with **no sigmoid** (WGAN-GP, ``loss.gan = "wgan-gp"``, ``loss.critic_steps = 5``;
the lenka98 TF port's sigmoid is not copied). 2.76 M parameters.

Presets (:data:`PRESETS`; counted with ``torch.utils.flop_counter``; GMAC/MP per megapixel of
input at inference; "step" = forward + backward on a batch of 8×128² with the loss on every
iteration's output, as the training loop does; ``bench train``'s "model step" backpropagates from
the last output only, 248 GFLOP for ``cpu`` feedback; the critic is not counted):

===================  ===========================  ==========  =======  ===========
preset               config                       parameters  GMAC/MP  step
===================  ===========================  ==========  =======  ===========
paper                w 64, 9 blocks, dropout 0.5  11.38 M     756      592 GFLOP
paper, edge          + edge_input                 11.38 M     759      594 GFLOP
paper, feedback      + feedback_iterations 4      16.10 M     4065     3195 GFLOP
cpu                  w 24, 6 blocks, no dropout   1.11 M      79.6     61.7 GFLOP
cpu, edge            + edge_input                 1.11 M      80.8     62.3 GFLOP
cpu, feedback        + feedback_iterations 4      1.77 M      458      359 GFLOP
===================  ===========================  ==========  =======  ===========

The parameters are exact: ``paper`` 11 378 179 (models.md's arithmetic), + 3 136 with the edge
channel, + 4 719 616 for the ConvLSTM (4·(512·256·9 + 256)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from deblurcli.archs._registry import ArchDefaults, ArchSpec


@dataclass(frozen=True)
class DeblurGANConfig:
    """Hyper-parameters of :class:`DeblurGAN` (stored as JSON in checkpoints); defaults: paper."""

    in_channels: int = 3
    """Image channels in and out (the edge map, when on, is added inside the model)."""
    width: int = 64
    """Channels at full resolution (ngf); 2× and 4× after the two downsamplings."""
    blocks: int = 9
    """ResBlocks at the bottleneck (two 3×3 convs each)."""
    dropout: float = 0.5
    """Dropout between the two convs of a ResBlock (training only)."""
    edge_input: bool = False
    """Add a Canny edge map of the blurred input as an extra generator input channel."""
    edge_sigma: float = 1.4
    """Gaussian σ of the Canny smoothing."""
    edge_thresholds: tuple[float, float] = (0.1, 0.2)
    """Canny hysteresis thresholds (low, high) as fractions of the image's maximum gradient."""
    feedback_iterations: int = 0
    """0: plain DeblurGAN; T > 0: a ConvLSTM between encoder and decoder, the image iterated T
    times (the paper's feedback variant uses 4)."""

    def __post_init__(self) -> None:
        if min(self.in_channels, self.width) < 1 or self.blocks < 0:
            raise ValueError("in_channels and width must be >= 1, blocks >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        low, high = self.edge_thresholds
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"edge_thresholds must be 0 <= low <= high <= 1, got {low}, {high}")
        if self.edge_sigma <= 0 or self.feedback_iterations < 0:
            raise ValueError("edge_sigma must be > 0 and feedback_iterations >= 0")
        # JSON gives a list back; keep the frozen config hashable and equal to its round trip
        object.__setattr__(self, "edge_thresholds", (float(low), float(high)))


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"width": 24, "blocks": 6, "dropout": 0.0},
}
"""Named configs: ``paper`` (models.md §3.4, Kupyn's options) and ``cpu`` (sized for 2-core
training with ``bench train``). Each combines with ``edge_input`` / ``feedback_iterations``."""

VARIANTS: dict[str, dict[str, Any]] = {
    "deblurgan": {},
    "deblurgan-edge": {"edge_input": True},
    "deblurgan-feedback": {"feedback_iterations": 4},
}
"""The three methods of the family (rows of :data:`deblurcli.methods.METHODS`) as config
switches."""


def preset(name: str, variant: str = "deblurgan", **overrides: Any) -> DeblurGANConfig:
    """The config of preset ``name`` (``paper``/``cpu``) for ``variant``, with ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown DeblurGAN preset {name!r}; known: {', '.join(PRESETS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown DeblurGAN variant {variant!r}; known: {', '.join(VARIANTS)}")
    return DeblurGANConfig(**{**PRESETS[name], **VARIANTS[variant], **overrides})


# ----------------------------------------------------------------------------------------------
# Canny edges, in torch (so they run inside the model on any device)
# ----------------------------------------------------------------------------------------------


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    # reflect needs the pad below the size; replicate covers tiny images
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def canny_edges(
    x: Tensor, sigma: float = 1.4, low: float = 0.1, high: float = 0.2, max_sweeps: int = 0
) -> Tensor:
    """Binary Canny edge map of each image (Canny 1986), without gradients.

    Grayscale (Rec. 601 luma for 3 channels, the mean otherwise), Gaussian smoothing with σ
    ``sigma`` (reflect borders), Sobel gradients, non-maximum suppression along the gradient
    direction quantised to 0°/45°/90°/135°, then hysteresis: pixels above ``high`` × the image's
    maximum gradient magnitude are edges, and pixels above ``low`` × that maximum are edges when
    8-connected to an edge (grown until nothing changes, or for ``max_sweeps`` 3×3 dilations when
    that is > 0; until convergence it is computed on the CPU as the connected components of the
    weak pixels that hold a strong one, the same set in one pass). The maximum is taken as at
    least 10⁻³ (a Sobel response of a unit step is 4), so that an image without contrast has no
    edges.

    Args:
        x: Images in [0, 1].
        sigma: Gaussian σ in pixels.
        low: Weak threshold as a fraction of the per-image maximum gradient magnitude.
        high: Strong threshold, likewise.
        max_sweeps: Cap on hysteresis growth steps (0: until convergence).

    Returns:
        1.0 on edges, 0.0 elsewhere, in ``x``'s dtype.

    Shape:
        - x: :math:`(N, C, H, W)` → :math:`(N, 1, H, W)`.
    """
    with torch.no_grad():
        work = x.detach().float()
        if work.shape[1] == 3:
            luma = work.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            gray = (work * luma).sum(1, keepdim=True)
        else:
            gray = work.mean(1, keepdim=True)
        smooth = _gaussian_blur(gray, sigma)
        sobel = smooth.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        padded = F.pad(smooth, (1, 1, 1, 1), mode="replicate")
        gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
        gy = F.conv2d(padded, sobel.t().reshape(1, 1, 3, 3))
        magnitude = torch.hypot(gx, gy)
        # direction of the gradient, folded to [0, 180) and binned to 0/45/90/135 degrees
        angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
        sector = torch.round(angle / 45.0).long() % 4
        m = F.pad(magnitude, (1, 1, 1, 1))
        h, w = magnitude.shape[-2:]

        def shifted(dy: int, dx: int) -> Tensor:
            return m[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

        # neighbours along the gradient: (dy, dx) for sectors 0°, 45°, 90°, 135° (y points down,
        # so a 45° gradient (gx > 0, gy > 0) runs towards the lower right)
        steps = ((0, 1), (1, 1), (1, 0), (1, -1))
        keep = torch.zeros_like(magnitude, dtype=torch.bool)
        for index, (dy, dx) in enumerate(steps):
            # strict on one side, as OpenCV: a two-pixel plateau keeps one pixel
            local = (magnitude > shifted(-dy, -dx)) & (magnitude >= shifted(dy, dx))
            keep |= local & (sector == index)
        thin = magnitude * keep
        # a floor, so that float rounding on a flat image (no contrast) is no edge
        peak = magnitude.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-3)
        strong = thin > high * peak
        weak = thin > low * peak
        if max_sweeps == 0 and weak.device.type == "cpu":
            return _grow_by_components(strong, weak).to(x.dtype)
        edges = strong
        sweeps = 0
        while True:
            grown = weak & (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0)
            grown |= edges
            sweeps += 1
            if torch.equal(grown, edges) or (max_sweeps and sweeps >= max_sweeps):
                edges = grown
                break
            edges = grown
        return edges.to(x.dtype)


def _grow_by_components(strong: Tensor, weak: Tensor) -> Tensor:
    """Canny hysteresis in one pass: the 8-connected components of ``weak`` that hold a
    ``strong`` pixel (``strong`` ⊆ ``weak``). The same set as growing ``strong`` through
    ``weak`` by 3×3 dilations until nothing changes, without one sweep per pixel of the
    longest edge chain (93 on a 1 MP photo). CPU tensors only (OpenCV's labelling).

    Shape:
        - strong, weak: :math:`(N, 1, H, W)` bool → :math:`(N, 1, H, W)` bool.
    """
    import cv2  # noqa: PLC0415 - a dependency, loaded only where hysteresis runs

    out = torch.zeros_like(weak)
    for index in range(weak.shape[0]):
        weak_u8 = weak[index, 0].to(torch.uint8).numpy()
        count, labels_np = cv2.connectedComponents(weak_u8, connectivity=8, ltype=cv2.CV_32S)
        labels = torch.from_numpy(labels_np).long()
        seeded = torch.zeros(count, dtype=torch.bool)
        seeded[labels[strong[index, 0]]] = True
        seeded[0] = False  # label 0 is the background (not weak)
        out[index, 0] = seeded[labels]
    return out


# ----------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """``x + IN(conv(pad(drop(ReLU(IN(conv(pad(x))))))))``: two 3×3 convs, reflect padding 1."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels)
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvLSTM(nn.Module):
    """Convolutional LSTM cell: all four gates from one 3×3 conv of ``[input, h]``.

    Shape:
        - x: :math:`(N, C, H, W)`; state ``(h, c)``: :math:`(N, C_h, H, W)` each.
    """

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, padding=1)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def _norm_act(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.InstanceNorm2d(channels), nn.ReLU(inplace=True)]


class DeblurGAN(nn.Module):
    """DeblurGAN's ResNet generator, optionally with an edge channel or a feedback ConvLSTM.

    Attributes:
        outputs: After a forward pass in training mode with ``feedback_iterations`` > 0, every
            iteration's output (the last one is what ``forward`` returned); empty otherwise.

    Shape:
        - Input: :math:`(N, C, H, W)`, H and W multiples of 4, values in [0, 1].
        - Output: :math:`(N, C, H, W)`, values in [0, 1] (the global residual is clamped).
    """

    def __init__(self, config: DeblurGANConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config.in_channels, config.width
        c_in = c + (1 if config.edge_input else 0)
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3),
            *_norm_act(nn.Conv2d(c_in, w, 7), w),
            *_norm_act(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), 2 * w),
            *_norm_act(nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), 4 * w),
        )
        self.feedback = ConvLSTM(4 * w, 4 * w) if config.feedback_iterations else None
        self.blocks = nn.Sequential(
            *(ResBlock(4 * w, config.dropout) for _ in range(config.blocks))
        )
        up = {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1}
        self.decoder = nn.Sequential(
            *_norm_act(nn.ConvTranspose2d(4 * w, 2 * w, **up), 2 * w),
            *_norm_act(nn.ConvTranspose2d(2 * w, w, **up), w),
            nn.ReflectionPad2d(3),
            nn.Conv2d(w, c, 7),
            nn.Tanh(),
        )
        self.outputs: list[Tensor] = []

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        return 4

    def generator_input(self, x: Tensor) -> Tensor:
        """The image scaled to [−1, 1], with the Canny map of ``x`` (in {−1, 1}) when
        ``edge_input`` is on.

        Shape:
            - x: :math:`(N, C, H, W)` in [0, 1] → :math:`(N, C (+1), H, W)`.
        """
        scaled = 2 * x - 1
        if not self.config.edge_input:
            return scaled
        low, high = self.config.edge_thresholds
        edges = canny_edges(x, self.config.edge_sigma, low, high)
        return torch.cat([scaled, 2 * edges.to(scaled.dtype) - 1], dim=1)

    def _decode(self, features: Tensor, scaled: Tensor) -> Tensor:
        residual = self.decoder(self.blocks(features))
        return (torch.clamp(residual + scaled, -1.0, 1.0) + 1) / 2

    def init_state(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The zero ConvLSTM state for encoder ``features`` (each image starts from it)."""
        zeros = features.new_zeros(features.shape[0], 4 * self.config.width, *features.shape[-2:])
        return zeros, zeros

    def iterate(
        self, features: Tensor, scaled: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One feedback iteration: ConvLSTM(features, state) → ResBlocks → decoder.

        Args:
            features: Encoder features of the image (the same at every iteration).
            scaled: The image in [−1, 1] (the global residual's base).
            state: ``(h, c)`` of the previous iteration (:meth:`init_state` for the first).

        Returns:
            This iteration's output in [0, 1] and the new state.

        Shape:
            - features: :math:`(N, 4w, H/4, W/4)`; scaled: :math:`(N, C, H, W)`.
        """
        if self.feedback is None:
            raise RuntimeError("iterate needs feedback_iterations > 0")
        h, c = self.feedback(features, state)
        return self._decode(h, scaled), (h, c)

    def forward_iterations(self, x: Tensor) -> list[Tensor]:
        """Every iteration's output, the state carried from one to the next (one output for the
        plain and edge variants).

        Shape:
            - x: :math:`(N, C, H, W)` in [0, 1] → T tensors :math:`(N, C, H, W)` in [0, 1].
        """
        gen_in = self.generator_input(x)
        scaled = gen_in[:, : self.config.in_channels]
        features = self.encoder(gen_in)
        if self.feedback is None:
            return [self._decode(features, scaled)]
        state = self.init_state(features)
        outputs = []
        for _ in range(self.config.feedback_iterations):
            out, state = self.iterate(features, scaled, state)
            outputs.append(out)
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        outputs = self.forward_iterations(x)
        self.outputs = outputs if self.training and self.feedback is not None else []
        return outputs[-1]

    def training_outputs(self) -> list[Tensor]:
        """Training hook: the outputs the loss averages over (called by the loop after
        ``forward``): every feedback iteration's output, or ``[]`` when there is one output."""
        outputs, self.outputs = self.outputs, []
        return outputs


# ----------------------------------------------------------------------------------------------
# Widening a trained generator (run.init_grow)
# ----------------------------------------------------------------------------------------------


def _channel_map(old: int, new: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Which old channel each of ``new`` channels copies, and its share of that channel's
    outgoing weights: the first ``old`` map to themselves, the rest to random old channels;
    the copies of one channel split its outgoing weights in random shares that sum to 1."""
    extra = torch.randint(old, (new - old,), generator=generator)
    source = torch.cat([torch.arange(old), extra])
    draw = 0.5 + torch.rand(new, generator=generator)
    total = torch.zeros(old).index_add_(0, source, draw)
    return source, draw / total[source]


def widen_state(
    weights: dict[str, Tensor],
    old_config: dict[str, Any],
    new_config: dict[str, Any],
    *,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Net2WiderNet for the generator: the weights of a ``width`` w model as a wider one (w′ ≥ w,
    every other config field equal) that computes the same function.

    Every new channel copies an existing one (its incoming weights and bias); the layers that
    read the copies divide the original's outgoing weights among them in random shares. Each
    copy is normalised by InstanceNorm (no affine parameters) to exactly the original's values,
    so the output is unchanged up to float rounding, and the unequal shares give the copies
    different gradients, so training separates them. The ResBlock trunk keeps one channel map
    for its residual stream (the encoder's output, every block's second conv and the decoder's
    input) and one per block inside it.

    Args:
        weights: A state dict of ``DeblurGAN(old_config)`` (e.g. a shipped checkpoint).
        old_config: Its config (plain JSON values).
        new_config: The wider config.
        seed: Seeds the channel maps (the same seed maps a model's weights and its EMA alike).

    Returns:
        A state dict for ``DeblurGAN(new_config)``; ``weights`` unchanged when the configs are
        equal or differ in anything but a larger ``width`` (the caller's shape check decides).

    Raises:
        ValueError: widening a feedback model (its ConvLSTM gates are not mapped).
    """
    old, new = DeblurGANConfig(**old_config), DeblurGANConfig(**new_config)
    if new.width <= old.width or old != DeblurGANConfig(**{**new_config, "width": old.width}):
        return weights
    if old.feedback_iterations:
        raise ValueError("widening a feedback DeblurGAN is not supported (its ConvLSTM gates)")
    generator = torch.Generator().manual_seed(seed)
    out = dict(weights)

    def maps(scale: int) -> tuple[Tensor, Tensor]:
        return _channel_map(scale * old.width, scale * new.width, generator)

    def produce(name: str, source: Tensor, *, transposed: bool = False) -> None:
        dim = 1 if transposed else 0
        out[f"{name}.weight"] = out[f"{name}.weight"].index_select(dim, source)
        out[f"{name}.bias"] = out[f"{name}.bias"][source]

    def consume(name: str, source: Tensor, share: Tensor, *, transposed: bool = False) -> None:
        dim = 0 if transposed else 1
        shape = [1, 1, 1, 1]
        shape[dim] = -1
        taken = out[f"{name}.weight"].index_select(dim, source)
        out[f"{name}.weight"] = taken * share.view(shape).to(taken.dtype)

    # encoder: conv 7x7 (C->w) . conv (w->2w) . conv (2w->4w) = the residual stream
    w1, w2, stream = maps(1), maps(2), maps(4)
    produce("encoder.1", w1[0])
    consume("encoder.4", *w1)
    produce("encoder.4", w2[0])
    consume("encoder.7", *w2)
    produce("encoder.7", stream[0])
    # the two convs of a ResBlock (their index in its body depends on the dropout layer)
    conv_a, conv_b = (i for i, layer in enumerate(ResBlock(1, old.dropout).body)
                      if isinstance(layer, nn.Conv2d))
    for index in range(old.blocks):
        inner = maps(4)
        consume(f"blocks.{index}.body.{conv_a}", *stream)
        produce(f"blocks.{index}.body.{conv_a}", inner[0])
        consume(f"blocks.{index}.body.{conv_b}", *inner)
        produce(f"blocks.{index}.body.{conv_b}", stream[0])
    # decoder: convT (4w->2w) . convT (2w->w) . conv 7x7 (w->C)
    d2, d1 = maps(2), maps(1)
    consume("decoder.0", *stream, transposed=True)
    produce("decoder.0", d2[0], transposed=True)
    consume("decoder.3", *d2, transposed=True)
    produce("decoder.3", d1[0], transposed=True)
    consume("decoder.7", *d1)
    return out


SPEC = ArchSpec(
    id="deblurgan",
    module_cls=DeblurGAN,
    config_cls=DeblurGANConfig,
    # InstanceNorm and the per-image Canny maximum are whole-image statistics: tiles differ
    defaults=ArchDefaults(size_multiple=4, tiling="discouraged", receptive_radius=64),
    tiny_config={"width": 4, "blocks": 1},
    description="DeblurGAN ResNet generator (+ Canny edge input or feedback ConvLSTM variants).",
    grow_state=widen_state,
)
