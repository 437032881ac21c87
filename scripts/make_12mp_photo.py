"""Make a 12-megapixel (4000×3000) sharp colour test photo from a smaller one.

The shared data has no native 12 MP photo, so a 2K DIV2K image is centre-cropped to 4:3 and
upsampled (bicubic) to 4000×3000. Blur it with ``deblurcli blur`` and restore it with
``deblurcli deconvolve-blind``; ``docs/blind.md`` lists the exact commands and results::

    python scripts/make_12mp_photo.py ../shared/data/sharp_train/div2k_subset/0803.png \
        runs/photo12mp/sharp/photo.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from deblurcli.io import Image, read_image, write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the result")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    pixels = read_image(args.source).pixels
    h, w = pixels.shape[:2]
    crop_w = min(w, h * width // height)
    crop_h = crop_w * height // width
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    crop = pixels[top : top + crop_h, left : left + crop_w]
    big = cv2.resize(crop, (width, height), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big.reshape(height, width, -1), 0, 1).astype(np.float32)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.output, Image(pixels=big, dtype=np.uint8))


if __name__ == "__main__":
    main()
