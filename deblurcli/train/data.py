"""Training data: synthetic pairs, paired folders, GoPro layouts, frame averaging, validation.

Every training sample is a pure function of ``(seed, sample index)``: the sample's random
generator is seeded from both, and the image it starts from comes from a per-epoch permutation
of the source files seeded the same way. A data stream is therefore identical for any number of
loader workers, and resuming at step ``s`` only means starting the index stream at ``s``.
Step ``s`` of process ``rank`` out of ``world`` uses the indices
``(s * world + rank) * batch + j`` for ``j < batch``, so processes never share a sample.

Samples are dicts of ``C × H × W`` float32 tensors in [0, 1]: ``blurry``, ``sharp`` and, for
reference-frame data, ``reference``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deblurcli.degrade import Recipe, synthesize
from deblurcli.errors import UsageError
from deblurcli.train.config import DataConfig, ValConfig, recipe_of

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PACK_FORMAT = "1"
Sample = dict[str, torch.Tensor]


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for ``(seed, *keys)`` (e.g. seed, stream id, sample index)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files below ``folder`` (recursively), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a directory of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    if pixels.shape[2] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=2)
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return luma[..., None]


def read_rgb(path: Path, channels: int = 3) -> np.ndarray:
    """``H × W × channels`` float32 pixels of an image file."""
    from deblurcli.io import read_image

    return _channels(read_image(path).pixels, channels)


def find_pairs(
    blurred: str | os.PathLike[str],
    sharp: str | os.PathLike[str] | None = None,
) -> list[tuple[Path, Path]]:
    """Matching (blurred, sharp) files: same stem in two folders, or ``X`` / ``X_gt`` in one."""
    blur_files = list_images(blurred)
    if sharp is None or Path(sharp) == Path(blurred):
        by_stem = {p.stem: p for p in blur_files}
        pairs = [(p, by_stem[p.stem + "_gt"]) for p in blur_files if p.stem + "_gt" in by_stem]
    else:
        sharp_by_stem = {p.stem: p for p in list_images(sharp)}
        pairs = [(p, sharp_by_stem[p.stem]) for p in blur_files if p.stem in sharp_by_stem]
    if not pairs:
        raise UsageError(
            f"no matching blurred/sharp pairs in {blurred}" + (f" and {sharp}" if sharp else "")
        )
    return pairs


def gopro_pairs(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Pairs of the GoPro layout ``ROOT/SEQ/blur/*.png`` + ``ROOT/SEQ/sharp/*.png``."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory (GoPro layout ROOT/SEQ/blur, ROOT/SEQ/sharp)")
    pairs: list[tuple[Path, Path]] = []
    for seq in sorted(
        p for p in root.iterdir() if (p / "blur").is_dir() and (p / "sharp").is_dir()
    ):
        pairs += find_pairs(seq / "blur", seq / "sharp")
    if not pairs:
        raise UsageError(f"{root}: no SEQ/blur + SEQ/sharp folders (GoPro layout)")
    return pairs


# --------------------------------------------------------------------------- sharp sources


class PackSource:
    """Sharp crops stored as JPEG bytes in one safetensors file (see :func:`build_pack`)."""

    def __init__(self, path: str | os.PathLike[str], channels: int = 3) -> None:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        self.data, self.offsets = tensors["data"], tensors["offsets"]
        self.channels = channels

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        raw = self.data[self.offsets[i] : self.offsets[i + 1]]
        bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
        return _channels(
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0, self.channels
        )


class FolderSource:
    """Sharp images read from files on demand."""

    def __init__(self, files: Sequence[Path], channels: int = 3) -> None:
        self.files, self.channels = list(files), channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        return read_rgb(self.files[i], self.channels)


def open_sharp_source(path: str, channels: int = 3) -> PackSource | FolderSource:
    """A folder of images or a ``.safetensors`` pack."""
    if path.endswith(".safetensors"):
        if not Path(path).is_file():
            raise UsageError(f"{path}: pack file not found (build it with `deblurcli train pack`)")
        return PackSource(path, channels)
    return FolderSource(list_images(path), channels)


def build_pack(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    crop: int = 320,
    per_image: int = 2,
    quality: int = 92,
    seed: int = 0,
) -> int:
    """Write random ``crop``² crops of every image under ``sources`` as one compact file.

    Returns:
        The number of crops written.
    """
    from safetensors.numpy import save_file

    from deblurcli._atomic import atomic_path

    files = [f for src in sources for f in list_images(src)]
    blobs: list[np.ndarray] = []
    for index, path in enumerate(files):
        pixels = read_rgb(path)
        rng = sample_rng(seed, 2, index)
        for _ in range(per_image):
            region = _random_region(pixels, crop, rng)
            u8 = np.round(region * 255.0).astype(np.uint8)
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
            )
            if not ok:
                raise RuntimeError(f"{path}: JPEG encoding failed")
            blobs.append(buf.reshape(-1))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    meta = {
        "deblurcli.pack": PACK_FORMAT,
        "crop": str(crop),
        "images": str(len(files)),
        "sources": ",".join(str(s) for s in sources),
    }
    with atomic_path(out) as tmp:
        save_file({"data": np.concatenate(blobs), "offsets": offsets}, str(tmp), metadata=meta)
    return len(blobs)


# --------------------------------------------------------------------------- pair packs

PAIR_PACK_FORMAT = "pairs-1"


@lru_cache(maxsize=1024)
def _decoded_u8(path: str, channels: int) -> np.ndarray:
    """A whole image as ``H × W × C`` uint8 (cached per process while a pack is built)."""
    return np.round(read_rgb(Path(path), channels) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class PoolSpec:
    """What pair ``j`` of a seeded pool is made from (see :func:`pool_pair`)."""

    files: tuple[str, ...]
    """Sharp photos, sorted."""
    size: int
    """Side of the stored pairs."""
    recipe: Recipe
    seed: int
    channels: int = 3
    frame_sequences: tuple[tuple[str, ...], ...] = ()
    """Folders of consecutive sharp frames (GoPro-style pairs by frame averaging)."""
    frames_prob: float = 0.0
    """Fraction of pairs made by averaging 7–13 consecutive frames instead of a synthetic blur."""


def pool_spec_of(cfg: Any) -> PoolSpec:
    """The pool a training config's ``[data]`` section describes (``cfg``: a TrainConfig)."""
    from deblurcli.degrade import read_frame_sequence
    from deblurcli.train.config import recipe_of

    d = cfg.data
    files: list[Path] = []
    for source in d.sharp.split(","):
        files += list_images(source.strip())
    sequences: list[tuple[str, ...]] = []
    if d.frames_root and d.frames_prob > 0:
        root = Path(d.frames_root)
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for folder in folders or [root]:
            sequences.append(tuple(str(f) for f in read_frame_sequence(folder)))
    return PoolSpec(
        files=tuple(str(f) for f in files),
        size=d.pack_size or d.crop + 16,
        recipe=recipe_of(d),
        seed=cfg.run.seed,
        frame_sequences=tuple(sequences),
        frames_prob=d.frames_prob,
    )


