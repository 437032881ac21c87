"""Release a training run: one checkpoint in ``weights/`` plus its model-table entry.

``weights/`` is the top-level folder of the checkout, beside ``deblurcli/`` (``weights_dir`` /
``--weights-dir`` names another one); it holds the checkpoints and ``manifest.json``.

The entry records what is needed to trust and reproduce the weights: sha256 and size, the
architecture config, the exact training command(s), the data, steps, wall time and hardware,
and validation metrics measured on the exported file through the same inference path ``deblur``
uses (``engine.Restorer``, fp32 on the CPU) with :mod:`deblurcli.metrics`: PSNR/SSIM of the
blurry input and of the output, on the run's fixed validation set and optionally on a folder of
real ``X.png`` / ``X_gt.png`` pairs (e.g. ``gopro_dev``).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from deblurcli import archs
from deblurcli._atomic import atomic_write_bytes
from deblurcli.engine.checkpoint import load_checkpoint, save_checkpoint
from deblurcli.engine.info import ModelInfo
from deblurcli.errors import UsageError
from deblurcli.train import checkpointing, data
from deblurcli.train.config import TrainConfig, config_from_dict
from deblurcli.train.loop import command_line

MEASURED_WITH = "deblurcli.train.export.measure: engine.Restorer (cpu, fp32) + deblurcli.metrics"


def _scores(
    restore: Callable[[torch.Tensor], torch.Tensor], pairs: list[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, float]:
    from deblurcli.metrics import psnr, ssim

    rows = []
    for blurry, sharp in pairs:
        out = restore(blurry)
        rows.append(
            [
                float(psnr(blurry, sharp)[0]),
                float(ssim(blurry, sharp)[0]),
                float(psnr(out, sharp)[0]),
                float(ssim(out, sharp)[0]),
            ]
        )
    mean = torch.tensor(rows, dtype=torch.float64).mean(0).tolist()
    keys = ("psnr_input", "ssim_input", "psnr", "ssim")
    return {"images": len(pairs), **{k: round(v, 4) for k, v in zip(keys, mean, strict=True)}}


def measure(
    checkpoint: str | os.PathLike[str],
    cfg: TrainConfig,
    gopro_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """PSNR/SSIM (input and output) of a checkpoint file on the run's validation set and,
    when given, on the ``X`` / ``X_gt`` pairs of ``gopro_dir`` (whole images)."""
    from deblurcli.engine.restorer import Restorer

    loaded = load_checkpoint(checkpoint)
    restorer = Restorer(loaded.model, loaded.info, device=torch.device("cpu"), dtype=torch.float32)
    results: dict[str, Any] = {"measured_with": MEASURED_WITH}
    two_inputs = loaded.info.inputs == 2
    guided = loaded.info.guide_channels > 0
    val = data.build_val_set(cfg.val, loaded.info.in_channels, reference=two_inputs,
                             guide=guided)
    if val is not None and (val.reference is not None or not two_inputs):
        pairs = [(val.blurry[i : i + 1], val.sharp[i : i + 1]) for i in range(len(val.names))]
        restore: Callable[[torch.Tensor], torch.Tensor] = restorer
        if val.reference is not None:  # reference-based: each crop with its reference view
            views = iter(val.reference.split(1))  # _scores restores the pairs in this order
            restore = lambda blurry: restorer(blurry, next(views))  # noqa: E731
        elif val.guide is not None:  # guided: each restoration with its guide, in order
            guides = iter(val.guide.split(1))
            restore = lambda blurry: restorer(blurry, guide=next(guides))  # noqa: E731
        results["val"] = {"set": _val_description(cfg), **_scores(restore, pairs)}
    if gopro_dir is not None and (two_inputs or guided):
        results["gopro_dev"] = {"set": str(gopro_dir), "skipped": "these pairs have no "
                                + ("reference" if two_inputs else "restoration guide")}
    elif gopro_dir is not None:
        pairs = []
        for blur_path, sharp_path in data.find_pairs(gopro_dir):
            b, s = (
                data._tensor(data.read_rgb(p, loaded.info.in_channels))[None]
                for p in (blur_path, sharp_path)
            )
            pairs.append((b, s))
        results["gopro_dev"] = {"set": str(gopro_dir), **_scores(restorer, pairs)}
    return results


def measure_presets(
    checkpoint: str | os.PathLike[str],
    arch: str,
    presets: Sequence[str],
    data_root: str | os.PathLike[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Mean PSNR/SSIM of the input and of ``checkpoint`` on ``bench quality`` presets (CPU,
    fp32), with per-group means (e.g. per GoPro sequence): the numbers the manifest records."""
    from deblurcli import methods as table
    from deblurcli.bench import datasets
    from deblurcli.bench.methods import MethodConfig
    from deblurcli.bench.quality import run_quality

    method = next(m.name for m in table.METHODS if m.kind == "network" and m.arch == arch)
    if table.TABLE[method].inputs == 2:
        from deblurcli.errors import UsageError

        raise UsageError(f"--preset: bench presets have no reference images for {method}; "
                         "export without --preset (the validation triplets are measured)")
    config = MethodConfig(device="cpu", precision="fp32", model=str(checkpoint))
    found: dict[str, Any] = {}
    for preset in presets:
        dataset = datasets.open_dataset(preset=preset, data=data_root)
        if on_progress:
            on_progress(f"measuring --preset {preset} ({len(dataset.samples)} images) …")
        identity, model = run_quality(dataset, ["identity", method], config)
        entry: dict[str, Any] = {"set": dataset.name, "images": len(dataset.samples)}
        for label, result in (("input", identity), ("output", model)):
            entry[f"psnr_{label}"] = round(result.mean("psnr") or float("nan"), 4)
            entry[f"ssim_{label}"] = round(result.mean("ssim") or float("nan"), 4)
        for group in model.groups():
            entry.setdefault("groups", {})[group] = {
                "psnr_input": round(identity.mean("psnr", group) or float("nan"), 4),
                "psnr_output": round(model.mean("psnr", group) or float("nan"), 4),
                "ssim_input": round(identity.mean("ssim", group) or float("nan"), 4),
                "ssim_output": round(model.mean("ssim", group) or float("nan"), 4),
            }
        found[preset] = entry
    return found


