"""Evaluate a reference-based checkpoint the way issue 16 asks (docs/deblur_ref.md).

Held-back triplets of two kinds, each scored as PSNR/SSIM of the blurry input and of the model's
output with (a) the right reference, (b) an unrelated reference (another scene), and (c) an
optional one-input ablation checkpoint (``model.config.reference = false``, same budget):

- **frames**: GoPro-style triplets from the frames at index ``--held-back-from`` and later of a
  240 fps sequence (``data.frames_held_back`` keeps them out of training): the linear-light
  average of 9 frames is the blurry image, its centre frame the target, a sharp frame 12 frames
  away the reference (never the target). Crops: ``--crop`` for the photo, ``--crop + 128``
  for the reference around it.
- **shake**: sharp photos of ``--sharp`` (default ``sharp_val``, not trained on) blurred with the
  fixed ``bench --preset shake`` recipe (camera shake of 15–51 px, σ = 0.01 noise); the
  reference is :func:`deblurcli.train.data.reference_view` of the same photo (shifted, zoomed,
  rotated, re-exposed), the unrelated one a view of the next photo.

``--kernel`` adds ``ref-kernel`` (the kernel measured against the reference, the network where
it does not fit) with either reference, and how often its kernel fitted.

Example::

    python scripts/eval_ref.py --model weights/ref-cpu-v1.safetensors \\
        --ablation runs/ref-noref-export.safetensors --count 16 --json eval_ref.json
    python scripts/eval_ref.py --model ref@cpu-v1 --kernel --count 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from deblurcli.degrade import SHAKE_BENCH_RECIPE, average_frames, quantize8, read_frame_sequence
from deblurcli.engine import load_model
from deblurcli.metrics import psnr, ssim
from deblurcli.train.data import list_images, read_rgb, reference_view, sample_rng

Triplet = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""blurry, sharp, right reference, unrelated reference (``H × W × 3`` float32)."""


def frame_triplets(folder: Path, start: int, count: int, crop: int, seed: int) -> list[Triplet]:
    """Triplets from frames ``start`` and later of one sequence (see the module docstring)."""
    frames = read_frame_sequence(folder)[start:]
    unrelated = list_images(Path(__file__).resolve().parents[2] / "shared/data/sharp_val")
    out: list[Triplet] = []
    for j in range(count):
        rng = sample_rng(seed, 7, j)
        centre = int(rng.integers(4, len(frames) - 4))
        ref_index = centre + 12 if centre + 12 < len(frames) else centre - 12
        stack = [read_rgb(frames[i]) for i in range(centre - 4, centre + 5)]
        h, w = stack[0].shape[:2]
        top = int(rng.integers(64, h - crop - 64 + 1))
        left = int(rng.integers(64, w - crop - 64 + 1))
        win = (slice(top, top + crop), slice(left, left + crop))
        big = (slice(top - 64, top + crop + 64), slice(left - 64, left + crop + 64))
        blurry = quantize8(average_frames([f[win] for f in stack]))
        other = read_rgb(unrelated[j % len(unrelated)])
        out.append((blurry, stack[4][win], read_rgb(frames[ref_index])[big],
                    reference_view(other, (other.shape[0] / 2, other.shape[1] / 2), crop, rng)))
    return out


def shake_triplets(folder: Path, count: int, crop: int, seed: int) -> list[Triplet]:
    """Synthetic triplets of the ``shake`` recipe (see the module docstring)."""
    from deblurcli.degrade import synthesize

    margin = SHAKE_BENCH_RECIPE.margin
    photos = [p for p in (read_rgb(f) for f in list_images(folder))
              if min(p.shape[:2]) >= crop + 2 * margin][: count + 1]
    out: list[Triplet] = []
    for j, photo in enumerate(photos[:count]):
        rng = sample_rng(seed, 8, j)
        h, w = photo.shape[:2]
        top, left = (h - crop) // 2 - margin, (w - crop) // 2 - margin
        region = photo[top : top + crop + 2 * margin, left : left + crop + 2 * margin]
        pair = synthesize(region, rng, SHAKE_BENCH_RECIPE)
        centre = ((h - 1) / 2, (w - 1) / 2)
        other = photos[(j + 1) % len(photos)]
        out.append((pair.blurry, pair.sharp, reference_view(photo, centre, crop, rng),
                    reference_view(other, (other.shape[0] / 2, other.shape[1] / 2), crop, rng)))
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()