def pool_pair(spec: PoolSpec, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pair ``index`` of the pool: ``(blurry, sharp, guide)``, ``size × size × C`` float32 on the
    8-bit grid; ``guide`` (``size × size × 2C``) only for restored pairs of a recipe with
    ``deconvolve_guide``, else None.

    A pure function of ``(spec, index)``: the same pair whether it is packed or made on the fly.
    """
    from deblurcli.degrade import average_frames, quantize8

    rng = sample_rng(spec.seed, 5, index)
    if spec.frame_sequences and rng.random() < spec.frames_prob:
        frames = spec.frame_sequences[int(rng.integers(len(spec.frame_sequences)))]
        n = 7 + 2 * int(rng.integers(4))
        start = int(rng.integers(0, len(frames) - n + 1))
        stack = [_decoded_u8(frames[start + i], spec.channels) for i in range(n)]
        h, w = stack[0].shape[:2]
        top, left = int(rng.integers(0, h - spec.size + 1)), int(rng.integers(0, w - spec.size + 1))
        crops = [f[top : top + spec.size, left : left + spec.size] / np.float32(255) for f in stack]
        crops = _augment(crops, rng)
        return quantize8(average_frames(crops)), quantize8(crops[n // 2]), None
    path = spec.files[int(rng.integers(len(spec.files)))]
    pixels = _decoded_u8(path, spec.channels)
    region = _random_region(pixels, spec.size + 2 * spec.recipe.margin, rng)
    (region,) = _augment([region.astype(np.float32) / np.float32(255)], rng)
    pair = synthesize(region, rng, spec.recipe)
    return pair.blurry, pair.sharp, pair.guide


def _pool_chunk(spec: PoolSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    pairs = [pool_pair(spec, j) for j in range(start, stop)]
    to_u8 = lambda a: np.round(a * 255.0).astype(np.uint8)  # noqa: E731
    arrays = {
        "blurry": np.stack([to_u8(b) for b, _, _ in pairs]),
        "sharp": np.stack([to_u8(s) for _, s, _ in pairs]),
    }
    if spec.recipe.deconvolve_guide:
        missing = [start + i for i, (_, _, g) in enumerate(pairs) if g is None]
        if missing:
            raise ValueError(f"pool pairs {missing[:3]} carry no guide (recipe: every pair must "
                             "be restored, no frame averages)")
        arrays["guide"] = np.stack([to_u8(g) for _, _, g in pairs])
    return arrays


def build_pair_pack(
    spec: PoolSpec,
    count: int,
    out: str | os.PathLike[str],
    *,
    workers: int = 2,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Precompute pairs ``0 .. count - 1`` of the pool into one safetensors file of uint8 arrays.

    Training then reads pairs with almost no CPU (``data.kind = "pack"``). The file holds
    ``blurry`` and ``sharp`` (``count × size × size × C`` uint8), ``guide`` (``× 2C``) when the
    recipe has ``deconvolve_guide``, and, as metadata, the recipe, seed and sources, so a pack
    documents itself.

    Returns:
        The metadata written (plus ``seconds``, the build time).
    """
    import concurrent.futures
    import json
    import time

    from safetensors.numpy import save_file

    from deblurcli._atomic import atomic_path

    t0 = time.monotonic()
    shape = (count, spec.size, spec.size, spec.channels)
    arrays = {"blurry": np.empty(shape, np.uint8), "sharp": np.empty(shape, np.uint8)}
    if spec.recipe.deconvolve_guide:
        arrays["guide"] = np.empty((*shape[:3], 2 * spec.channels), np.uint8)

    def store(a: int, b: int, chunk_arrays: dict[str, np.ndarray]) -> None:
        for key, values in chunk_arrays.items():
            arrays[key][a:b] = values

    chunk = 128
    bounds = [(a, min(a + chunk, count)) for a in range(0, count, chunk)]
    done = 0
    if workers <= 1:
        results = (_pool_chunk(spec, a, b) for a, b in bounds)
        for (a, b), chunk_arrays in zip(bounds, results, strict=True):
            store(a, b, chunk_arrays)
            done += b - a
            if on_progress:
                on_progress(done, count)
    else:
        import multiprocessing

        context = multiprocessing.get_context(WORKER_CONTEXT)
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_pool_chunk, spec, a, b): (a, b) for a, b in bounds}
            for future in concurrent.futures.as_completed(futures):
                a, b = futures[future]
                store(a, b, future.result())
                done += b - a
                if on_progress:
                    on_progress(done, count)
    meta = {
        "deblurcli.pack": PAIR_PACK_FORMAT,
        "count": str(count),
        "size": str(spec.size),
        "seed": str(spec.seed),
        "recipe": json.dumps(dataclasses_asdict(spec.recipe)),
        "images": str(len(spec.files)),
        "frame_sequences": str(len(spec.frame_sequences)),
        "frames_prob": str(spec.frames_prob),
    }
    with atomic_path(out) as tmp:
        save_file(arrays, str(tmp), metadata=meta)
    return {**meta, "seconds": time.monotonic() - t0}


