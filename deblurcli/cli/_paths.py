"""Input expansion and output planning for batch commands, all checked before any compute."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from deblurcli.errors import UsageError

FORMAT_SUFFIXES = {"png": ".png", "tif": ".tif", "tiff": ".tif", "jpg": ".jpg", "jpeg": ".jpg",
                   "webp": ".webp", "bmp": ".bmp"}
JUNK_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}
DEFAULT_SUFFIX = "_deblurred"


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    input: Path
    output: Path


def _is_candidate(path: Path, suffixes: frozenset[str]) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.name.lower() not in JUNK_NAMES
        and path.suffix.lower() in suffixes
    )


def collect_inputs(specs: list[str], *, recursive: bool) -> list[tuple[Path, Path]]:
    """Expand files, folders and globs to ``(file, base folder)`` pairs, sorted, deduplicated.

    A file named explicitly is always taken (a bad one is reported later, per file); inside
    folders and globs only image suffixes count, and hidden/OS junk files are skipped.

    Raises:
        UsageError: a spec that matches nothing, or no inputs at all.
    """
    from deblurcli.io import IMAGE_SUFFIXES

    found: dict[Path, Path] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for child in sorted(path.glob(pattern)):
                rel_parts = child.relative_to(path).parts
                if any(part.startswith(".") for part in rel_parts):
                    continue
                if _is_candidate(child, IMAGE_SUFFIXES):
                    found.setdefault(child, path)
        elif path.is_file():
            found.setdefault(path, path.parent)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=recursive))
            matches = [m for m in matches if _is_candidate(m, IMAGE_SUFFIXES)]
            if not matches:
                raise UsageError(f"no image files match {spec!r}")
            base = _glob_base(spec)
            for match in matches:
                found.setdefault(match, base)
        else:
            raise UsageError(f"{spec}: no such file or folder")
    if not found:
        supported = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UsageError(f"no input images found (supported: {supported})")
    return sorted(found.items())


def _glob_base(spec: str) -> Path:
    """The leading part of a glob pattern that has no wildcard."""
    parts = []
    for part in Path(spec).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def output_suffix(input_path: Path, fmt: str) -> str:
    """File extension of the output: the input's for ``auto``, else the format's."""
    if fmt == "auto":
        return input_path.suffix
    try:
        return FORMAT_SUFFIXES[fmt.lower()]
    except KeyError:
        formats = ", ".join(FORMAT_SUFFIXES)
        raise UsageError(f"unknown --format {fmt!r}; use auto, {formats}") from None


def plan_outputs(
    inputs: list[tuple[Path, Path]],
    output: Path | None,
    *,
    suffix: str | None,
    fmt: str = "auto",
    recursive: bool = False,
) -> list[Job]:
    """Map inputs to outputs.

    One input and ``-o`` that is not an existing folder and has an image extension: that file.
    Otherwise ``-o`` is a folder (the tree below each input folder mirrored with ``--recursive``);
    without ``-o`` results go beside their inputs with the ``_deblurred`` suffix.

    Raises:
        UsageError: two inputs would write the same output, or an output would replace its input.
    """
    single_file = (
        output is not None and len(inputs) == 1 and not output.is_dir()
        and output.suffix.lower() in set(FORMAT_SUFFIXES.values()) | {".jpeg", ".tiff"}
    )
    jobs: list[Job] = []
    for path, base in inputs:
        if single_file:
            assert output is not None
            target = output
        else:
            ext = output_suffix(path, fmt)
            if output is None:
                name = f"{path.stem}{suffix if suffix is not None else DEFAULT_SUFFIX}{ext}"
                target = path.with_name(name)
            else:
                name = f"{path.stem}{suffix or ''}{ext}"
                mirror = recursive and path.is_relative_to(base)
                rel = path.parent.relative_to(base) if mirror else Path()
                target = output / rel / name
        jobs.append(Job(path, target))
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.output.resolve()
        if key == job.input.resolve():
            raise UsageError(f"{job.output}: output would replace its input; use -o or --suffix")
        if key in seen:
            raise UsageError(
                f"{seen[key]} and {job.input} would both be written to {job.output}; "
                "use --recursive or a different --format/--suffix"
            )
        seen[key] = job.input
    return jobs


def resolve_conflicts(
    jobs: list[Job], *, overwrite: bool, skip_existing: bool
) -> tuple[list[Job], list[Job]]:
    """Split jobs into (to run, skipped) by the existing-output policy.

    Raises:
        UsageError: outputs exist and neither ``--overwrite`` nor ``--skip-existing`` was given.
    """
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    existing = [job for job in jobs if job.output.exists()]
    if existing and not (overwrite or skip_existing):
        shown = ", ".join(str(job.output) for job in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise UsageError(
            f"{len(existing)} output(s) already exist ({shown}{more}); "
            "pass --overwrite or --skip-existing"
        )
    if skip_existing:
        skipped = set(map(id, existing))
        return [j for j in jobs if id(j) not in skipped], existing
    return jobs, []


def kernel_paths(image_out: Path, kernel_out: Path | None, n_jobs: int) -> tuple[Path, Path]:
    """Where ``deconvolve-blind`` writes one image's kernel: (PNG view, exact .txt/.npy).

    ``kernel_out`` is a file for a single input, else a folder; by default the kernel goes
    beside the image as ``<stem>_kernel.png`` and ``<stem>_kernel.txt``.
    """
    if kernel_out is None or (n_jobs > 1 or kernel_out.is_dir() or not kernel_out.suffix):
        folder = image_out.parent if kernel_out is None else kernel_out
        base = folder / f"{image_out.stem}_kernel"
        return base.with_suffix(".png"), base.with_suffix(".txt")
    if kernel_out.suffix.lower() not in (".png", ".txt", ".npy"):
        raise UsageError("--kernel-out: use a .png, .txt or .npy file or a folder")
    exact = kernel_out if kernel_out.suffix.lower() != ".png" else kernel_out.with_suffix(".txt")
    return kernel_out.with_suffix(".png"), exact


def refuse_existing_kernels(paths: list[tuple[Path, Path]], overwrite: bool) -> None:
    """Refuse (exit 2) to replace existing kernel files unless ``overwrite``."""

    existing = [p for pair in paths for p in pair if p.exists()]
    if existing and not overwrite:
        raise UsageError(f"kernel file(s) already exist ({existing[0]}); pass --overwrite")
