"""Benchmark datasets: folder pairs, the Levin09 preset and a seeded synthetic preset.

A :class:`Dataset` is a list of lazily loaded :class:`Sample` s plus the scoring protocol:
``"full"`` (PSNR/SSIM on the whole image, optionally without a border) or ``"shift"`` (the
shift-tolerant protocol of Levin et al.: ``metrics.compare_upto_shift`` with ``max_shift`` and a
``crop``-pixel border).

Kernels are always returned in *true-convolution* orientation (centre ``(kh//2, kw//2)``), the
convention of :mod:`deblurcli.deconv` and :func:`deblurcli.degrade.convolve`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from deblurcli.errors import UsageError

DATA_ENV = "DEBLURCLI_DATA"
"""Environment variable naming the shared data folder (the one holding ``levin09/``)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
KERNEL_SUFFIXES = (".txt", ".csv", ".npy", ".png")
Protocol = Literal["full", "shift"]


@dataclass(frozen=True)
class Pair:
    """One loaded benchmark item."""

    name: str
    """Identifier used in tables (file stem or ``im1_kernel1``)."""
    blurred: np.ndarray
    """Blurred input, float32 ``H × W × C`` in [0, 1]."""
    sharp: np.ndarray
    """Ground truth, same shape as ``blurred``."""
    kernel: np.ndarray | None
    """True blur kernel (true-convolution orientation), when known."""


@dataclass(frozen=True)
class Sample:
    """A dataset item that is read (or synthesised) only when :meth:`load` is called."""

    name: str
    loader: Callable[[], Pair] = field(repr=False, compare=False)

    def load(self) -> Pair:
        """Read or synthesise the pair."""
        return self.loader()


