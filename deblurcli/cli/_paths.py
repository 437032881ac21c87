"""Input expansion and output planning for batch commands, all checked before any compute.

Every file an item will write (the image and any kernel files) is planned here, checked for
collisions with every other planned file and with every input, and its location is validated
(format, parent folders, permissions), so mistakes cost no compute.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from deblurcli.errors import UsageError

FORMAT_SUFFIXES = {"png": ".png", "tif": ".tif", "tiff": ".tif", "jpg": ".jpg", "jpeg": ".jpg",
                   "webp": ".webp", "bmp": ".bmp"}
JUNK_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}
DEFAULT_SUFFIX = "_deblurred"


@dataclass(frozen=True)
class Job:
    """One input file and every file its item writes."""

    input: Path
    output: Path
    base: Path | None = None
    """The folder (or glob root) the input was found under; its path below it names the
    shard the item belongs to and the sub-folder mirrored with ``--recursive``."""
    extras: dict[str, Path] = field(default_factory=dict, hash=False)
    """Further files written with the image, by role (e.g. ``kernel``, ``kernel_png``)."""

    @property
    def outputs(self) -> list[Path]:
        """The image first, then the extras."""
        return [self.output, *self.extras.values()]

    @property
    def key(self) -> str:
        """The input's path below its base (POSIX form): stable across machines and mounts."""
        if self.base is not None and self.input.is_relative_to(self.base):
            return self.input.relative_to(self.base).as_posix()
        return self.input.as_posix()


def _image_suffixes() -> frozenset[str]:
    from deblurcli.io import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _is_candidate(path: Path, suffixes: frozenset[str]) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.name.lower() not in JUNK_NAMES
        and path.suffix.lower() in suffixes
    )


def collect_inputs(specs: list[str], *, recursive: bool,
                   exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """Expand files, folders and globs to ``(file, base folder)`` pairs, sorted, deduplicated.

    A file named explicitly is always taken (a bad one, a FIFO included, is reported later, per
    file); inside folders and globs only image suffixes count, and hidden/OS junk files are
    skipped, as is everything below ``exclude`` (the output folder, so that ``-r -o
    photos/out`` run twice over ``photos`` does not take its own results as inputs).

    Raises:
        UsageError: a spec that matches nothing, or no inputs at all; the message names it.
    """
    suffixes = _image_suffixes()
    excluded = exclude.resolve() if exclude is not None else None

    def skipped_below(root: Path) -> Path | None:
        # only an output folder strictly inside the searched folder is skipped; -o equal to
        # an input folder is left to check_plan, which names the files it would replace
        root = root.resolve()
        inside = excluded is not None and excluded != root and excluded.is_relative_to(root)
        return excluded if inside else None

    def wanted(path: Path, skip: Path | None) -> bool:
        if skip is not None and path.resolve().is_relative_to(skip):
            return False
        return _is_candidate(path, suffixes)

    found: dict[Path, Path] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            before = len(found)
            skip = skipped_below(path)
            for child in sorted(path.glob(pattern)):
                rel_parts = child.relative_to(path).parts
                if any(part.startswith(".") for part in rel_parts):
                    continue
                if wanted(child, skip):
                    found.setdefault(child, path)
            if len(found) == before and len(specs) == 1:
                hint = "" if recursive else " (--recursive descends into sub-folders)"
                raise UsageError(f"{path}: folder holds no image files{hint}")
        elif path.exists() or path.is_symlink():
            found.setdefault(path, path.parent)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=recursive))
            base = _glob_base(spec)
            skip = skipped_below(base)
            matches = [m for m in matches if wanted(m, skip)]
            if not matches:
                raise UsageError(f"no image files match {spec!r}")
            for match in matches:
                found.setdefault(match, base)
        else:
            raise UsageError(f"{spec}: no such file or folder")
    if not found:
        supported = ", ".join(sorted(suffixes))
        raise UsageError(f"no input images found in {', '.join(specs)} (supported: {supported})")
    return sorted(found.items())


def _glob_base(spec: str) -> Path:
    """The leading part of a glob pattern that has no wildcard."""
    parts = []
    for part in Path(spec).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def check_suffix(suffix: str | None) -> None:
    """Refuse a ``--suffix`` that would leave the output folder (``/``, ``\\``, ``..``, NUL).

    Raises:
        UsageError: the suffix is not a plain file-name fragment.
    """
    if suffix is None:
        return
    if any(bad in suffix for bad in ("/", "\\", "\0")) or ".." in suffix:
        raise UsageError(f"--suffix {suffix!r}: must be part of a file name (no '/', '\\' or "
                         "'..'); use -o to choose a folder")  # fmt: skip


