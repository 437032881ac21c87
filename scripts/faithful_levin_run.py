"""Faithful (``--preset paper``) blind deconvolution of one Levin09 image, scored as it runs.

The published run is 5,500 steps (500 pre-fit + 5,000) and takes hours on a CPU, so this script
logs every step (phase, loss, wall/CPU seconds, load average) to a JSON-lines file and, every
``--score-every`` steps, the shift-tolerant PSNR/SSIM of the current mean image against the
ground truth (:func:`deblurcli.metrics.compare_upto_shift`) and the aligned kernel error. The
current image and kernel are saved beside the log at those steps, so a run that is stopped early
still leaves its latest estimate. Example (one core, in the background)::

    OMP_NUM_THREADS=1 nohup python scripts/faithful_levin_run.py --image 1 --kernel 1 \
        --method vdip-sparse --out runs/faithful > runs/faithful.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from deblurcli.io import Image, read_image, write_image
from deblurcli.kernels import write_kernel
from deblurcli.metrics import compare_upto_shift, kernel_error
from deblurcli.optim import fit, paper_config
from deblurcli.optim.blind import LEVIN_SIZES
from deblurcli.optim.vdip import METHODS, StepInfo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/levin09"))
    parser.add_argument("--image", type=int, default=1, help="Levin image 1-4")
    parser.add_argument("--kernel", type=int, default=1, help="Levin kernel 1-8")
    parser.add_argument("--method", default="vdip-sparse", choices=METHODS)
    parser.add_argument("--score-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/faithful"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    name = f"{args.method}_im{args.image}_k{args.kernel}"
    args.out.mkdir(parents=True, exist_ok=True)
    blurry = read_image(args.data / "levin" / f"im{args.image}_kernel{args.kernel}_img.png")
    sharp = read_image(args.data / "levin" / "gt" / f"im{args.image}.png").pixels[..., 0]
    # The dataset's kernels are stored as in Levin's MATLAB files; flipping gives the PSF that
    # the bench's levin loader uses (true-convolution orientation), which is what fit returns.
    true_kernel = np.loadtxt(args.data / "kernels_double" / f"levin09_kernel{args.kernel}.txt")
    true_kernel = np.ascontiguousarray(true_kernel[::-1, ::-1])
    size = LEVIN_SIZES[args.kernel - 1]
    cfg = paper_config(args.method, (size, size))
    y = torch.from_numpy(np.ascontiguousarray(blurry.pixels.transpose(2, 0, 1)))[None]
    if cfg.color == "rgb":
        y = y.expand(1, 3, -1, -1).contiguous()

    log = (args.out / f"{name}.jsonl").open("w")
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    last = [start_wall, start_cpu]

    def on_step(info: StepInfo) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        record = {"step": info.step, "phase": info.phase, "loss": info.loss,
                  "skipped": info.skipped, "wall_s": now - last[0], "cpu_s": cpu - last[1],
                  "load": os.getloadavg()[0]}
        last[0], last[1] = now, cpu
        if info.step % args.score_every == 0 or info.step in (cfg.prefit - 1, info.total - 1):
            estimate = info.estimate()[0].mean(0).numpy()
            kernel = info.kernel().double().numpy()
            score = compare_upto_shift(estimate, sharp, max_shift=5)
            record.update(psnr=score.psnr, ssim=score.ssim,
                          kernel_error=kernel_error(kernel, true_kernel),
                          elapsed_s=now - start_wall)
            write_image(args.out / f"{name}_latest.png",
                        Image(pixels=estimate[..., None].astype(np.float32), dtype=np.uint8))
            write_kernel(args.out / f"{name}_latest_kernel.txt", kernel)
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()

    result = fit(y, cfg, on_step=on_step, seed=args.seed)
    print(json.dumps({"done": True, "seconds": result.seconds, "warnings": result.warnings}))


if __name__ == "__main__":
    main()
