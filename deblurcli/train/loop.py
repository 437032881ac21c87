"""One plain training loop: ``fit(cfg, run_dir)``.

Per step: the generator's forward pass (bf16 autocast on CUDA when ``run.amp``), the weighted
pixel losses plus an optional adversarial term, a clipped optimiser step with a warm-up +
cosine/multistep learning rate, an EMA update, then optionally ``loss.critic_steps``
discriminator steps on the same batch. Every
``run.log_every`` steps a JSON line goes to ``RUN/log.jsonl``; every ``run.val_every`` steps the
model and its EMA are scored (PSNR/SSIM) on the fixed validation set; every
``checkpoint.every`` steps (and at the end) the full state is saved (:mod:`.checkpointing`).

Reproducibility: the data stream is a function of (seed, sample index) (:mod:`.data`), the global
torch generator is re-seeded from (seed, step, rank) at every step, and the learning rate is a
function of the step, so ``fit(..., resume=True)`` after a kill continues bit-for-bit.

Distributed: when started by ``torchrun`` (``WORLD_SIZE`` > 1) the generator is wrapped in
DistributedDataParallel (NCCL on CUDA, gloo on CPU); each rank draws its own samples; only rank 0
logs, validates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deblurcli import archs
from deblurcli._atomic import atomic_write_bytes
from deblurcli.engine.device import cpu_bf16_is_native, cpu_capability
from deblurcli.engine.info import ModelInfo
from deblurcli.errors import UsageError
from deblurcli.train import checkpointing, data, losses
from deblurcli.train.config import ConfigError, TrainConfig, config_from_dict, diff
from deblurcli.train.discriminator import judge

logger = logging.getLogger(__name__)

RESUME_MAY_CHANGE = {
    "run.log_every",
    "run.val_every",
    "run.num_threads",
    "run.init",
    "run.steps",
    "data.workers",
    "checkpoint.every",
    "checkpoint.keep_last",
}
"""Config keys that may differ when resuming (they do not change the computation done so far)."""


@dataclass
class StepInfo:
    """What ``on_step`` receives: after a log interval (``kind="train"``) or a validation."""

    kind: str
    step: int
    total: int
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    """Summary of a finished ``fit``."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    wall_seconds: float
    val: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = None
    """The trained generator (this process's copy, unwrapped from DDP)."""


def pixel_objective(cfg: TrainConfig) -> losses.PixelObjective:
    """The weighted pixel (and model-term) objective of ``[loss]``."""
    lc = cfg.loss
    return losses.PixelObjective(
        l1=lc.l1,
        mse=lc.mse,
        charbonnier=lc.charbonnier,
        charbonnier_eps=lc.charbonnier_eps,
        ssim=lc.ssim,
        fft=lc.fft,
        latent_l1=lc.latent_l1,
        latent_guidance=lc.latent_guidance,
        coarse_scales=lc.coarse_scales,
        perceptual=lc.perceptual,
        perceptual_weights=lc.perceptual_weights,
        perceptual_fallback=lc.perceptual_fallback,
        perceptual_layer=lc.perceptual_layer,
    )


def iteration_objective(
    criterion: losses.PixelObjective,
    module: nn.Module,
    out: torch.Tensor,
    sharp: torch.Tensor,
    terms: dict[str, torch.Tensor] | None,
) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """The pixel objective, averaged over a model's iterations.

    A model with a ``training_outputs()`` hook (DeblurGAN's feedback variant) returns every
    iteration's output after ``forward``; the loss and its logged parts are their means. Other
    models give ``[out]``.

    Returns:
        ``(outputs, loss, parts)``.
    """
    hook = getattr(module, "training_outputs", None)
    outputs = (hook() if hook is not None else None) or [out]
    latents = getattr(module, "latents", None)
    results = [criterion(o.float(), sharp, latents, terms) for o in outputs]
    if len(results) == 1:
        return outputs, *results[0]
    loss = torch.stack([r[0] for r in results]).mean()
    parts = {k: torch.stack([r[1][k] for r in results]).mean() for k in results[0][1]}
    return outputs, loss, parts


