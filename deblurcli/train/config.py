"""Training configuration: a typed dataclass tree loaded from TOML, plus ``--set a.b=value``.

Every section is a plain dataclass whose fields are the only keys accepted. A key that does not
exist, a value of the wrong type, or an architecture config the architecture rejects fails in
:func:`load_config`, before any data is read. ``model.config`` is validated by building the
architecture's own config dataclass (``archs.get_spec(arch).make_config``).

Override values are parsed as TOML literals (``3``, ``1e-4``, ``true``, ``["motion"]``,
``"text"``); anything that is not a valid TOML literal is taken as a bare string, so
``--set data.sharp=../shared/data/sharp_train`` works without quotes.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from deblurcli import methods
from deblurcli.errors import UsageError


class ConfigError(UsageError):
    """The training configuration has an unknown key, a badly typed value or an invalid choice."""


SET_FORM = "SECTION.KEY=VALUE, e.g. optim.lr=1e-4"
"""What ``--set`` expects, as its error messages say it."""


@dataclass
class RunConfig:
    """How long, where and how reproducibly to train."""

    steps: int = 1000
    """Optimiser steps in total (a resumed run continues up to this number)."""
    seed: int = 0
    """Seeds model init, the data stream and the per-step torch generator."""
    device: str = "auto"
    """``auto`` (cuda if available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU, where training stays fp32)."""
    num_threads: int = 0
    """torch intra-op threads in the training process; 0 leaves torch's default."""
    channels_last: bool = True
    """Keep activations in NHWC (``channels_last``): 1.4× faster convolutions on CPU."""
    cpu_bf16: bool = False
    """bf16 autocast on the CPU too (faster for some models with AVX512-BF16, slower for others);
    ignored, with a warning, on a CPU without native bf16 kernels (AVX2): ~13× slower there."""
    init: str = ""
    """Warm start: ``NAME@TAG``, a run folder or a ``.safetensors`` file whose weights (and EMA)
    start this run; its sha256 and cumulative steps/hours become the run's lineage."""
    init_grow: bool = False
    """Let ``init`` come from the same architecture with another config (e.g. a plain U-net
    grown into ``multi_scale``): tensors of equal name and shape are loaded, tensors the run's
    model adds keep their initialisation; any other mismatch is an error."""
    log_every: int = 10
    """Steps between JSONL log lines (the training loss is averaged over them)."""
    val_every: int = 200
    """Steps between validation passes (and at the end); 0 disables validation."""
    minutes: float = 0.0
    """Wall-clock budget of this session in minutes (0: none), e.g. a leased GPU's time. The
    schedule then advances by the larger of step / ``steps`` and elapsed / budget, and the run
    ends, validated and checkpointed, when the budget is spent even if ``steps`` is not reached.
    ``--resume`` starts a new budget: its schedule goes on from the step-based progress, so
    with ``steps`` far out of reach it starts again from the full learning rate."""