def _kernel_or(network_output: torch.Tensor, blurry: np.ndarray, reference: np.ndarray,
               fits: list[float]) -> torch.Tensor:
    """``ref-kernel`` with its default fallback: the kernel's restoration where it fits, else
    the network's output (already computed)."""
    from deblurcli.optim.reference import deblur_with_reference

    result = deblur_with_reference(blurry, reference)
    fits.append(float(result.estimate.fits))
    return network_output if result.image is None else _t(result.image)


def score(triplets: list[Triplet], model: str, ablation: str | None,
          kernel: bool = False) -> dict[str, float]:
    """Mean PSNR/SSIM: input, (a) right reference, (b) unrelated reference, (c) ablation; with
    ``kernel`` also ``ref-kernel`` (falling back to ``model``) with either reference, and the
    share of photos where its kernel fitted."""
    restorer = load_model(model, device="cpu", precision="fp32")
    plain = load_model(ablation, device="cpu", precision="fp32") if ablation else None
    rows: dict[str, list[float]] = {}
    fits: dict[str, list[float]] = {"right": [], "unrelated": []}
    for blurry, sharp, right, wrong in triplets:
        b, s = _t(blurry), _t(sharp)
        outputs = {"input": b, "a_right_ref": restorer(b, _t(right)),
                   "b_unrelated_ref": restorer(b, _t(wrong))}
        if kernel:
            outputs["kernel_a_right_ref"] = _kernel_or(outputs["a_right_ref"], blurry, right,
                                                       fits["right"])
            outputs["kernel_b_unrelated_ref"] = _kernel_or(outputs["b_unrelated_ref"], blurry,
                                                           wrong, fits["unrelated"])
        if plain is not None:
            outputs["c_no_ref_modules"] = plain(b)
        for key, out in outputs.items():
            rows.setdefault(f"psnr_{key}", []).append(float(psnr(out, s)[0]))
            rows.setdefault(f"ssim_{key}", []).append(float(ssim(out, s)[0]))
    if kernel:
        rows |= {f"kernel_fits_{key}": value for key, value in fits.items()}
    return {k: round(float(np.mean(v)), 4) for k, v in rows.items()} | {"images": len(triplets)}


def main() -> None:
    data = Path(__file__).resolve().parents[2] / "shared/data"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="reference-based checkpoint (or name@tag)")
    parser.add_argument("--ablation", help="checkpoint of the same network without reference")
    parser.add_argument("--frames", type=Path, default=data / "gopro_frames/GOPR0477_11_00")
    parser.add_argument("--held-back-from", type=int, default=249,
                        help="first 0-based frame index training did not see "
                        "(configs/ref_cpu.toml: data.frames_held_back = 50 of 299 frames)")
    parser.add_argument("--sharp", type=Path, default=data / "sharp_val")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kernel", action="store_true",
                        help="also score ref-kernel (deblurcli.optim.reference), falling back to "
                        "--model where its kernel does not fit")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {
        "frames": score(frame_triplets(args.frames, args.held_back_from, args.count, args.crop,
                                       args.seed), args.model, args.ablation, args.kernel),
        "shake": score(shake_triplets(args.sharp, args.count, args.crop, args.seed),
                       args.model, args.ablation, args.kernel),
    }
    text = json.dumps(results, indent=2)
    print(text)  # noqa: T201
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
