"""One kernel orientation convention across blur, deconvolve, deconvolve-blind and bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deblurcli.cli.app import main


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    capsys.readouterr()
    return int(exit_info.value.code or 0)


def _psnr(a: Path, b: Path) -> float:
    x = np.asarray(Image.open(a), np.float64) / 255
    y = np.asarray(Image.open(b), np.float64) / 255
    return float(-10 * np.log10(np.mean((x[8:-8, 8:-8] - y[8:-8, 8:-8]) ** 2)))


def test_blur_then_deconvolve_agree_on_the_orientation(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    sharp = tmp_path / "sharp.png"
    Image.fromarray((np.kron(rng.random((12, 12)), np.ones((6, 6))) * 255).astype(np.uint8)
                    ).save(sharp)
    kernel = np.zeros((9, 9))
    kernel[4, 4:9] = 1  # one-sided: the two orientations differ
    np.savetxt(tmp_path / "k.txt", kernel)
    blurred, saved = tmp_path / "blurred.png", tmp_path / "saved.txt"
    assert _run(["blur", str(sharp), "-o", str(blurred), "--kernel", str(tmp_path / "k.txt"),
                 "--kernel-convention", "correlate", "--save-kernel", str(saved)], capsys) == 0
    # the kernel is written back in the convention it was read in
    assert np.allclose(np.loadtxt(saved), kernel / kernel.sum())
    scores = {}
    for convention in ("correlate", "convolve"):
        out = tmp_path / f"{convention}.png"
        assert _run(["deconvolve", str(blurred), "-k", str(saved), "-o", str(out),
                     "--method", "wiener", "--kernel-convention", convention], capsys) == 0
        scores[convention] = _psnr(out, sharp)
    assert scores["correlate"] > scores["convolve"] + 3
    assert _run(["deconvolve", str(blurred), "-k", str(saved), "-o", str(tmp_path / "x.png"),
                 "--kernel-convention", "sideways"], capsys) == 2


def test_bench_kernel_folders_follow_the_convention(tmp_path: Path) -> None:
    from deblurcli import degrade
    from deblurcli.bench import datasets, methods, quality

    rng = np.random.default_rng(1)
    sharp = np.kron(rng.random((8, 8)), np.ones((6, 6)))[..., None].astype(np.float32)
    kernel = np.zeros((7, 7))
    kernel[3, 3:7] = 0.25
    for name in ("blurred", "sharp", "kernels"):
        (tmp_path / name).mkdir()
    blurred = degrade.convolve(sharp, kernel, boundary="reflect")
    for folder, pixels in (("blurred", blurred), ("sharp", sharp)):
        Image.fromarray((np.clip(pixels[..., 0], 0, 1) * 255).round().astype(np.uint8)).save(
            tmp_path / folder / "a.png")
    np.savetxt(tmp_path / "kernels" / "a.txt", kernel[::-1, ::-1])  # stored for correlation
    psnr = {}
    for convention in ("convolve", "correlate"):
        ds = datasets.open_dataset(preset=None, blurred=tmp_path / "blurred",
                                   sharp=tmp_path / "sharp", kernels=tmp_path / "kernels",
                                   kernel_convention=convention)
        (res,) = quality.run_quality(ds, ["wiener"], methods.MethodConfig(device="cpu"),
                                     kernel="ground-truth", error_ratio=False)
        psnr[convention] = res.items[0].psnr
    assert psnr["correlate"] > psnr["convolve"] + 3