@dataclass
class DataConfig:
    """Where training pairs come from and how they are degraded."""

    kind: Literal["synthetic", "pack", "paired", "gopro", "frames"] = "synthetic"
    """``synthetic``: blur sharp images on the fly; ``pack``: read pre-degraded pairs from
    ``data.pack`` (``deblurcli train pack``); ``paired``: blurred/ and sharp/ folders with
    matching names; ``gopro``: ``SEQ/blur`` + ``SEQ/sharp``; ``frames``: average sharp frames."""
    pack: str = ""
    """A pair pack written by ``deblurcli train pack CONFIG`` (``kind = "pack"``)."""
    pack_count: int = 8000
    """Pairs ``train pack`` precomputes (each is seen many times, flipped, rotated, shifted)."""
    pack_size: int = 0
    """Side of the packed pairs (0: ``crop + 16``, so training crops shift inside them)."""
    frames_root: str = ""
    """Folder(s) of consecutive sharp frames mixed into synthetic pairs by frame averaging."""
    frames_prob: float = 0.0
    """Fraction of synthetic/packed pairs made by averaging 7–13 frames of ``frames_root``."""
    sharp: str = "../shared/data/sharp_train"
    """Sharp images (synthetic: a folder searched recursively, or a ``train pack`` file;
    paired: the sharp folder)."""
    blurred: str = ""
    """Blurred folder (``paired``)."""
    root: str = ""
    """Dataset root (``gopro``: holds ``SEQ/blur``, ``SEQ/sharp``; ``frames``: sequence folders
    of consecutive frames, or one such folder)."""
    crop: int = 128
    """Square training crop side (a multiple of the model's size multiple)."""
    batch_size: int = 8
    """Crops per step and process."""
    workers: int = 2
    """Data-loader worker processes (0: load in the training process)."""
    flips: bool = True
    """Random horizontal/vertical flips and 90° rotations."""
    kernel_kinds: list[str] = field(default_factory=lambda: ["motion", "gaussian", "defocus"])
    """Blur kernel families for synthetic pairs."""
    kernel_weights: list[float] = field(default_factory=list)
    """Relative weights of ``kernel_kinds`` (empty: uniform)."""
    kernel_size: int = 21
    """Odd kernel canvas side (the largest blur) for synthetic pairs."""
    kernel_min: int = 5
    """Odd smallest kernel canvas; sizes are drawn uniformly in [kernel_min, kernel_size]."""
    varying_prob: float = 0.0
    """Probability of spatially varying camera shake (rotation + translation trajectory)."""
    object_prob: float = 0.0
    """Probability of a moving object over the camera-blurred background."""
    clip_prob: float = 0.0
    """Probability of brightened highlights that clip after the blur."""
    linear_light: bool = False
    """Blur in linear light (gamma 2.2) as a sensor does."""
    srgb_blur_prob: float = 0.0
    """With ``linear_light``: the share of pairs blurred in their sRGB values instead."""
    resample_prob: float = 0.0
    """Share of pairs whose blur is a loss of resolution (City100-like lens/resolution blur)."""
    resample_range: list[float] = field(default_factory=lambda: [1.5, 3.5])
    """Reduction factor of that resolution loss, [low, high]."""
    sharpen_prob: float = 0.0
    """Probability of in-camera sharpening (unsharp mask) of the blurry image."""
    deconvolve_prob: float = 0.0
    """Share of pairs whose input is the blurry image restored with an imperfect kernel (a
    network that finishes blind deconvolution; :func:`deblurcli.degrade.imperfect_kernel`)."""
    kernel_error_max: float = 1.0
    """Largest strength of those kernel errors (each pair draws U(0, max))."""
    deconvolve_guide: bool = False
    """Restored pairs also carry their guide (:func:`deblurcli.degrade.restoration_guide`: the
    observed photo and the restoration blurred again), for a model with ``guide_channels``."""
    noise_max: float = 0.02
    """Read-noise sigma drawn from U(0, noise_max) (on [0, 1])."""
    shot_noise_max: float = 0.0
    """Shot-noise variance gain drawn from U(0, shot_noise_max) (signal-dependent noise)."""
    jpeg_prob: float = 0.3
    """Probability of a JPEG round-trip after blur and noise."""
    jpeg_quality: list[int] = field(default_factory=lambda: [40, 95])
    """JPEG quality range [low, high]."""
    frames: list[int] = field(default_factory=lambda: [7, 13])
    """Frames averaged per GoPro-style pair, [low, high] (odd counts; the centre is sharp)."""
    reference: bool = False
    """Triplets for reference-based models (``deblur-ref``): ``frames`` adds a sharp frame of the
    same sequence ``reference_distance`` frames away; ``synthetic`` adds another view of the same
    photo (:func:`deblurcli.train.data.reference_view`) and, with ``frames_root``, makes a
    ``frames_prob`` fraction of the samples frame triplets (``frames`` frames averaged)."""
    reference_distance: list[int] = field(default_factory=lambda: [8, 24])
    """Distance in frames between the sharp centre and the reference, [low, high]."""
    frames_held_back: int = 0
    """Frame triplets (``frames`` kind, ``reference`` mixing) never use the last this many frames
    of a sequence, which stay for evaluation (``scripts/eval_ref.py``)."""


