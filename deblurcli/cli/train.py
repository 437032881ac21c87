"""``deblurcli train``: run a training config, export a run into the model table, pack data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deblurcli.cli import _options as opt
from deblurcli.cli._console import err_console, info, print_json, progress_enabled
from deblurcli.cli._options import ConfigArg, SetOpt

app = typer.Typer(no_args_is_help=True, help=(
    "Train models, export runs to weights/, pack data.\n\nExamples:\n\n"
    "  deblurcli train run configs/residual_unet_synth.toml --run-dir runs/resunet-synth\n\n"
    "  deblurcli train export runs/resunet-synth --name resunet --tag synth-v2"))


@app.command("run")
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder (default: runs/CONFIG_NAME).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run folder's newest checkpoint.")
    ] = False,
    blurred: Annotated[
        Path | None, typer.Option(help="Paired data: blurred folder (with --sharp).")
    ] = None,
    sharp: Annotated[
        Path | None, typer.Option(help="Paired data: sharp folder, same file names.")
    ] = None,
    no_progress: opt.NoProgressOpt = False,
) -> None:
    """Train a model; metrics go to RUN/log.jsonl, checkpoints to RUN/checkpoints/.

    Examples:
      deblurcli train run configs/residual_unet_synth.toml --set optim.lr=5e-4 --set run.steps=2000
      deblurcli train run cfg.toml --blurred data/blur --sharp data/sharp --run-dir runs/paired
      deblurcli train run configs/residual_unet_synth.toml --run-dir runs/resunet-synth --resume
      torchrun --nproc_per_node 2 -m deblurcli train run cfg.toml   (DistributedDataParallel)
    """
    import logging

    from rich.logging import RichHandler

    from deblurcli.train.config import load_config

    overrides = list(set_ or [])
    if (blurred is None) != (sharp is None):
        raise typer.BadParameter("give both --blurred and --sharp, or neither")
    if blurred is not None:
        overrides += ["data.kind=paired", f"data.blurred={blurred}", f"data.sharp={sharp}"]
    cfg = load_config(config, overrides)  # a typo fails here, before any data is read
    run_dir = run_dir or Path("runs") / config.stem
    if not logging.getLogger("deblurcli").handlers:
        logging.getLogger("deblurcli").addHandler(RichHandler(console=err_console, show_path=False))
    from deblurcli.train.loop import StepInfo, fit

    def line(s: StepInfo) -> str:
        shown = {
            k: v
            for k, v in s.values.items()
            if k in ("loss", "lr", "it_s", "psnr", "psnr_ema", "ssim_ema", "psnr_input", "wall")
        }
        return f"{s.kind} {s.step}/{s.total} " + " ".join(f"{k}={v:.4g}" for k, v in shown.items())

    info(f"training {cfg.model.arch} for {cfg.run.steps} steps into {run_dir}")
    if progress_enabled(no_progress, False):
        from rich.progress import Progress, TimeRemainingColumn

        with Progress(
            *Progress.get_default_columns()[:-1], TimeRemainingColumn(), console=err_console
        ) as bar:
            task = bar.add_task("train", total=cfg.run.steps)

            def show(s: StepInfo) -> None:
                bar.update(
                    task, completed=s.step, description=line(s) if s.kind != "checkpoint" else None
                )
                if s.kind == "val":
                    bar.console.print(line(s))

            result = fit(cfg, run_dir, resume=resume, on_step=show)
    else:
        result = fit(cfg, run_dir, resume=resume, on_step=lambda s: info(line(s)))
    info(
        f"done: step {result.step}, {result.wall_seconds / 60:.1f} min, "
        f"checkpoint {result.checkpoint}"
    )


@app.command("export")
def export(
    run_dir: Annotated[
        Path, typer.Argument(help="Run folder (holds checkpoints/).", exists=True, file_okay=False)
    ],
    name: Annotated[str, typer.Option(help="Model name in the table, e.g. resunet.")],
    tag: Annotated[str, typer.Option(help="Weights tag, e.g. synth-v1.")],
    description: Annotated[str, typer.Option(help="One-line description.")] = "",
    default: Annotated[
        bool, typer.Option("--default", help="Also make NAME the model `deblur` uses.")
    ] = False,
    keep_default_tag: Annotated[
        bool, typer.Option("--keep-default-tag", help=(
            "Add the checkpoint without making it what `--method NAME` runs (when NAME already "
            "has a default tag)."))
    ] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Export raw weights, not the EMA.")] = False,
    gopro: Annotated[
        Path | None, typer.Option(help="Also measure on the X.png/X_gt.png pairs of this folder.")
    ] = None,
    preset: Annotated[
        list[str] | None, typer.Option("--preset", metavar="NAME", help=(
            "Also measure input and model on this bench quality preset (repeatable): shake, "
            "gopro_dev, city100, levin; recorded in the manifest."))
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", metavar="DIR", file_okay=False, help=(
            "Folder of the preset data (default: $DEBLURCLI_DATA, else ../shared/data)."))
    ] = None,
    weights_dir: Annotated[
        Path | None, typer.Option("--weights-dir", file_okay=False, metavar="DIR", help=(
            "Folder of the model table to write to (default: weights/ of this source checkout; "
            "required when deblurcli is installed, which is never written to)."))
    ] = None,
    json_output: opt.JsonOpt = False,
) -> None:
    """Write the run's newest checkpoint to weights/ with a manifest entry
    (sha256, arch config, command, data, steps, wall time, hardware, validation metrics).

    Examples:

      deblurcli train export runs/resunet-synth --name resunet --tag synth-v1 --default

      deblurcli train export runs/r --name resunet --tag v3 --preset shake --preset gopro_dev

      deblurcli train export runs/r --name resunet --tag shake-v1 --keep-default-tag

      deblurcli train export runs/r --name resunet --tag v2 --weights-dir my-weights/
    """
    from deblurcli.engine.zoo import CHECKOUT_WEIGHTS_DIR
    from deblurcli.errors import UsageError
    from deblurcli.train.export import export_run

    target = weights_dir or CHECKOUT_WEIGHTS_DIR
    if target is None:
        raise UsageError("deblurcli runs from an installed package, whose files are never "
                         "written; pass --weights-dir DIR (then DEBLURCLI_MODEL_TABLE="
                         "DIR/manifest.json makes the model usable)")
    entry: dict[str, Any] = export_run(
        run_dir, name=name, tag=tag, description=description, make_default=default,
        tag_default=not keep_default_tag, use_ema=not raw, gopro_dir=gopro, on_progress=info,
        weights_dir=target, presets=preset or (), data_root=data,
    )  # fmt: skip
    info(f"exported {name}@{tag}: {entry['file']} (sha256 {entry['sha256'][:16]}…)")
    if json_output:
        print_json(entry)


@app.command("pack")
def pack(
    config: ConfigArg,
    set_: SetOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Pack file (default: the config's data.pack)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes that synthesise pairs.")] = 2,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing pack.")
    ] = False,
    no_progress: opt.NoProgressOpt = False,
) -> None:
    """Precompute the config's degraded training pairs once into one file (data off the hot path).

    The pairs are those of the config's [data] recipe (blur kinds and sizes, varying blur, moving
    objects, noise, JPEG, highlights, frame averaging), data.pack_count of them, seeded by
    run.seed: pair j is the same on every machine. Training with data.kind = "pack" then reads
    them with almost no CPU, so both cores train.

    Example:

      deblurcli train pack configs/resunet_shake.toml --workers 2
    """
    from deblurcli.errors import UsageError
    from deblurcli.train.config import load_config
    from deblurcli.train.data import build_pair_pack, pool_spec_of

    cfg = load_config(config, list(set_ or []))
    target = output or Path(cfg.data.pack or ".pack/pairs.safetensors")
    if target.exists() and not overwrite:
        raise UsageError(f"{target} exists; pass --overwrite to rebuild it")
    spec = pool_spec_of(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    shown = progress_enabled(no_progress, False)

    def progress(done: int, total: int) -> None:
        if shown:
            err_console.print(f"\rpacked {done}/{total} pairs", end="")

    meta = build_pair_pack(spec, cfg.data.pack_count, target, workers=workers, on_progress=progress)
    if shown:
        err_console.print()
    info(
        f"wrote {meta['count']} pairs of {meta['size']}² to {target} "
        f"({target.stat().st_size / 1e6:.0f} MB) in {float(meta['seconds']):.0f} s"
    )


@app.command("pack-sharp")
def pack_sharp(
    sources: Annotated[
        list[Path], typer.Argument(help="Folders of sharp images.", exists=True, file_okay=False)
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Pack file (.safetensors).")
    ] = Path(".pack/sharp_train.safetensors"),
    crop: Annotated[int, typer.Option(help="Crop side stored per sample.")] = 320,
    per_image: Annotated[int, typer.Option(help="Random crops per source image.")] = 2,
    quality: Annotated[
        int, typer.Option(min=50, max=100, help="JPEG quality of the stored crops.")
    ] = 92,
    seed: Annotated[int, typer.Option(help="Seed of the crop positions.")] = 0,
) -> None:
    """Build a compact training pack (JPEG crops in one safetensors file, e.g. for a GPU machine).

    Example:

      deblurcli train pack-sharp ../shared/data/sharp_train -o .pack/sharp_train.safetensors

    Then train with --set data.sharp=.pack/sharp_train.safetensors
    """
    from deblurcli.train.data import build_pack

    count = build_pack(sources, output, crop=crop, per_image=per_image, quality=quality, seed=seed)
    info(f"wrote {count} crops to {output} ({output.stat().st_size / 1e6:.1f} MB)")
