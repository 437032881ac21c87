"""Make a 12-megapixel (4000×3000) sharp colour test photo from smaller ones.

The shared data has no native 12 MP photo. With one source, a 2K DIV2K image is centre-cropped
to 4:3 and upsampled (bicubic, ×1.96: soft at the pixel level). With four sources, their
centre crops form a 2×2 mosaic that is upsampled only by about 1.1 (crisp at the pixel
level). Blur it with ``deblurcli blur`` and restore it with ``deblurcli deconvolve-blind``;
``docs/blind.md`` lists the exact commands and results::

    D=../shared/data/sharp_train/div2k_subset
    python scripts/make_12mp_photo.py $D/0803.png runs/photo12mp/sharp/photo.png
    python scripts/make_12mp_photo.py $D/0803.png $D/0853.png $D/0886.png $D/0898.png \
        runs/mosaic12mp/sharp/photo.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from deblurcli.io import Image, read_image, write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", type=Path, nargs="+", help="one photo, or four for a mosaic")
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the result")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    if len(args.sources) == 4:
        tiles = [read_image(p).pixels for p in args.sources]
        th = min(t.shape[0] for t in tiles)
        tw = min(t.shape[1] for t in tiles)
        tiles = [_centre(t, th, tw) for t in tiles]
        pixels = np.concatenate([np.concatenate(tiles[:2], axis=1),
                                 np.concatenate(tiles[2:], axis=1)], axis=0)
    elif len(args.sources) == 1:
        pixels = read_image(args.sources[0]).pixels
    else:
        parser.error("give one source photo or four")
    h, w = pixels.shape[:2]
    crop_w = min(w, h * width // height)
    crop_h = crop_w * height // width
    crop = _centre(pixels, crop_h, crop_w)
    big = cv2.resize(crop, (width, height), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big.reshape(height, width, -1), 0, 1).astype(np.float32)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.output, Image(pixels=big, dtype=np.uint8))


def _centre(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (pixels.shape[0] - height) // 2, (pixels.shape[1] - width) // 2
    return pixels[top : top + height, left : left + width]


if __name__ == "__main__":
    main()