def lr_factor(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning-rate multiplier for the optimiser step with index ``step`` (0-based).

    ``time_fraction`` is the spent share of ``run.minutes`` (0 without a budget): the schedule
    after warm-up follows whichever of steps and time is further along.
    """
    s, total = cfg.schedule, cfg.run.steps
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    if s.kind == "constant":
        return 1.0
    if s.kind == "cosine":
        progress = min(1.0, max(time_fraction,
                                (step - s.warmup_steps) / max(1, total - s.warmup_steps)))
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return s.gamma ** sum(step >= m * total or time_fraction >= m for m in s.milestones)


def command_line(argv: list[str]) -> str:
    """The command as typed: ``python -m deblurcli …`` when run as a module."""
    program = Path(argv[0]).name if argv else "python"
    program = "python -m deblurcli" if program == "__main__.py" else program
    return shlex.join([program, *argv[1:]]).replace("'python -m deblurcli'", "python -m deblurcli")


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, 3, step, rank]).generate_state(1)[0])


def _init_distributed(device_name: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, device, whether we created the process group)."""
    from deblurcli.engine.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if device.type == "mps":
        device = torch.device("cpu") if device_name == "auto" else device
    if world <= 1:
        return 0, 1, device, False
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, created


def hardware(device: torch.device, world: int) -> dict[str, Any]:
    """A short description of where training ran."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    found = {
        "device": str(device),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "world_size": world,
    }
    if device.type == "cpu":
        found["cpu_capability"] = cpu_capability()
        found["cpu_bf16_native"] = cpu_bf16_is_native()
    if device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(device)
    return found


@torch.no_grad()
def evaluate(
    model: nn.Module, val: data.ValSet, device: torch.device, batch: int = 4
) -> dict[str, float]:
    """Mean PSNR and SSIM of ``model``'s clamped outputs on the validation set."""
    from deblurcli.metrics import psnr, ssim

    was_training = model.training
    model.eval()
    scores: list[torch.Tensor] = []
    for i in range(0, len(val.names), batch):
        inputs = [val.blurry[i : i + batch].to(device)]
        if val.guide is not None and getattr(getattr(model, "config", None), "guide_channels", 0):
            inputs = [torch.cat([inputs[0], val.guide[i : i + batch].to(device)], dim=1)]
        if val.reference is not None and getattr(model, "inputs", 1) == 2:
            inputs.append(val.reference[i : i + batch].to(device))  # reference-based models
        out = model(*inputs).float().clamp(0, 1).cpu()
        target = val.sharp[i : i + batch]
        scores.append(torch.stack([psnr(out, target), ssim(out, target)], dim=1))
    model.train(was_training)
    mean = torch.cat(scores).mean(0)
    return {"psnr": float(mean[0]), "ssim": float(mean[1])}


def input_scores(val: data.ValSet) -> dict[str, float]:
    """PSNR/SSIM of the blurry inputs themselves (what the model must beat)."""
    return evaluate(nn.Identity(), val, torch.device("cpu"))


class _Log:
    """Append-only JSONL writer (rank 0); on resume, lines after the checkpoint are dropped."""

    def __init__(self, path: Path, enabled: bool, keep_until: int | None) -> None:
        self.path, self.enabled = path, enabled
        if enabled and keep_until is not None and path.exists():
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", 0) <= keep_until:
                        kept.append(line)
            atomic_write_bytes(path, "".join(k + "\n" for k in kept).encode())  # once
        self.handle = open(path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _load_descriptor(model: nn.Module, path: str) -> None:
    """Load ``model.descriptor_weights`` into the model; any problem is a ConfigError naming it."""
    from safetensors.torch import load_file

    try:
        model.load_descriptor(load_file(path))  # type: ignore[operator]
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"model.descriptor_weights {path}: {exc}") from None


@dataclass
class WarmStart:
    """Weights a run starts from (``run.init``) and the lineage they carry."""

    weights: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    lineage: dict[str, Any]


def load_warm_start(ref: str, cfg: TrainConfig) -> WarmStart:
    """Resolve ``run.init`` (``NAME@TAG``, a run folder or a ``.safetensors`` file).

    The architecture and its config must equal the run's, unless ``run.init_grow``: then an
    architecture's ``grow_state`` (e.g. DeblurGAN's function-preserving widening) maps the
    weights onto the run's config, and tensors still missing keep their initialisation. A run
    folder gives its newest checkpoint's raw weights and EMA; an exported file gives its (EMA)
    weights for both.

    Raises:
        ConfigError: the source does not exist or holds another architecture or config.
    """
    from safetensors.torch import load_file

    from deblurcli.engine.checkpoint import read_metadata, sha256_file

    folder = Path(ref)
    if folder.is_dir():
        latest = checkpointing.latest_checkpoint(folder)
        if latest is None:
            raise ConfigError(f"run.init: {folder} holds no checkpoint")
        saved = config_from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        arch = saved.model.arch
        config = archs.full_config(arch, saved.model.config)
        weights = load_file(str(latest / "model.safetensors"))
        ema_file = latest / "ema.safetensors"
        ema = load_file(str(ema_file)) if ema_file.is_file() else None
        state = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        scalars = state.get("scalars", {})
        parent = _parent_lineage(folder / "run.json")
        lineage = {
            "init": str(folder),
            "parent_sha256": sha256_file(latest / "model.safetensors"),
            "parent_steps": int(state["step"]) + int(parent.get("cumulative_steps", 0)),
            "parent_cpu_hours": float(scalars.get("cpu_seconds", 0.0)) / 3600
            + float(parent.get("cumulative_cpu_hours", 0.0)),
        }
    else:
        from deblurcli.engine.zoo import resolve
        from deblurcli.errors import DeblurError

        try:
            path = resolve(ref, offline=True).path
        except DeblurError as exc:
            raise ConfigError(f"run.init: {exc}") from None
        meta = read_metadata(path)
        arch, config = meta["arch"], json.loads(meta.get("config", "{}"))
        if arch == cfg.model.arch:
            # keys the architecture gained since the file was written take their defaults; a
            # key it no longer has leaves the config as written (run.init_grow may still load it)
            with contextlib.suppress(ValueError):
                config = archs.full_config(arch, config)
        weights = load_file(str(path))
        ema = None
        summary = json.loads(meta.get("train", "{}"))
        lineage_before = summary.get("lineage", {})
        lineage = {
            "init": ref,
            "parent_sha256": sha256_file(path),
            "parent_steps": int(lineage_before.get("cumulative_steps", summary.get("steps", 0))),
            "parent_cpu_hours": float(
                lineage_before.get("cumulative_cpu_hours", summary.get("cpu_hours", 0.0))
            ),
        }
    wanted = archs.full_config(cfg.model.arch, cfg.model.config)
    if arch != cfg.model.arch or (config != wanted and not cfg.run.init_grow):
        raise ConfigError(
            f"run.init: {ref} is {arch} {config}, the run trains {cfg.model.arch} {wanted}"
            + ("" if arch != cfg.model.arch else " (run.init_grow=true loads what matches)")
        )
    if config != wanted:
        lineage["grown_from"] = config
        grow = archs.get_spec(arch).grow_state
        if grow is not None:
            weights = grow(weights, config, wanted)
            ema = None if ema is None else grow(ema, config, wanted)
    return WarmStart(weights, ema, lineage)


def load_grown(
    model: nn.Module, weights: dict[str, torch.Tensor], *, allow_new: bool
) -> list[str]:
    """Load a warm start into the model; with ``allow_new`` (``run.init_grow``) the model may
    hold tensors the warm start lacks.

    Returns:
        The names of the model's tensors the warm start did not hold (they keep their
        initialisation).

    Raises:
        ConfigError: the warm start holds a tensor the model lacks or one of another shape, or
            (without ``allow_new``) lacks one of the model's.
    """
    own = model.state_dict()
    foreign = sorted(k for k in weights if k not in own)
    reshaped = sorted(k for k in weights if k in own and weights[k].shape != own[k].shape)
    added = sorted(k for k in own if k not in weights)
    if foreign or reshaped or (added and not allow_new):
        raise ConfigError(
            "run.init: the warm start does not fit the model "
            f"(unknown tensors: {foreign[:3]}, other shapes: {reshaped[:3]}, "
            f"missing: {added[:3]})"
        )
    model.load_state_dict(weights, strict=False)
    return added


def _parent_lineage(run_json: Path) -> dict[str, Any]:
    """Cumulative steps/CPU hours before a run's own (from its first session's warm start)."""
    if not run_json.is_file():
        return {}
    sessions = json.loads(run_json.read_text(encoding="utf-8")).get("sessions", [])
    init = sessions[0].get("init") if sessions else None
    if not init:
        return {}
    return {
        "cumulative_steps": init["parent_steps"],
        "cumulative_cpu_hours": init["parent_cpu_hours"],
    }


def _prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool, rank: int) -> Path | None:
    """Check the run folder against ``resume``; return the checkpoint to resume from."""
    latest = checkpointing.latest_checkpoint(run_dir)
    if latest is not None and not resume:
        raise UsageError(
            f"{run_dir} already holds checkpoints; pass --resume to continue it, "
            "or choose another --run-dir"
        )
    saved = run_dir / "config.json"
    if resume and latest is not None and saved.is_file():
        previous = config_from_dict(json.loads(saved.read_text(encoding="utf-8")))
        changed = [k for k in diff(previous, cfg) if k not in RESUME_MAY_CHANGE]
        if changed:
            raise ConfigError(
                f"cannot resume {run_dir}: the config differs in {', '.join(changed)} "
                f"(only {', '.join(sorted(RESUME_MAY_CHANGE))} may change)"
            )
        if previous.run.steps != cfg.run.steps:
            logger.warning(
                "run.steps changed from %d to %d: the lr schedule changes from here on",
                previous.run.steps,
                cfg.run.steps,
            )
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(saved, json.dumps(cfg.to_dict(), indent=2).encode())
    return latest