def _val_description(cfg: TrainConfig) -> str:
    v = cfg.val
    if v.kind == "synthetic":
        return (
            f"synthetic: first {v.count} images of {v.sharp} "
            f"(sorted, >= {v.crop + v.kernel_size - 1} px), "
            f"centre {v.crop}px crops, random motion/gaussian/defocus kernel <= {v.kernel_size}px "
            f"and noise sigma <= {data.VAL_NOISE_MAX}, seed {v.seed}"
        )
    return f"paired: first {v.count} pairs of {v.blurred or v.sharp}, centre {v.crop}px crops"


def _data_description(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.data
    found: dict[str, Any] = {"kind": d.kind, "crop": d.crop, "batch_size": d.batch_size}
    if d.kind in ("synthetic", "pack"):
        from deblurcli.train.config import recipe_of
        from deblurcli.train.data import dataclasses_asdict

        found.update(sharp=d.sharp, recipe=dataclasses_asdict(recipe_of(d)))
        if d.kind == "synthetic" and d.reference:  # triplets: reference views + frame triplets
            found.update(reference=True, frames_root=d.frames_root, frames_prob=d.frames_prob,
                         frames=d.frames, reference_distance=d.reference_distance)
        if d.kind == "pack":
            found.update(
                pack=d.pack,
                pack_count=d.pack_count,
                pack_size=d.pack_size or d.crop + 16,
                frames_root=d.frames_root,
                frames_prob=d.frames_prob,
            )
    elif d.kind == "paired":
        found.update(blurred=d.blurred, sharp=d.sharp)
    else:
        found.update(root=d.root, frames=d.frames, reference=d.reference)
    return found


def export_run(
    run_dir: str | os.PathLike[str],
    *,
    name: str,
    tag: str,
    description: str = "",
    make_default: bool = False,
    tag_default: bool = True,
    use_ema: bool = True,
    gopro_dir: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
    presets: Sequence[str] = (),
    data_root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Export the newest checkpoint of ``run_dir`` as ``name@tag`` and record it in the manifest.

    The entry becomes the name's ``default_tag`` (what ``--method NAME`` runs) unless
    ``tag_default`` is false and the name already has one; with ``make_default`` the name also
    becomes the table's ``default`` (the model ``deblur`` uses without ``--model``).

    Returns:
        The manifest entry written.

    Raises:
        UsageError: no checkpoint in ``run_dir``, invalid name or tag.
    """
    from deblurcli.engine.zoo import MANIFEST_PATH, parse_reference

    parse_reference(f"{name}@{tag}")
    run_dir = Path(run_dir)
    folder = checkpointing.latest_checkpoint(run_dir)
    if folder is None:
        raise UsageError(f"{run_dir}: no checkpoint to export (train first)")
    cfg = config_from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    sessions = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["sessions"]
    source = folder / (
        "ema.safetensors"
        if use_ema and (folder / "ema.safetensors").is_file()
        else "model.safetensors"
    )
    model = archs.build(cfg.model.arch, cfg.model.config)
    model.load_state_dict(load_file(str(source)), strict=True)
    info = ModelInfo.for_model(cfg.model.arch, model)
    manifest = Path(weights_dir) / "manifest.json" if weights_dir else MANIFEST_PATH
    target = manifest.parent / f"{name}-{tag}.safetensors"
    steps = int(state["step"])
    cpu_hours = float(state["scalars"].get("cpu_seconds", 0.0)) / 3600
    init = sessions[0].get("init") if sessions else None
    lineage = {
        "parent": init["init"] if init else None,
        "parent_sha256": init["parent_sha256"] if init else None,
        "cumulative_steps": steps + (int(init["parent_steps"]) if init else 0),
        "cumulative_cpu_hours": round(
            cpu_hours + (float(init["parent_cpu_hours"]) if init else 0.0), 3
        ),
    }
    training = {
        "command": [command_line(shlex.split(s["command"])) for s in sessions],
        "config": cfg.to_dict(),
        "data": _data_description(cfg),
        "steps": steps,
        "weights": "ema" if source.name.startswith("ema") else "raw",
        "wall_time_s": round(float(state["scalars"].get("wall_seconds", 0.0)), 3),
        "cpu_hours": round(cpu_hours, 3),
        "lineage": lineage,
        "hardware": sessions[-1]["hardware"],
        "run": run_dir.name,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    kept = ("steps", "weights", "wall_time_s", "cpu_hours", "lineage", "data", "command")
    summary = {k: training[k] for k in kept}
    sha256 = save_checkpoint(target, model, info, extra_metadata={"train": summary})
    if on_progress:
        on_progress(f"wrote {target}; measuring PSNR/SSIM …")
    entry: dict[str, Any] = {
        "name": name,
        "tag": tag,
        "sha256": sha256,
        "size": target.stat().st_size,
        "arch": cfg.model.arch,
        "description": description or f"{cfg.model.arch} trained by deblurcli train",
        "default_tag": True,
        "file": target.name,
        "config": archs.config_of(model),
        "training": training,
        "metrics": measure(target, cfg, gopro_dir),
    }
    if presets:
        entry["metrics"]["presets"] = measure_presets(
            target, cfg.model.arch, presets, data_root, on_progress
        )
    document: dict[str, Any] = {"default": None, "models": []}
    if manifest.is_file():
        document = json.loads(manifest.read_text(encoding="utf-8"))
    models = [m for m in document.get("models", []) if (m["name"], m["tag"]) != (name, tag)]
    siblings = [m for m in models if m["name"] == name]
    if tag_default or not any(m.get("default_tag") for m in siblings):
        for other in siblings:
            other["default_tag"] = False
    else:
        entry["default_tag"] = False
    document["models"] = [*models, entry]
    if make_default:
        document["default"] = name
    atomic_write_bytes(manifest, (json.dumps(document, indent=2) + "\n").encode())
    for released in (target, manifest):  # package data: readable by everyone
        released.chmod(0o644)
    return entry
