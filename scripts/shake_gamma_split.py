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

from deblurcli.bench.datasets import data_dir
from deblurcli.degrade import SHAKE_BENCH_RECIPE, synthesize
from deblurcli.engine import load_model
from deblurcli.io import read_image
from deblurcli.metrics import psnr
from deblurcli.train.data import list_images

BORDER = 16
"""Pixels left out of scoring on each side, as the preset."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="NAME@TAG or a .safetensors file")
    parser.add_argument("--limit", type=int, default=24, help="first N photos of sharp_val")
    parser.add_argument("--data", default=None, help="data folder (default: $DEBLURCLI_DATA)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model, device="cpu")
    root = data_dir() if args.data is None else args.data
    files = list_images(f"{root}/sharp_val")[: args.limit]
    recipes = {"sRGB (the preset)": SHAKE_BENCH_RECIPE,
               "linear light": replace(SHAKE_BENCH_RECIPE, linear_light=True)}
    for label, recipe in recipes.items():
        scores = []
        for n, path in enumerate(files):
            sharp = np.asarray(read_image(path).pixels, dtype=np.float32)
            sharp = np.repeat(sharp, 3, 2) if sharp.shape[2] == 1 else sharp[..., :3]
            rng = np.random.default_rng(np.random.SeedSequence([0, n]))
            pair = synthesize(sharp, rng, recipe, margin=0)
            blurry = torch.from_numpy(pair.blurry).permute(2, 0, 1)[None]
            target = torch.from_numpy(np.ascontiguousarray(sharp)).permute(2, 0, 1)[None]
            scores.append([float(psnr(x, target, crop_border=BORDER))
                           for x in (blurry, model(blurry))])
        mean = np.mean(scores, axis=0)
        print(f"{label}: input {mean[0]:.2f} dB, output {mean[1]:.2f} dB "
              f"({mean[1] - mean[0]:+.2f}) over {len(scores)} photos")


if __name__ == "__main__":
    main()