def fit(
    cfg: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> FitResult:
    """Train the configured model into ``run_dir`` (see the module docstring).

    Args:
        cfg: A validated configuration (:func:`deblurcli.train.config.load_config`).
        run_dir: Folder for ``config.json``, ``run.json``, ``log.jsonl`` and ``checkpoints/``.
        resume: Continue from the newest checkpoint in ``run_dir`` (start fresh if there is none).
        on_step: Called on rank 0 after every log interval and every validation.

    Raises:
        UsageError: ``run_dir`` holds checkpoints but ``resume`` is False, bad data paths.
        ConfigError: resuming with a config that changes the computation.
    """
    run_dir = Path(run_dir)
    rank, world, device, created_group = _init_distributed(cfg.run.device)
    try:
        return _fit(cfg, run_dir, resume, on_step, rank, world, device)
    finally:
        if created_group:
            dist.destroy_process_group()


def _fit(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    on_step: Callable[[StepInfo], None] | None,
    rank: int,
    world: int,
    device: torch.device,
) -> FitResult:
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    latest = _prepare_run_dir(cfg, run_dir, resume, rank)
    seed, total = cfg.run.seed, cfg.run.steps
    torch.manual_seed(seed), np.random.seed(seed % 2**32), random.seed(seed)
    model = archs.build(cfg.model.arch, cfg.model.config)
    if cfg.model.descriptor_weights:  # a frozen matching descriptor (ref_deblur's VGG19)
        _load_descriptor(model, cfg.model.descriptor_weights)
    info = ModelInfo.for_model(cfg.model.arch, model)
    if info.inputs == 2 and not (cfg.data.kind in ("frames", "synthetic") and cfg.data.reference):
        raise ConfigError(
            f"{cfg.model.arch} takes a reference image: use data.kind = 'frames' or "
            "'synthetic' with data.reference = true"
        )
    dataset = data.make_dataset(cfg.data, seed, info.in_channels)  # lists files: fails early
    model.to(device)
    memory_format = torch.channels_last if cfg.run.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    optim_cls = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    optimizer = optim_cls(
        model.parameters(),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        weight_decay=cfg.optim.weight_decay,
    )
    optimizers: dict[str, torch.optim.Optimizer] = {"generator": optimizer}
    lc = cfg.loss
    disc = None
    if lc.gan != "none":
        from deblurcli.train.discriminator import build_discriminator

        disc = build_discriminator(
            lc.discriminator, info.out_channels, lc.disc_width, lc.disc_config
        ).to(device)
        optimizers["discriminator"] = torch.optim.Adam(
            disc.parameters(), lr=cfg.optim.disc_lr, betas=(0.5, 0.999)
        )
    ema: dict[str, torch.Tensor] | None = None
    start, scalars = 0, {}
    warm = load_warm_start(cfg.run.init, cfg) if cfg.run.init and latest is None else None
    if warm is not None:
        module_state = {k: v.to(device) for k, v in warm.weights.items()}
        added = load_grown(model, module_state, allow_new=cfg.run.init_grow)
        if added:
            logger.info("run.init_grow: %d new tensors keep their initialisation", len(added))
        if warm.ema is not None and cfg.model.ema_decay > 0:
            ema = {k: v.to(device) for k, v in warm.ema.items()}
            ema.update({k: v.detach().clone() for k, v in model.state_dict().items()
                        if k in added})
    if latest is not None:
        start, ema, scalars = checkpointing.load_state(
            latest, model=model, optimizers=optimizers, disc=disc
        )
        ema = None if ema is None else {k: v.to(device) for k, v in ema.items()}
    if ema is None and cfg.model.ema_decay > 0:
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if rank == 0:
        record = {
            "command": command_line(sys.argv),
            "hardware": hardware(device, world),
            "resumed_from": start,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if warm is not None:
            record["init"] = warm.lineage
        history = run_dir / "run.json"
        runs = json.loads(history.read_text())["sessions"] if history.exists() and start else []
        atomic_write_bytes(history, json.dumps({"sessions": [*runs, record]}, indent=2).encode())
    module = model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    criterion = pixel_objective(cfg).to(device)
    val = (data.build_val_set(cfg.val, info.in_channels, reference=info.inputs == 2,
                              guide=info.guide_channels > 0)
           if rank == 0 and cfg.run.val_every else None)
    if val is not None and info.inputs != 1 and val.reference is None:
        logger.warning("validation skipped: %s takes %d inputs", cfg.model.arch, info.inputs)
        val = None
    baseline = input_scores(val) if val is not None else {}
    ema_model = copy.deepcopy(module) if ema is not None and val is not None else None
    log = _Log(run_dir / "log.jsonl", rank == 0, start if latest is not None else 0)
    loader = data.make_loader(
        dataset,
        cfg.data,
        start_step=start,
        stop_step=total,
        rank=rank,
        world=world,
        pin_memory=device.type == "cuda",
    )
    autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if cfg.run.amp and device.type == "cuda":
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    elif cfg.run.cpu_bf16 and device.type == "cpu":
        if cpu_bf16_is_native():
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        elif rank == 0:
            logger.warning(
                "run.cpu_bf16 ignored: this CPU (%s) has no native bf16 kernels, where bf16 "
                "autocast is an order of magnitude slower than float32; training in float32",
                cpu_capability())
    wall0, session_start = float(scalars.get("wall_seconds", 0.0)), time.monotonic()
    cpu0, session_cpu = float(scalars.get("cpu_seconds", 0.0)), time.process_time()
    tick, sums, count, step = time.monotonic(), {}, 0, start
    last_val: dict[str, float] = dict(scalars.get("val", {}))
    checkpoint = latest
    model.train()
    budget_s = cfg.run.minutes * 60.0
    for step_index, batch in enumerate(loader, start=start):
        step = step_index + 1
        torch.manual_seed(_step_seed(seed, step_index, rank))
        time_fraction = (time.monotonic() - session_start) / budget_s if budget_s else 0.0
        if world > 1 and budget_s:  # every rank must stop at the same step
            shared = torch.tensor([time_fraction], device=device)
            dist.broadcast(shared, 0)
            time_fraction = float(shared)
        last = step == total or time_fraction >= 1.0  # the budget's last step
        lr = cfg.optim.lr * lr_factor(step_index, cfg, time_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        blurry = batch["blurry"].to(device, non_blocking=True, memory_format=memory_format)
        model_input = blurry
        if info.guide_channels:  # guided models read the image and its guide stacked
            guide = batch["guide"].to(device, non_blocking=True, memory_format=memory_format)
            model_input = torch.cat([blurry, guide], dim=1)
        sharp = batch["sharp"].to(device, non_blocking=True, memory_format=memory_format)
        gan_on = disc is not None and step_index >= lc.gan_start
        with autocast:
            inputs = ((blurry, batch["reference"].to(device)) if info.inputs == 2
                      else (model_input,))
            out = model(*inputs)
            hook = getattr(module, "training_terms", None)  # model-computed terms (UML-IN)
            terms = hook(sharp) if hook is not None else None
            # feedback models: content and adversarial terms are means over the iterations
            outs, loss, parts = iteration_objective(criterion, module, out, sharp, terms)
            if gan_on:
                assert disc is not None
                disc.requires_grad_(False)
                real_logits = judge(disc, sharp, blurry) if lc.gan == "ragan" else None
                adv = torch.stack([
                    losses.gan_generator_loss(
                        lc.gan,
                        judge(disc, o, blurry).float(),  # conditional Ds see [blurry, image]
                        None if real_logits is None else real_logits.float(),
                    ) for o in outs
                ]).mean()
                loss = loss + lc.gan_weight * adv
                parts["gan_g"] = adv.detach()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            parts["grad_norm"] = nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        if ema is not None:
            decay = min(cfg.model.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for key, value in module.state_dict().items():
                    if value.dtype.is_floating_point:
                        ema[key].lerp_(value, 1 - decay)
                    else:
                        ema[key].copy_(value)
        if gan_on:
            assert disc is not None
            disc.requires_grad_(True)
            d_opt = optimizers["discriminator"]
            for _ in range(lc.critic_steps):  # WGAN-GP: 5 critic steps, one batch
                with autocast:
                    real_logits = judge(disc, sharp, blurry)
                    fake_logits = judge(disc, out.detach(), blurry)
                    d_loss = losses.gan_discriminator_loss(
                        lc.gan, real_logits.float(), fake_logits.float()
                    )
                if lc.gan == "wgan-gp":
                    critic = functools.partial(judge, disc, condition=blurry)
                    d_loss = d_loss + lc.gp_weight * losses.gradient_penalty(
                        critic, sharp, out.detach()  # type: ignore[arg-type]
                    )
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
            parts["gan_d"] = d_loss.detach()
        parts["loss"] = loss.detach()
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
        if rank == 0 and (step % cfg.run.log_every == 0 or last):
            now = time.monotonic()
            values = {k: float(v) / count for k, v in sums.items()}
            values.update(lr=lr, it_s=count / max(now - tick, 1e-9))
            record = {"kind": "train", "step": step, "wall": wall0 + now - session_start, **values}
            log.write(record)
            if on_step:
                on_step(StepInfo("train", step, total, values))
            tick, sums, count = now, {}, 0
        if val is not None and (step % cfg.run.val_every == 0 or last):
            last_val = {f"{k}_input": v for k, v in baseline.items()}
            last_val.update(evaluate(module, val, device))
            if ema_model is not None and ema is not None:
                ema_model.load_state_dict(ema)
                last_val.update(
                    {f"{k}_ema": v for k, v in evaluate(ema_model, val, device).items()}
                )
            log.write(
                {
                    "kind": "val",
                    "step": step,
                    "wall": wall0 + time.monotonic() - session_start,
                    **last_val,
                }
            )
            if on_step:
                on_step(StepInfo("val", step, total, dict(last_val)))
        if step % cfg.checkpoint.every == 0 or last:
            if rank == 0:
                wall = wall0 + time.monotonic() - session_start
                checkpoint = checkpointing.save_state(
                    run_dir,
                    step,
                    model=module,
                    info=info,
                    optimizers=optimizers,
                    ema=ema,
                    disc=disc,
                    keep_last=cfg.checkpoint.keep_last,
                    scalars={
                        "wall_seconds": wall,
                        "cpu_seconds": cpu0 + time.process_time() - session_cpu,
                        "val": last_val,
                        "world_size": world,
                    },
                )
                if on_step:
                    on_step(StepInfo("checkpoint", step, total, {"wall": wall}))
            if world > 1:
                dist.barrier()
        if last:
            break
    log.close()
    wall = wall0 + time.monotonic() - session_start
    return FitResult(
        run_dir=run_dir,
        step=step,
        checkpoint=checkpoint,
        wall_seconds=wall,
        val=last_val,
        model=module,
    )