def output_suffix(input_path: Path, fmt: str) -> str:
    """File extension of the output: the input's for ``auto``, else the format's.

    An input named explicitly without an image extension (``notes.txt``) plans a ``.png``
    output, so that the batch does not stop at planning: reading that input fails on its own,
    with an error naming it, and the other files are still processed.
    """
    if fmt == "auto":
        return input_path.suffix if input_path.suffix.lower() in _image_suffixes() else ".png"
    try:
        return FORMAT_SUFFIXES[fmt.lower()]
    except KeyError:
        formats = ", ".join(FORMAT_SUFFIXES)
        raise UsageError(f"unknown --format {fmt!r}; use auto, {formats}") from None


def _single_file_output(output: Path | None, n_inputs: int, fmt: str) -> bool:
    """Whether ``-o`` names one output file (else a folder); refuses ambiguous ``-o`` values.

    Raises:
        UsageError: ``-o FILE`` with several inputs, ``-o`` with a suffix that is no image
            format (``out.gif``), an existing non-image file, or a ``--format`` that contradicts
            the ``-o`` file's suffix.
    """
    if output is None or output.is_dir():
        return False
    suffix = output.suffix.lower()
    is_image = suffix in _image_suffixes()
    if output.exists() and not is_image:
        raise UsageError(f"-o {output}: an existing file that is not an image; give an image "
                         "file name or a folder")  # fmt: skip
    if not is_image:
        if suffix and not output.exists():
            known = ", ".join(sorted(_image_suffixes()))
            raise UsageError(f"-o {output}: {suffix!r} is not an output image format ({known}); "
                             "for a folder of that name, create it first")  # fmt: skip
        return False
    if n_inputs > 1:
        raise UsageError(f"-o {output} names one file but there are {n_inputs} inputs; give a "
                         "folder instead")  # fmt: skip
    same = {".jpeg": ".jpg", ".tiff": ".tif"}
    if fmt != "auto" and FORMAT_SUFFIXES[fmt.lower()] != same.get(suffix, suffix):
        raise UsageError(f"-o {output} contradicts --format {fmt}")
    return True


def plan_outputs(
    inputs: list[tuple[Path, Path]],
    output: Path | None,
    *,
    suffix: str | None,
    fmt: str = "auto",
    recursive: bool = False,
    default_suffix: str = DEFAULT_SUFFIX,
) -> list[Job]:
    """Map inputs to outputs.

    ``-o`` that is not an existing folder and has an image extension names the one output file
    (several inputs are then an error). Otherwise ``-o`` is a folder (the tree below each input
    folder mirrored with ``--recursive``); without ``-o`` results go beside their inputs with
    ``default_suffix`` (or ``--suffix``).

    Raises:
        UsageError: see :func:`_single_file_output` and :func:`check_plan`; a bad ``--suffix``.
    """
    check_suffix(suffix)
    output_suffix(Path("x.png"), fmt)  # validate --format even for a single file output
    single_file = _single_file_output(output, len(inputs), fmt)
    jobs: list[Job] = []
    for path, base in inputs:
        if single_file:
            assert output is not None
            target = output
        else:
            ext = output_suffix(path, fmt)
            if output is None:
                name = f"{path.stem}{suffix if suffix is not None else default_suffix}{ext}"
                target = path.with_name(name)
            else:
                name = f"{path.stem}{suffix or ''}{ext}"
                mirror = recursive and path.is_relative_to(base)
                rel = path.parent.relative_to(base) if mirror else Path()
                target = output / rel / name
        jobs.append(Job(path, target, base))
    check_plan(jobs)
    return jobs