@dataclass
class ValConfig:
    """The validation set: fixed across runs (a fixed seed, sorted files, centre crops)."""

    kind: Literal["synthetic", "paired", "none"] = "synthetic"
    """``synthetic``: blur ``sharp`` images with ``seed``; ``paired``: read blurred/sharp pairs."""
    sharp: str = "../shared/data/sharp_val"
    """Sharp images (synthetic) or the sharp folder (paired)."""
    blurred: str = ""
    """Blurred folder (paired); empty: pairs ``X`` / ``X_gt`` inside ``sharp``."""
    count: int = 16
    """Images used (the first ones in sorted order)."""
    crop: int = 192
    """Centre-crop side."""
    seed: int = 1234
    """Seed of the synthetic degradations (the same set every run)."""
    kernel_size: int = 21
    """Kernel canvas of the synthetic validation blurs (all three kinds, noise sigma <= 0.01)."""
    deconvolve: bool = False
    """Synthetic inputs are restorations with imperfect kernels, as ``data.deconvolve_prob``
    makes them (validation of a network that finishes blind deconvolution)."""


@dataclass
class ModelConfig:
    """The generator: a registered architecture and its config."""

    arch: str = "residual_unet"
    config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the architecture's config dataclass."""
    ema_decay: float = 0.999
    """Exponential moving average of the weights (0 disables EMA)."""
    descriptor_weights: str = ""
    """safetensors file of a frozen matching descriptor (``ref_deblur`` with
    ``descriptor = "vgg19"``: VGG19 conv1_1 … conv3_1); stored in the checkpoints afterwards."""


@dataclass
class OptimConfig:
    """Optimiser of the generator (and of the discriminator when a GAN loss is on)."""

    name: Literal["adamw", "adam"] = "adamw"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    """Clip the global gradient norm to this (0: off)."""
    disc_lr: float = 1e-4


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warm-up, then cosine or multistep decay."""

    kind: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    """Cosine floor as a fraction of ``optim.lr``."""
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.85, 0.95])
    """Multistep: fractions of ``run.steps`` where the lr is multiplied by ``gamma``."""
    gamma: float = 0.5


@dataclass
class LossConfig:
    """Weights of the loss terms (0 disables a term)."""

    l1: float = 0.0
    mse: float = 0.0
    charbonnier: float = 1.0
    charbonnier_eps: float = 1e-3
    ssim: float = 0.0
    fft: float = 0.0
    latent_l1: float = 0.0
    """Sparsity of latents, for models that expose ``model.latents`` after a forward pass."""
    latent_guidance: float = 0.0
    """Latent matching returned by a model's ``training_terms(sharp)`` hook (UML-IN: the sharp
    branch guides the blur branch level by level, ``Σ_l mean (z^B_l − z^S_l)²``)."""
    coarse_scales: float = 0.0
    """L1 of a multi-scale model's coarse predictions against the pooled sharp image, returned
    by its ``training_terms(sharp)`` hook (``residual_unet`` with ``multi_scale``)."""
    perceptual: float = 0.0
    perceptual_weights: str = ""
    """safetensors file of the feature network; without it the term is skipped with a warning."""
    gan: Literal["none", "vanilla", "lsgan", "wgan-gp", "ragan"] = "none"
    gan_weight: float = 0.01
    gan_start: int = 0
    """Step at which the adversarial term (and discriminator training) starts."""
    gp_weight: float = 10.0
    """Gradient-penalty weight (``wgan-gp``)."""
    disc_width: int = 32
    discriminator: Literal["patch", "patchgan70"] = "patch"
    """``patch``: a small unconditional PatchGAN; ``patchgan70``: the conditional 70×70 PatchGAN
    of the GAN paper (judges ``[blurry, image]``; ``deblurcli.train.discriminator``)."""
    disc_config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``patchgan70`` (``spectral_norm``, ``attention``, ``norm``, ``head``,
    ``norm_first``, ``strided``, ``cond_channels``: 0 for unconditional)."""
    perceptual_layer: Literal["taps", "conv3_3", "relu3_3"] = "taps"
    """``taps``: L1 over relu1_2, relu2_2 and relu3_4; ``conv3_3`` / ``relu3_3``: the MSE of that
    one VGG19 layer (DeblurGAN compares conv3_3, the GAN paper's Keras code relu3_3)."""
    critic_steps: int = 1
    """Discriminator (critic) steps per generator step once the GAN is on (DeblurGAN's
    WGAN-GP: 5), each on the same batch."""
    perceptual_fallback: Literal["none", "l1"] = "none"
    """``l1``: when ``perceptual`` is on but ``perceptual_weights`` is empty, add its weight to
    ``l1`` instead (with a warning), as the GAN paper's recipes do without VGG19 weights."""