def dataclasses_asdict(obj: object) -> dict[str, object]:
    """``dataclasses.asdict`` (tuples become lists, so the result is plain JSON)."""
    import dataclasses

    return json_ready(dataclasses.asdict(obj))  # type: ignore[call-overload]


def json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value

# --------------------------------------------------------------------------- degradations


def _random_region(pixels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size``² window (reflect-padding images smaller than that)."""
    h, w = pixels.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        pixels = np.pad(
            pixels, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge"
        )
        h, w = pixels.shape[:2]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return pixels[top : top + size, left : left + size]


def _augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip / 90° rotation for every array."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = [np.rot90(a, k) for a in arrays]
    return [np.ascontiguousarray(a[:, ::-1] if flip else a) for a in out]


def synthetic_region_size(cfg: DataConfig) -> int:
    """Side of the sharp window a synthetic pair is cut from (crop plus the blur margin)."""
    return cfg.crop + 2 * (cfg.kernel_size // 2)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))


# --------------------------------------------------------------------------- datasets


class _IndexedDataset(Dataset[Sample]):
    """Index ``i`` → sample; the item of epoch ``i // n`` comes from a seeded permutation."""

    def __init__(self, size: int, cfg: DataConfig, seed: int, channels: int) -> None:
        self.size, self.cfg, self.seed, self.channels = size, cfg, seed, channels

    def __len__(self) -> int:  # a stream: indices are unbounded, this is one epoch
        return self.size

    def _item(self, index: int) -> int:
        return int(_permutation(self.seed, index // self.size, self.size)[index % self.size])


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return sample_rng(seed, 0, epoch).permutation(n)


class SyntheticPairs(_IndexedDataset):
    """Random crops of sharp images, augmented and degraded on the fly."""

    def __init__(self, cfg: DataConfig, seed: int, channels: int = 3) -> None:
        self.source = open_sharp_source(cfg.sharp, channels)
        self.recipe = recipe_of(cfg)
        self.frames: FrameAverages | None = None
        if cfg.reference and cfg.frames_root and cfg.frames_prob > 0:
            import dataclasses

            frames_cfg = dataclasses.replace(cfg, kind="frames", root=cfg.frames_root)
            self.frames = FrameAverages(frames_cfg, seed, channels)
        super().__init__(len(self.source), cfg, seed, channels)

    def __getitem__(self, index: int) -> Sample:
        cfg, rng = self.cfg, sample_rng(self.seed, 1, index)
        if cfg.reference:  # (blurry, sharp, reference) triplets for reference-based models
            use_frames = sample_rng(self.seed, 6, index).random() < cfg.frames_prob
            if self.frames is not None and use_frames:  # a frame triplet (data.frames_root)
                return self.frames[index]
            return synthetic_triplet(self.source[self._item(index)], rng, cfg, self.recipe)
        pixels = self.source[self._item(index)]
        region = _random_region(pixels, synthetic_region_size(cfg), rng)
        if cfg.flips:
            (region,) = _augment([region], rng)
        pair = synthesize(region, rng, self.recipe)
        sample = {"blurry": _tensor(pair.blurry), "sharp": _tensor(pair.sharp)}
        if pair.guide is not None:
            sample["guide"] = _tensor(pair.guide)
        return sample


REFERENCE_SCALE = (0.8, 1.25)
"""Synthetic references: zoom factor range relative to the target (log-uniform)."""
REFERENCE_ROTATION = 8.0
"""Synthetic references: largest rotation in degrees (uniform in ±this)."""
REFERENCE_SHIFT = 0.5
"""Synthetic references: largest shift of the view per axis, as a fraction of the crop; at the
extremes only a quarter of the reference shows the target's content."""
REFERENCE_GAIN = (0.6, 1.6)
"""Synthetic references: exposure gain range in linear light (log-uniform); colour references
also get a per-channel white-balance factor in [0.9, 1.1]."""


def reference_view(
    pixels: np.ndarray, centre: tuple[float, float], size: int, rng: np.random.Generator
) -> np.ndarray:
    """Another sharp view of the scene around ``centre``: shifted, zoomed, rotated, re-exposed.

    The view is a ``size × size`` window of ``pixels`` whose centre is moved from ``centre`` by up
    to :data:`REFERENCE_SHIFT` × ``size`` per axis, scaled by :data:`REFERENCE_SCALE` and rotated
    by up to :data:`REFERENCE_ROTATION` degrees (bilinear, mirrored at the photo's borders), then
    re-exposed by a gain (and white balance) in linear light and put on the 8-bit grid. It
    overlaps the target window only partly, so a model learns to use references that are neither
    aligned nor identical.

    Args:
        pixels: The whole sharp photo, ``H × W × C`` float32 in [0, 1].
        centre: (row, column) of the target window's centre in ``pixels``.
        size: Side of the view.
        rng: Source of every random choice.

    Returns:
        ``size × size × C`` float32 in [0, 1].
    """
    scale = float(np.exp(rng.uniform(np.log(REFERENCE_SCALE[0]), np.log(REFERENCE_SCALE[1]))))
    angle = np.deg2rad(rng.uniform(-REFERENCE_ROTATION, REFERENCE_ROTATION))
    shift_y, shift_x = rng.uniform(-REFERENCE_SHIFT, REFERENCE_SHIFT, 2) * size
    gain = float(np.exp(rng.uniform(np.log(REFERENCE_GAIN[0]), np.log(REFERENCE_GAIN[1]))))
    balance = rng.uniform(0.9, 1.1, pixels.shape[2]) if pixels.shape[2] == 3 else np.ones(1)
    a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    c0 = (size - 1) / 2
    src_centre = np.array([centre[1] + shift_x, centre[0] + shift_y])  # (x, y)
    matrix = np.concatenate([a, (src_centre - a @ np.array([c0, c0]))[:, None]], axis=1)
    view = cv2.warpAffine(
        np.ascontiguousarray(pixels), matrix.astype(np.float64), (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101,
    )
    view = view.reshape(size, size, pixels.shape[2])
    linear = np.clip(view, 0.0, 1.0) ** 2.2 * gain * balance.astype(np.float32)
    from deblurcli.degrade import quantize8

    return quantize8(np.clip(linear, 0.0, 1.0) ** (1 / 2.2))


def synthetic_triplet(
    pixels: np.ndarray, rng: np.random.Generator, cfg: DataConfig, recipe: Recipe
) -> Sample:
    """A (blurry, sharp, reference) sample from one sharp photo.

    A random window of ``crop`` plus the blur margin is degraded by the project's pipeline
    (:func:`deblurcli.degrade.synthesize` with ``recipe``); the reference is
    :func:`reference_view` of the same photo around the same place. Flips and 90° rotations
    (``cfg.flips``) apply to all three alike.

    Returns:
        ``blurry``, ``sharp`` and ``reference``, each ``C × crop × crop`` float32 in [0, 1].
    """
    size = synthetic_region_size(cfg)
    h, w = pixels.shape[:2]
    if h < size or w < size:
        pixels = np.pad(pixels, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)),
                        mode="reflect" if min(h, w) > 1 else "edge")
        h, w = pixels.shape[:2]
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    region = pixels[top : top + size, left : left + size]
    reference = reference_view(pixels, (top + (size - 1) / 2, left + (size - 1) / 2), cfg.crop,
                               rng)
    if cfg.flips:
        region, reference = _augment([region, reference], rng)
    pair = synthesize(region, rng, recipe)
    return {"blurry": _tensor(pair.blurry), "sharp": _tensor(pair.sharp),
            "reference": _tensor(reference)}


class PairedImages(_IndexedDataset):
    """Aligned random crops of (blurred, sharp) file pairs."""

    def __init__(
        self, pairs: list[tuple[Path, Path]], cfg: DataConfig, seed: int, channels: int = 3
    ) -> None:
        self.pairs = pairs
        super().__init__(len(pairs), cfg, seed, channels)

    def __getitem__(self, index: int) -> Sample:
        rng = sample_rng(self.seed, 1, index)
        blur_path, sharp_path = self.pairs[self._item(index)]
        both = np.concatenate(
            [read_rgb(blur_path, self.channels), read_rgb(sharp_path, self.channels)], axis=2
        )
        region = _random_region(both, self.cfg.crop, rng)
        if self.cfg.flips:
            (region,) = _augment([region], rng)
        c = self.channels
        return {"blurry": _tensor(region[..., :c]), "sharp": _tensor(region[..., c:])}


class FrameAverages(_IndexedDataset):
    """GoPro-style pairs: the mean of N consecutive frames, the centre frame as the sharp target.

    With ``cfg.reference`` a third frame of the same sequence, ``reference_distance`` frames from
    the centre (either side), is returned as ``reference`` (same crop window).
    """

    def __init__(self, cfg: DataConfig, seed: int, channels: int = 3) -> None:
        from deblurcli.degrade import read_frame_sequence

        root = Path(cfg.root)
        subdirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        folders = [
            d for d in subdirs if any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir())
        ]
        self.sequences = [read_frame_sequence(d) for d in folders] or [read_frame_sequence(root)]
        if cfg.frames_held_back > 0:  # the last frames stay unseen, for evaluation
            self.sequences = [s[: max(0, len(s) - cfg.frames_held_back)] for s in self.sequences]
        self.sequences = [s for s in self.sequences if len(s) >= cfg.frames[1]]
        if not self.sequences:
            raise UsageError(f"{root}: no frame sequence with at least {cfg.frames[1]} frames")
        super().__init__(len(self.sequences), cfg, seed, channels)

    def __getitem__(self, index: int) -> Sample:
        from deblurcli.degrade import average_frames

        cfg, rng = self.cfg, sample_rng(self.seed, 1, index)
        frames = self.sequences[self._item(index)]
        counts = [n for n in range(cfg.frames[0], cfg.frames[1] + 1) if n % 2] or [cfg.frames[0]]
        n = counts[int(rng.integers(len(counts)))]
        start = int(rng.integers(0, len(frames) - n + 1))
        centre = start + n // 2
        picked = list(range(start, start + n))
        if cfg.reference:
            distance = int(rng.integers(cfg.reference_distance[0], cfg.reference_distance[1] + 1))
            ref = centre + distance * (1 if rng.random() < 0.5 else -1)
            ref = ref if 0 <= ref < len(frames) else centre - (ref - centre)
            picked.append(min(max(ref, 0), len(frames) - 1))
        # whole frames are decoded once per process and kept as uint8 (_decoded_u8's cache):
        # a triplet reads 8-14 frames, so decoding each time cost seconds per batch
        stack = [_decoded_u8(str(frames[i]), self.channels) for i in picked]
        h, w = stack[0].shape[:2]
        size = min(cfg.crop, h, w)
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crops = [f[top : top + size, left : left + size] / np.float32(255) for f in stack]
        if cfg.flips:
            crops = _augment(crops, rng)
        sample = {"blurry": _tensor(average_frames(crops[:n])), "sharp": _tensor(crops[n // 2])}
        if cfg.reference:
            sample["reference"] = _tensor(crops[n])
        return sample


def pack_recipe_mismatch(meta: dict[str, str], cfg: DataConfig) -> str:
    """What differs between a pack's stored recipe and the one ``cfg`` describes ("" if none).

    Keys an older pack does not store count as their defaults; ``frames_prob`` is compared too.
    """
    import json

    from deblurcli.degrade import Recipe

    stored = {**dataclasses_asdict(Recipe()), **json.loads(meta.get("recipe", "{}")),
              "frames_prob": float(meta.get("frames_prob", 0.0))}
    wanted = {**dataclasses_asdict(recipe_of(cfg)), "frames_prob": float(cfg.frames_prob)}
    return ", ".join(f"{k}: pack {stored.get(k)!r}, config {v!r}"
                     for k, v in wanted.items() if stored.get(k) != v)


class PackedPairs(_IndexedDataset):
    """Pairs read from a pair pack: a random ``crop``² window of a stored pair, flipped/rotated."""

    def __init__(self, cfg: DataConfig, seed: int, channels: int = 3) -> None:
        from safetensors import safe_open

        path = Path(cfg.pack)
        if not path.is_file():
            raise UsageError(f"{path}: pack file not found (build it with `deblurcli train pack`)")
        with safe_open(str(path), framework="np") as handle:
            meta = handle.metadata() or {}
            if meta.get("deblurcli.pack") != PAIR_PACK_FORMAT:
                raise UsageError(f"{path}: not a pair pack of format {PAIR_PACK_FORMAT}")
            self.blurry, self.sharp = handle.get_tensor("blurry"), handle.get_tensor("sharp")
            stored = set(handle.keys())  # safe_open handles have no `in`
            self.guide = handle.get_tensor("guide") if "guide" in stored else None
        if self.blurry.shape[-1] != channels:
            raise UsageError(
                f"{path}: pack has {self.blurry.shape[-1]} channels, the model {channels}"
            )
        if self.blurry.shape[1] < cfg.crop:
            raise UsageError(
                f"{path}: pairs are {self.blurry.shape[1]} px, data.crop is {cfg.crop}"
            )
        stale = pack_recipe_mismatch(meta, cfg)
        if stale:
            raise UsageError(
                f"{path}: pack was built with another degradation recipe ({stale}); rebuild it "
                "with `deblurcli train pack CONFIG` or point data.pack at a new file"
            )
        if cfg.deconvolve_guide and self.guide is None:
            raise UsageError(f"{path}: pack holds no guides (data.deconvolve_guide); rebuild it "
                             "with `deblurcli train pack CONFIG`")
        self.meta = meta
        super().__init__(len(self.blurry), cfg, seed, channels)

    def __getitem__(self, index: int) -> Sample:
        rng = sample_rng(self.seed, 1, index)
        j = self._item(index)
        stored = [self.blurry[j], self.sharp[j]]
        if self.cfg.deconvolve_guide:
            stored.append(self.guide[j])
        both = np.concatenate(stored, axis=2)
        region = _random_region(both, self.cfg.crop, rng).astype(np.float32) / np.float32(255)
        if self.cfg.flips:
            (region,) = _augment([region], rng)
        c = self.channels
        sample = {"blurry": _tensor(region[..., :c]), "sharp": _tensor(region[..., c : 2 * c])}
        if self.cfg.deconvolve_guide:
            sample["guide"] = _tensor(region[..., 2 * c :])
        return sample


def make_dataset(cfg: DataConfig, seed: int, channels: int = 3) -> _IndexedDataset:
    """The training dataset ``cfg`` describes (files are listed now, read lazily)."""
    if cfg.kind == "synthetic":
        return SyntheticPairs(cfg, seed, channels)
    if cfg.kind == "pack":
        return PackedPairs(cfg, seed, channels)
    if cfg.kind == "paired":
        if not cfg.blurred:
            raise UsageError("data.kind = 'paired' needs data.blurred and data.sharp folders")
        return PairedImages(find_pairs(cfg.blurred, cfg.sharp), cfg, seed, channels)
    if cfg.kind == "gopro":
        return PairedImages(gopro_pairs(cfg.root), cfg, seed, channels)
    return FrameAverages(cfg, seed, channels)


class StepSampler(Sampler[list[int]]):
    """Batches of sample indices for steps ``start .. stop - 1`` of one process."""

    def __init__(
        self, start: int, stop: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> None:
        self.start, self.stop, self.batch = start, stop, batch_size
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            first = (step * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))


WORKER_CONTEXT = "spawn"
"""Start method of loader and pack workers (fork deadlocks after OpenCV's pool has run)."""


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def make_loader(
    dataset: Dataset[Sample],
    cfg: DataConfig,
    *,
    start_step: int,
    stop_step: int,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader[Sample]:
    """A loader yielding the batches of steps ``start_step .. stop_step - 1``, in order."""
    sampler = StepSampler(start_step, stop_step, cfg.batch_size, rank, world)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.workers,
        worker_init_fn=_worker_init if cfg.workers else None,
        pin_memory=pin_memory,
        prefetch_factor=4 if cfg.workers else None,
        # spawned, not forked: a child forked after OpenCV's thread pool ran in the parent
        # deadlocks in its first cv2 call (seen as loader workers idle at 0 % CPU forever)
        multiprocessing_context=WORKER_CONTEXT if cfg.workers else None,
        persistent_workers=False,
    )


# --------------------------------------------------------------------------- validation


@dataclass
class ValSet:
    """A fixed validation set: stacked ``N × C × H × W`` tensors and the files they came from."""

    blurry: torch.Tensor
    sharp: torch.Tensor
    names: list[str]
    reference: torch.Tensor | None = None
    """Synthetic reference views (:func:`reference_view`) for reference-based models."""
    guide: torch.Tensor | None = None
    """Restoration guides (:func:`deblurcli.degrade.restoration_guide`) for guided models."""


def _centre(pixels: np.ndarray, size: int) -> np.ndarray | None:
    h, w = pixels.shape[:2]
    if h < size or w < size:
        return None
    top, left = (h - size) // 2, (w - size) // 2
    return pixels[top : top + size, left : left + size]


VAL_KINDS = ("motion", "gaussian", "defocus")
VAL_NOISE_MAX = 0.01


def build_val_set(cfg: ValConfig, channels: int = 3, *, reference: bool = False,
                  guide: bool = False) -> ValSet | None:
    """The validation set ``cfg`` describes; the same tensors on every call and every run.

    Synthetic: the first ``count`` images (sorted paths) at least ``crop + kernel_size`` on a side,
    centre-cropped and blurred with image ``j``'s generator ``sample_rng(seed, j)`` (a random
    motion/Gaussian/defocus kernel and noise of sigma ``U(0, 0.01)``). With ``reference`` each
    synthetic item also gets a :func:`reference_view` of its photo around the crop (drawn after
    the degradation, so the blurry/sharp tensors are the same as without it). With ``guide``
    (and ``cfg.deconvolve``) each item also gets its restoration guide.
    """
    if cfg.kind == "none":
        return None
    blurry, sharp, names = [], [], []
    references: list[np.ndarray] = []
    guides: list[np.ndarray] = []
    if guide and not (cfg.kind == "synthetic" and cfg.deconvolve):
        raise UsageError("validation of a guided model needs val.kind = 'synthetic' with "
                         "val.deconvolve = true")
    if cfg.kind == "synthetic":
        margin = cfg.kernel_size // 2
        for path in list_images(cfg.sharp):
            photo = read_rgb(path, channels)
            region = _centre(photo, cfg.crop + 2 * margin)
            if region is None:
                continue
            rng = sample_rng(cfg.seed, len(names))
            recipe = Recipe(
                kinds=VAL_KINDS,
                size_range=(5, cfg.kernel_size),
                linear_light=False,
                noise_range=(0.0, VAL_NOISE_MAX),
                deconvolve_prob=1.0 if cfg.deconvolve else 0.0,
                deconvolve_guide=guide,
            )
            pair = synthesize(region, rng, recipe, margin=margin)
            if pair.guide is not None:
                guides.append(pair.guide)
            if reference:
                centre = ((photo.shape[0] - 1) / 2, (photo.shape[1] - 1) / 2)
                references.append(reference_view(photo, centre, cfg.crop, rng))
            blurry.append(pair.blurry), sharp.append(pair.sharp), names.append(str(path))
            if len(names) == cfg.count:
                break
    else:
        for blur_path, sharp_path in find_pairs(cfg.blurred or cfg.sharp, cfg.sharp):
            b = _centre(read_rgb(blur_path, channels), cfg.crop)
            s = _centre(read_rgb(sharp_path, channels), cfg.crop)
            if b is None or s is None:
                continue
            blurry.append(b), sharp.append(s), names.append(str(blur_path))
            if len(names) == cfg.count:
                break
    if not names:
        raise UsageError(f"validation: no image in {cfg.sharp} is at least {cfg.crop} px")
    return ValSet(
        torch.stack([_tensor(b) for b in blurry]), torch.stack([_tensor(s) for s in sharp]), names,
        torch.stack([_tensor(r) for r in references]) if references else None,
        torch.stack([_tensor(g) for g in guides]) if guides else None,
    )
