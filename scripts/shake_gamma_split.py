"""Score a model on the ``shake`` photos blurred in sRGB values (the preset) and in linear light.

The same photos, kernels and noise draws (``SeedSequence([0, n])`` of photo ``n``, as the
preset), once with :data:`deblurcli.degrade.SHAKE_BENCH_RECIPE` and once with the blur applied
in linear light. A model trained only on linear-light blur gains much less on the preset
(docs/training.md, stage 3):

    python scripts/shake_gamma_split.py resunet@shake-v1 --limit 24
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from deblurcli.bench.datasets import SHAKE_SEED, shake
from deblurcli.degrade import SHAKE_BENCH_RECIPE, synthesize
from deblurcli.engine import load_model
from deblurcli.metrics import psnr

BORDER = 16
"""Pixels left out of scoring on each side, as the preset."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="NAME@TAG or a .safetensors file")
    parser.add_argument("--limit", type=int, default=24, help="first N photos of sharp_val")
    parser.add_argument("--data", default=None, help="data folder holding sharp_val/ "
                        "(default: $DEBLURCLI_DATA, else ../shared/data)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model, device="cpu")
    samples = shake(None if args.data is None else f"{args.data}/sharp_val").samples
    linear = replace(SHAKE_BENCH_RECIPE, linear_light=True)
    scores: dict[str, list[list[float]]] = {"sRGB (the preset)": [], "linear light": []}
    for n, sample in enumerate(samples[: args.limit]):
        pair = sample.load()  # the preset's own pair: blurred in sRGB values
        rng = np.random.default_rng(np.random.SeedSequence([SHAKE_SEED, n]))  # same draws
        relinear = synthesize(pair.sharp, rng, linear, margin=0).blurry
        target = torch.from_numpy(np.ascontiguousarray(pair.sharp)).permute(2, 0, 1)[None]
        for label, blurred in zip(scores, (pair.blurred, relinear), strict=True):
            blurry = torch.from_numpy(np.ascontiguousarray(blurred)).permute(2, 0, 1)[None]
            scores[label].append([float(psnr(x, target, crop_border=BORDER))
                                  for x in (blurry, model(blurry))])
    for label, rows in scores.items():
        mean = np.mean(rows, axis=0)
        print(f"{label}: input {mean[0]:.2f} dB, output {mean[1]:.2f} dB "
              f"({mean[1] - mean[0]:+.2f}) over {len(rows)} photos")


if __name__ == "__main__":
    main()