@dataclass
class CheckpointConfig:
    """When training state is written, and how many snapshots are kept."""

    every: int = 500
    """Steps between checkpoints (one is always written at the end)."""
    keep_last: int = 3


@dataclass
class TrainConfig:
    """The whole training configuration."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return dataclasses.asdict(self)


def _valid(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` coerced to ``hint`` (int→float only), or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _check_value(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {hint}")
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return value
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected nothing, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _fill(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)} in {where}; "
            f"valid: {', '.join(_valid(cls))}"
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a table, got {value!r}")
            kwargs[name] = _fill(hint, value, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _check_value(prefix + name, value, hint)
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """Parse an override value as a TOML literal, falling back to the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (a copy); keys are checked later.

    Items are split by the package's one ``KEY=VALUE`` parser
    (:func:`deblurcli.methods.split_key_value`); values are TOML literals (:func:`parse_value`).
    """
    result = json.loads(json.dumps(values))
    for item in overrides:
        try:
            key, text = methods.split_key_value(item, flag="--set", form=SET_FORM)
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is a value, not a section")
            node = child
        node[leaf] = parse_value(text.strip())
    return result


def recipe_of(data: DataConfig) -> Any:
    """The :class:`deblurcli.degrade.Recipe` that ``[data]`` describes for synthetic pairs."""
    from deblurcli.degrade import Recipe

    return Recipe(
        kinds=tuple(data.kernel_kinds),
        kind_weights=tuple(data.kernel_weights),
        size_range=(min(data.kernel_min, data.kernel_size), data.kernel_size),
        varying_prob=data.varying_prob,
        object_prob=data.object_prob,
        clip_prob=data.clip_prob,
        linear_light=data.linear_light,
        srgb_blur_prob=data.srgb_blur_prob,
        noise_range=(0.0, data.noise_max),
        shot_noise_max=data.shot_noise_max,
        jpeg_prob=data.jpeg_prob,
        jpeg_quality=(data.jpeg_quality[0], data.jpeg_quality[1]),
        resample_prob=data.resample_prob,
        resample_range=tuple(float(v) for v in data.resample_range),
        sharpen_prob=data.sharpen_prob,
        deconvolve_prob=data.deconvolve_prob,
        kernel_error_max=data.kernel_error_max,
        deconvolve_guide=data.deconvolve_guide,
    )


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig (architecture config and value ranges included)."""
    cfg: TrainConfig = _fill(TrainConfig, values, "")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that do not need any data."""
    from deblurcli import archs

    try:
        spec = archs.get_spec(cfg.model.arch)
        arch_config = spec.make_config(cfg.model.config)
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc.args[0] if exc.args else exc}") from None
    for name, hint in typing.get_type_hints(type(arch_config)).items():
        _check_value(f"model.config.{name}", getattr(arch_config, name), hint)
    multiple = int(getattr(spec.module_cls(arch_config), "size_multiple", 1))
    multiple = max(multiple, spec.defaults.size_multiple)
    problems = []
    if cfg.data.crop % multiple or cfg.data.crop <= 0:
        problems.append(f"data.crop={cfg.data.crop} must be a positive multiple of {multiple}")
    if cfg.val.kind != "none" and cfg.val.crop % multiple:
        problems.append(f"val.crop={cfg.val.crop} must be a multiple of {multiple}")
    for section, size in (("data", cfg.data.kernel_size), ("val", cfg.val.kernel_size)):
        if size < 5 or size % 2 == 0:
            problems.append(f"{section}.kernel_size={size} must be odd and at least 5")
    try:
        recipe_of(cfg.data).check()
    except ValueError as exc:
        problems.append(f"data: {exc}")
    if cfg.data.kind == "pack" and not cfg.data.pack:
        problems.append("data.kind = 'pack' needs data.pack (a file from `deblurcli train pack`)")
    guide_channels = int(getattr(arch_config, "guide_channels", 0) or 0)
    if guide_channels and not (cfg.data.deconvolve_guide and cfg.data.deconvolve_prob == 1.0
                               and cfg.data.frames_prob == 0.0
                               and cfg.data.kind in ("pack", "synthetic")):
        problems.append(
            f"model.config.guide_channels={guide_channels} needs every training pair to carry a "
            "guide: data.kind 'pack' or 'synthetic' with data.deconvolve_guide = true, "
            "data.deconvolve_prob = 1 and data.frames_prob = 0")
    if cfg.data.deconvolve_guide and not guide_channels:
        problems.append("data.deconvolve_guide = true needs a model with guide_channels")
    ranges = {
        "data.jpeg_quality": cfg.data.jpeg_quality,
        "data.frames": cfg.data.frames,
        "data.reference_distance": cfg.data.reference_distance,
    }
    for key, pair in ranges.items():
        if len(pair) != 2 or pair[0] > pair[1] or pair[0] < 1:
            problems.append(f"{key}={pair} must be [low, high] with 1 <= low <= high")
    if len(cfg.optim.betas) != 2:
        problems.append("optim.betas must have two values")
    if cfg.run.steps < 1 or cfg.data.batch_size < 1 or cfg.checkpoint.every < 1:
        problems.append("run.steps, data.batch_size and checkpoint.every must be >= 1")
    if not 0.0 <= cfg.model.ema_decay < 1.0:
        problems.append("model.ema_decay must be in [0, 1)")
    vgg_descriptor = getattr(arch_config, "descriptor", None) == "vgg19"
    if vgg_descriptor and not cfg.model.descriptor_weights:
        problems.append("model.config.descriptor = 'vgg19' needs model.descriptor_weights (a "
                        "safetensors file of VGG19 weights; nothing is downloaded)")
    if cfg.model.descriptor_weights and not vgg_descriptor:
        problems.append("model.descriptor_weights applies to descriptor = 'vgg19' only")
    if cfg.loss.critic_steps < 1:
        problems.append("loss.critic_steps must be >= 1")
    if cfg.loss.gan != "none" or cfg.loss.disc_config:
        from deblurcli.train.discriminator import build_discriminator

        try:
            build_discriminator(cfg.loss.discriminator, 3, 1, cfg.loss.disc_config)
        except (ValueError, TypeError) as exc:
            problems.append(f"loss: {exc}")
    if problems:
        raise ConfigError("; ".join(problems))


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML file (or start from defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: unreadable TOML, unknown keys, wrong types, invalid architecture config.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: a config must be UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(apply_overrides(values, overrides or []))


def diff(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and k != "config":
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
