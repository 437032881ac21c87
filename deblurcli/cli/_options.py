"""Option aliases shared by several commands, defined once (``typing.Annotated`` style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

InputsArg = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders or glob patterns (quote globs: 'shots/*.jpg').",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--output", "-o", metavar="PATH",
        help="Output file (one input only) or folder (created if missing). Default: beside "
        "each input, with the command's suffix (_deblurred, _deconvolved, _blurred).",
    ),
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Descend into sub-folders and mirror the tree.")
]
SuffixOpt = Annotated[
    Optional[str],
    typer.Option(metavar="TEXT", help="Appended to output file names, no '/' or '..' "
                 "(default: '' with -o DIR, else the command's suffix)."),
]
FormatOpt = Annotated[
    str, typer.Option("--format", metavar="auto|png|tif|jpg|webp|bmp",
                      help="Output format: auto (same as input), png, tif, jpg, webp, bmp.")
]
QualityOpt = Annotated[int, typer.Option(min=1, max=100, metavar="1-100",
                                         help="JPEG/WebP quality, 1 to 100.")]
BitDepthOpt = Annotated[
    str, typer.Option("--bit-depth", metavar="same|8|16",
                      help="Output bit depth: same (as input), 8 or 16.")
]
SkipExistingOpt = Annotated[
    bool, typer.Option("--skip-existing", help="Leave outputs that already exist untouched.")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist.")]
FailFastOpt = Annotated[
    bool, typer.Option("--fail-fast", help="Stop at the first file that fails (default: go on).")
]
MaxPixelsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--max-pixels", min=1, metavar="N",
        help="Refuse images with more pixels (decompression-bomb guard; default 200 MP or "
        "$DEBLURCLI_MAX_PIXELS).",
    ),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", metavar="NAME[@TAG]|FILE",
        help="Model name, name@tag (see `deblurcli models list`) or a .safetensors path. "
        "Default: the shipped default model.",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", metavar="DEVICE",
                 help="auto (cuda → mps → cpu), cpu, cuda, cuda:N or mps."),
]
PrecisionOpt = Annotated[
    str,
    typer.Option("--precision", metavar="auto|fp32|bf16|fp16",
                 help="auto (fp32 on CPU, bf16 on CUDA where the model allows), fp32, bf16, fp16."),
]
TileOpt = Annotated[
    str,
    typer.Option(
        metavar="auto|0|N",
        help="auto (whole image when it fits, else tiles; halved on out-of-memory), "
        "0 (never tile) or a tile size in pixels.",
    ),
]
OverlapOpt = Annotated[
    Optional[int],
    typer.Option("--tile-overlap", min=0, metavar="N",
                 help="Pixels shared by tiles (default: model's need)."),
]
EnsembleOpt = Annotated[
    int,
    typer.Option("--ensemble", metavar="N", help=(
        "Average the network over N flipped/transposed copies of each photo (1, 2, 4 or 8): "
        "a little sharper and cleaner, N times slower.")),
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never touch the network; use shipped or cached files.")
]
CacheDirOpt = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", metavar="DIR",
                 help="Hugging Face cache folder (default: $HF_HUB_CACHE)."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one machine-readable JSON summary on stdout.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="Hide progress bars.")]


def parse_tile(value: str) -> int | str | None:
    """``auto`` → "auto"; ``0`` → None (no tiling); ``N`` → N pixels (N ≥ 64)."""
    if value == "auto":
        return "auto"
    try:
        size = int(value)
    except ValueError:
        raise typer.BadParameter("use auto, 0 or a tile size in pixels",
                                 param_hint="--tile") from None
    if size == 0:
        return None
    if size < 64:
        raise typer.BadParameter("tiles smaller than 64 px are not useful", param_hint="--tile")
    return size


def parse_bit_depth(value: str) -> int | str:
    """``same`` | ``8`` | ``16``."""
    if value == "same":
        return "same"
    if value in ("8", "16"):
        return int(value)
    raise typer.BadParameter("use same, 8 or 16", param_hint="--bit-depth")


KERNEL_CONVENTION_HELP = (
    "How kernel files are oriented: convolve (y = k * x, true convolution; what deblurcli "
    "writes) or correlate (y = correlate(x, k), e.g. Levin09 .txt kernels; rotated by 180° "
    "on read and write)."
)
KernelConventionOpt = Annotated[
    str, typer.Option("--kernel-convention", metavar="convolve|correlate",
                      help=KERNEL_CONVENTION_HELP),
]


def check_convention(convention: str) -> str:
    """``convolve`` | ``correlate``; anything else is a usage error naming the flag."""
    if convention not in ("convolve", "correlate"):
        raise typer.BadParameter("use convolve or correlate", param_hint="--kernel-convention")
    return convention


def orient_kernel(kernel: Any, convention: str) -> Any:
    """Convert between a file's orientation and true convolution (a 180° rotation both ways)."""
    import numpy as np

    if check_convention(convention) == "convolve":
        return kernel
    return np.ascontiguousarray(kernel[::-1, ::-1])


def read_kernel_file(path: Path | str, convention: str) -> Any:
    """Read a kernel file and return it in true-convolution orientation."""
    from deblurcli.kernels import read_kernel

    return orient_kernel(read_kernel(path), convention)


ShardOpt = Annotated[
    Optional[str],
    typer.Option(
        "--shard", metavar="K/N",
        help="Process only shard K of N (1 ≤ K ≤ N): a deterministic split by file path, so N "
        "processes or machines (a SLURM array, a Kubernetes indexed job) cover a batch once.",
    ),
]

ConfigArg = Annotated[
    Path, typer.Argument(help="TOML training config.", exists=True, dir_okay=False)
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override a config value (repeatable)."),
]