def check_plan(jobs: list[Job], protected: tuple[Path, ...] = ()) -> None:
    """Check every planned file before any compute.

    No two planned files (images, kernels) may be the same file; none may be an input of the
    batch or a ``protected`` file (e.g. the kernel file being read); every output must have a
    writable image format, must not be an existing folder, and must lie below a writable folder.

    Raises:
        UsageError: the first problem found, naming the files involved.
    """
    from deblurcli.errors import UnsupportedImageError
    from deblurcli.io import format_from_suffix

    inputs = {job.input.resolve(): job.input for job in jobs}
    inputs.update({p.resolve(): p for p in protected})
    seen: dict[Path, tuple[Path, str]] = {}
    checked: set[Path] = set()
    for job in jobs:
        try:
            format_from_suffix(job.output)
        except UnsupportedImageError as exc:
            raise UsageError(str(exc)) from None
        for role, target in (("image", job.output), *job.extras.items()):
            key = target.resolve()
            if key in inputs:
                what = "its input" if key == job.input.resolve() else f"the input {inputs[key]}"
                raise UsageError(f"{target}: the {role} output would replace {what}; use -o or "
                                 "--suffix")  # fmt: skip
            if key in seen:
                other, other_role = seen[key]
                raise UsageError(f"{target}: the {other_role} of {other} and the {role} of "
                                 f"{job.input} would both be written there; use -o, "
                                 "--recursive or a different --suffix")  # fmt: skip
            seen[key] = (job.input, role)
            _check_location(target, checked)


def _check_location(target: Path, checked: set[Path]) -> None:
    """``target`` is not a folder and its nearest existing ancestor is a writable folder."""
    if target.is_dir():
        raise UsageError(f"{target}: is a folder; an output file cannot replace it")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():
            break
        folder = folder.parent
    if folder in checked:
        return
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: is a file, so {target} cannot be written below it")
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{folder}: cannot write into this folder (permission denied)")
    checked.add(folder)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``K/N`` (1 ≤ K ≤ N) → ``(K, N)``; ``None`` → ``None``.

    Raises:
        UsageError: anything else.
    """
    if text is None:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: use K/N, e.g. 2/8") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def shard_of(job: Job, n: int) -> int:
    """The shard (1..n) an item belongs to: a hash of its path below its base folder, so the
    split depends neither on the order of listing nor on where the data is mounted."""
    digest = hashlib.sha256(job.key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def select_shard(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    """The jobs of shard ``K/N`` (all jobs for ``None``); shards 1..N partition ``jobs``."""
    if shard is None:
        return jobs
    k, n = shard
    return [job for job in jobs if shard_of(job, n) == k]


def resolve_conflicts(
    jobs: list[Job], *, overwrite: bool, skip_existing: bool
) -> tuple[list[Job], list[Job]]:
    """Split jobs into (to run, skipped) by the existing-output policy.

    An item whose image exists is skipped under ``--skip-existing``; any other existing planned
    file (a kernel left without its image) is refused unless ``--overwrite``.

    Raises:
        UsageError: outputs exist and neither ``--overwrite`` nor ``--skip-existing`` was given.
    """
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing exclude each other")
    if overwrite:
        return jobs, []
    skipped = [job for job in jobs if skip_existing and job.output.exists()]
    skipped_ids = set(map(id, skipped))
    todo = [job for job in jobs if id(job) not in skipped_ids]
    existing = [p for job in todo for p in job.outputs if p.exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise UsageError(
            f"{len(existing)} output(s) already exist ({shown}{more}); "
            "pass --overwrite or --skip-existing"
        )
    return todo, skipped


def kernel_paths(image_out: Path, kernel_out: Path | None, n_jobs: int) -> tuple[Path, Path]:
    """Where ``deconvolve-blind`` writes one image's kernel: (PNG view, exact .txt/.npy).

    ``kernel_out`` is a file for a single input, else a folder; by default the kernel goes
    beside the image as ``<stem>_kernel.png`` and ``<stem>_kernel.txt``.

    Raises:
        UsageError: ``kernel_out`` is a file name with a suffix other than .png/.txt/.npy.
    """
    if kernel_out is None or (n_jobs > 1 or kernel_out.is_dir() or not kernel_out.suffix):
        folder = image_out.parent if kernel_out is None else kernel_out
        base = folder / f"{image_out.stem}_kernel"
        return base.with_suffix(".png"), base.with_suffix(".txt")
    if kernel_out.suffix.lower() not in (".png", ".txt", ".npy"):
        raise UsageError("--kernel-out: use a .png, .txt or .npy file or a folder")
    exact = kernel_out if kernel_out.suffix.lower() != ".png" else kernel_out.with_suffix(".txt")
    return kernel_out.with_suffix(".png"), exact