@dataclass(frozen=True)
class Dataset:
    """An ordered collection of samples and how to score them."""

    name: str
    samples: tuple[Sample, ...]
    protocol: Protocol = "full"
    """``"full"``: plain PSNR/SSIM; ``"shift"``: the shift-tolerant Levin protocol."""
    max_shift: int = 5
    """Largest shift searched by the ``"shift"`` protocol (pixels)."""
    crop: int = 0
    """Border excluded from scoring (15 for the ``"shift"`` protocol)."""
    has_kernels: bool = False
    """Whether every sample carries its true kernel (enables ``--ground-truth-kernel``)."""
    group_of: Callable[[str], str] | None = field(default=None, compare=False)
    """Maps a sample name to its group (e.g. the GoPro sequence); reports add group means."""

    def head(self, limit: int | None) -> Dataset:
        """The first ``limit`` samples (all when ``None``)."""
        return self if limit is None else replace(self, samples=self.samples[:limit])


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The shared data folder: ``override`` (``--data``), else ``$DEBLURCLI_DATA``, else
    ``../shared/data`` beside the source checkout."""
    if override is not None:
        return Path(override)
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _read(path: Path) -> np.ndarray:
    from deblurcli.io import read_image

    return np.asarray(read_image(path).pixels, dtype=np.float32)


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    return {
        p.stem: p for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    }


def folder_pairs(
    blurred_dir: str | os.PathLike[str],
    sharp_dir: str | os.PathLike[str],
    *,
    kernel_dir: str | os.PathLike[str] | None = None,
    crop: int = 0,
    shift_tolerant: bool = False,
    kernel_convention: str = "convolve",
) -> Dataset:
    """Pairs of images with matching names (file stems) in two folders.

    Args:
        blurred_dir: Folder of blurred images.
        sharp_dir: Folder of sharp images; names match ``blurred_dir`` up to the extension.
        kernel_dir: Optional folder of true kernels (``.txt``/``.csv``/``.npy``/``.png``) with
            the same stems, oriented as ``kernel_convention`` says (``correlate``: rotated by
            180° on read, so that samples carry true-convolution kernels).
        crop: Border excluded from scoring.
        shift_tolerant: Score with the shift-tolerant protocol (max shift 5, crop ≥ 15).

    Raises:
        UsageError: a folder is missing, no names match, or a kernel is missing.
    """
    blurred = _files(Path(blurred_dir), IMAGE_SUFFIXES)
    sharp = _files(Path(sharp_dir), IMAGE_SUFFIXES)
    names = sorted(set(blurred) & set(sharp))
    if not names:
        raise UsageError(f"no file names in {blurred_dir} match those in {sharp_dir}")
    kernels = _files(Path(kernel_dir), KERNEL_SUFFIXES) if kernel_dir is not None else {}
    missing = [n for n in names if kernel_dir is not None and n not in kernels]
    if missing:
        raise UsageError(f"no kernel in {kernel_dir} for {', '.join(missing[:5])}")

    def loader(name: str) -> Callable[[], Pair]:
        def load() -> Pair:
            from deblurcli.kernels import read_kernel

            k = read_kernel(kernels[name]) if name in kernels else None
            if k is not None and kernel_convention == "correlate":
                k = np.ascontiguousarray(k[::-1, ::-1])
            return Pair(name, _read(blurred[name]), _read(sharp[name]), k)

        return load

    return Dataset(
        name=f"{Path(blurred_dir).name}:{Path(sharp_dir).name}",
        samples=tuple(Sample(n, loader(n)) for n in names),
        protocol="shift" if shift_tolerant else "full",
        crop=max(crop, 15) if shift_tolerant else crop,
        has_kernels=bool(kernels),
    )


def levin(root: str | os.PathLike[str] | None = None) -> Dataset:
    """Levin et al. 2009: 4 grey images × 8 real camera-shake kernels, shift-tolerant protocol.

    Reads ``levin/im{i}_kernel{j}_img.png``, ``levin/gt/im{i}.png`` and the exact float64
    kernels ``kernels_double/levin09_kernel{j}.txt`` under ``root`` (default
    ``data_dir()/levin09``). The blurred images follow ``correlate(x, k_txt)``, so each kernel is
    rotated by 180° to give the true-convolution kernel. Scoring: max shift 5 px, crop 15 px.

    Raises:
        UsageError: the folder or one of its files is missing.
    """
    base = Path(root) if root is not None else data_dir() / "levin09"
    if not (base / "levin").is_dir():
        raise UsageError(f"Levin09 data not found in {base}: pass --data DIR or set "
                         f"{DATA_ENV}=DIR, where DIR holds levin09/")

    def loader(i: int, j: int) -> Callable[[], Pair]:
        def load() -> Pair:
            from deblurcli.kernels import read_kernel

            k_txt = read_kernel(base / "kernels_double" / f"levin09_kernel{j}.txt")
            blurred = _read(base / "levin" / f"im{i}_kernel{j}_img.png")
            sharp = _read(base / "levin" / "gt" / f"im{i}.png")
            return Pair(f"im{i}_kernel{j}", blurred, sharp, np.ascontiguousarray(k_txt[::-1, ::-1]))

        return load

    samples = tuple(
        Sample(f"im{i}_kernel{j}", loader(i, j)) for i in range(1, 5) for j in range(1, 9)
    )
    return Dataset("levin", samples, protocol="shift", max_shift=5, crop=15, has_kernels=True)


def synthetic(
    sharp_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    noise: float = 0.01,
    kernel_size: int = 31,
    kinds: tuple[str, ...] = ("motion",),
    crop: int = 0,
) -> Dataset:
    """Sharp images blurred by seeded random kernels plus Gaussian noise (reproducible).

    Item ``n`` (in sorted file order) draws its kernel and noise from
    ``SeedSequence([seed, n])``: ``kernels.random_kernel`` then ``degrade.apply_kernel``
    (reflecting boundary, Gaussian noise), clipped to [0, 1].

    Args:
        sharp_dir: Folder of sharp images.
        seed: Base seed; same seed, same dataset.
        noise: Noise σ on the [0, 1] scale.
        kernel_size: Odd kernel side.
        kinds: Kernel kinds for ``random_kernel`` (motion, gaussian, defocus).
        crop: Border excluded from scoring.
    """
    files = _files(Path(sharp_dir), IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no images in {sharp_dir}")

    def loader(n: int, name: str) -> Callable[[], Pair]:
        def load() -> Pair:
            from deblurcli import degrade, kernels

            kernel_rng, noise_rng = (
                np.random.default_rng(s) for s in np.random.SeedSequence([seed, n]).spawn(2)
            )
            sharp = _read(files[name])
            k = kernels.random_kernel(kernel_rng, kinds=kinds, max_size=kernel_size)
            blurred = degrade.apply_kernel(sharp, k, noise_rng, noise=noise)
            return Pair(name, blurred, sharp, k)

        return load

    samples = tuple(Sample(name, loader(n, name)) for n, name in enumerate(files))
    return Dataset(f"synthetic:{Path(sharp_dir).name}@{seed}", samples, crop=crop, has_kernels=True)


SHAKE_SEED = 0
"""Seed of the ``shake`` preset (fixed: the same images on every machine and run)."""


def shake(root: str | os.PathLike[str] | None = None, *, seed: int = SHAKE_SEED) -> Dataset:
    """The fixed validation preset for learned models: ``sharp_val`` under camera shake.

    Every image of ``root`` (default ``data_dir()/sharp_val``: BSDS500 val and Set14, sorted by
    path, grey images as RGB) is blurred by :data:`deblurcli.degrade.SHAKE_BENCH_RECIPE` — a
    seeded Boracchi–Foi camera-shake kernel of 15–51 px (reflecting border) plus σ = 0.01
    Gaussian noise, on the 8-bit grid — with the generator ``SeedSequence([seed, n])`` of item
    ``n``. Scoring leaves out a 16-px border. Samples carry their true kernels.
    """
    from deblurcli.train.data import list_images

    base = Path(root) if root is not None else data_dir() / "sharp_val"
    if not base.is_dir():
        raise UsageError(f"sharp_val data not found in {base} (pass --data DIR or set ${DATA_ENV})")
    files = list_images(base)

    def loader(n: int, path: Path) -> Callable[[], Pair]:
        def load() -> Pair:
            from deblurcli.degrade import SHAKE_BENCH_RECIPE, synthesize

            sharp = _read(path)
            sharp = np.repeat(sharp, 3, axis=2) if sharp.shape[2] == 1 else sharp[..., :3]
            rng = np.random.default_rng(np.random.SeedSequence([seed, n]))
            pair = synthesize(sharp, rng, SHAKE_BENCH_RECIPE, margin=0)
            return Pair(path.stem, pair.blurry, sharp, pair.kernel)

        return load

    samples = tuple(Sample(p.stem, loader(n, p)) for n, p in enumerate(files))
    return Dataset(f"shake@{seed}", samples, crop=16, has_kernels=True)


def gopro_dev(root: str | os.PathLike[str] | None = None) -> Dataset:
    """Real motion blur: the ``gopro_dev`` pairs ``X.png`` / ``X_gt.png``, grouped by sequence.

    Reports give a mean per sequence: GOPR0374 is the clean check; the GOPR0477 pairs overlap
    the frames of ``gopro_frames`` that training may average.
    """
    base = Path(root) if root is not None else data_dir() / "gopro_dev"
    if not base.is_dir():
        raise UsageError(f"gopro_dev data not found in {base} (pass --data DIR or set ${DATA_ENV})")
    files = _files(base, IMAGE_SUFFIXES)
    names = sorted(n for n in files if not n.endswith("_gt") and n + "_gt" in files)

    def loader(name: str) -> Callable[[], Pair]:
        return lambda: Pair(name, _read(files[name]), _read(files[name + "_gt"]), None)

    return Dataset("gopro_dev", tuple(Sample(n, loader(n)) for n in names),
                   group_of=lambda name: name.split("_st_")[0])


def city100(root: str | os.PathLike[str] | None = None) -> Dataset:
    """Real lens blur: City100 Nikon pairs, ``NNNL`` (short focal length) against ``NNNH``."""
    base = Path(root) if root is not None else data_dir() / "real_pairs" / "city100_nikon"
    if not base.is_dir():
        raise UsageError(f"city100 data not found in {base} (pass --data DIR or set ${DATA_ENV})")
    files = _files(base, IMAGE_SUFFIXES)
    names = sorted(n[:-1] for n in files if n.endswith("L") and n[:-1] + "H" in files)

    def loader(name: str) -> Callable[[], Pair]:
        return lambda: Pair(name, _read(files[name + "L"]), _read(files[name + "H"]), None)

    return Dataset("city100_nikon", tuple(Sample(n, loader(n)) for n in names))


PRESETS = ("levin", "shake", "gopro_dev", "city100", "synthetic")
"""Names ``bench quality --preset`` accepts."""


def open_dataset(
    *,
    preset: str | None,
    blurred: Path | None = None,
    sharp: Path | None = None,
    kernels: Path | None = None,
    seed: int = 0,
    noise: float = 0.01,
    crop: int = 0,
    shift_tolerant: bool = False,
    data: Path | None = None,
    kernel_convention: str = "convolve",
) -> Dataset:
    """Build the dataset the CLI options describe (a preset, or ``--blurred``/``--sharp``).

    ``data`` (``--data``) is the folder holding the presets' data (default: :func:`data_dir`).

    Raises:
        UsageError: an inconsistent combination, with the spelling that would work.
    """
    if preset == "levin":
        if blurred or sharp:
            raise UsageError("--preset levin takes no --blurred/--sharp")
        return levin(data_dir(data) / "levin09")
    if preset in ("shake", "gopro_dev", "city100"):
        if blurred or sharp:
            raise UsageError(f"--preset {preset} takes no --blurred/--sharp")
        folder = {"shake": "sharp_val", "gopro_dev": "gopro_dev",
                  "city100": "real_pairs/city100_nikon"}[preset]
        return {"shake": shake, "gopro_dev": gopro_dev, "city100": city100}[preset](
            data_dir(data) / folder)
    if preset == "synthetic":
        if sharp is None or blurred is not None:
            raise UsageError("--preset synthetic needs --sharp DIR (and no --blurred)")
        return synthetic(sharp, seed=seed, noise=noise, crop=crop)
    if preset is not None:
        raise UsageError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if blurred is None or sharp is None:
        raise UsageError(f"give --preset {'|'.join(PRESETS)}, or --blurred DIR --sharp DIR")
    return folder_pairs(
        blurred, sharp, kernel_dir=kernels, crop=crop, shift_tolerant=shift_tolerant,
        kernel_convention=kernel_convention,
    )
