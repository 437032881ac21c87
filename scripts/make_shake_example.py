"""Write one image of the ``bench quality --preset shake`` set as a README example pair.

The blurred image is exactly the preset's (seeded camera shake plus noise σ = 0.01), cropped to a
window so that the example stays small:

    python scripts/make_shake_example.py monarch --box 144 96 480 320 -o examples/shake_monarch
    # -> examples/shake_monarch_blurry.png and examples/shake_monarch_sharp.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deblurcli.bench import datasets
from deblurcli.io import Image, write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="sample name in the shake preset (file stem), e.g. monarch")
    parser.add_argument("--box", nargs=4, type=int, metavar=("LEFT", "TOP", "WIDTH", "HEIGHT"))
    parser.add_argument("-o", "--output", required=True, help="prefix of the two PNG files")
    parser.add_argument("--data", default=None, help="data folder (default: ../shared/data)")
    args = parser.parse_args()
    dataset = datasets.open_dataset(preset="shake", data=args.data)
    [sample] = [s for s in dataset.samples if s.name == args.name]
    pair = sample.load()
    left, top, width, height = args.box or (0, 0, pair.sharp.shape[1], pair.sharp.shape[0])
    window = (slice(top, top + height), slice(left, left + width))
    for role, pixels in (("blurry", pair.blurred), ("sharp", pair.sharp)):
        out = Path(f"{args.output}_{role}.png")
        write_image(out, Image(np.ascontiguousarray(pixels[window]), dtype=np.dtype(np.uint8)))
        print(out)
    kernel = pair.kernel
    print(f"kernel {kernel.shape[0]}×{kernel.shape[1]}" if kernel is not None else "")


if __name__ == "__main__":
    main()
