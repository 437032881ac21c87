"""`deblurcli blur` end to end on tiny PNGs: determinism, kernel files, overwrite rule, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deblurcli.cli.app import main


def _run(*args: object) -> int:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return int(info.value.code or 0)


@pytest.fixture
def sharp(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    pixels = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    path = tmp_path / "sharp.png"
    Image.fromarray(pixels).save(path)
    return path


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).astype(np.int32)


def test_blur_deterministic_and_saves_kernel(sharp: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    common = ["--kernel-size", 9, "--noise", 0.01, "--jpeg", 90]
    kfile = tmp_path / "k.txt"
    assert _run("blur", sharp, "-o", a, "--seed", 3, "--save-kernel", kfile, *common) == 0
    assert _run("blur", sharp, "-o", b, "--seed", 3, *common) == 0
    assert _run("blur", sharp, "-o", c, "--seed", 4, *common) == 0
    np.testing.assert_array_equal(_pixels(a), _pixels(b))
    assert _pixels(a).shape == (20, 24, 3)
    assert not np.array_equal(_pixels(a), _pixels(c))
    assert not np.array_equal(_pixels(a), _pixels(sharp))
    kernel = np.loadtxt(kfile)
    assert kernel.shape == (9, 9) and kernel.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["gaussian", "defocus"])
def test_blur_other_kinds(sharp: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / f"{kind}.png"
    assert _run("blur", sharp, "-o", out, "--kernel", kind, "--kernel-size", 7) == 0
    assert _pixels(out).std() < _pixels(sharp).std()


def test_kernel_file_and_wrap_boundary(sharp: Path, tmp_path: Path) -> None:
    kfile = tmp_path / "shift.txt"
    kfile.write_text("0 0 0\n0 0 2\n0 0 0\n")  # one right of centre, normalised on read
    out = tmp_path / "shifted.png"
    assert _run("blur", sharp, "-o", out, "--kernel", kfile, "--boundary", "wrap") == 0
    np.testing.assert_array_equal(_pixels(out), np.roll(_pixels(sharp), 1, axis=1))


def test_refuses_overwrite(sharp: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    assert _run("blur", sharp, "-o", out, "--kernel-size", 7) == 2
    assert out.read_bytes() == b"keep me"
    assert _run("blur", sharp, "-o", out, "--kernel-size", 7, "--overwrite") == 0
    assert _pixels(out).shape == (20, 24, 3)


@pytest.mark.parametrize(
    "extra",
    [
        ["--kernel", "boxcar"],
        ["--kernel-size", 8],
        ["--boundary", "mirror"],
        ["--noise", -1],
    ],
)
def test_usage_errors(sharp: Path, tmp_path: Path, extra: list[object]) -> None:
    assert _run("blur", sharp, "-o", tmp_path / "o.png", *extra) == 2
    assert not (tmp_path / "o.png").exists()


def test_bad_kernel_file(sharp: Path, tmp_path: Path) -> None:
    bad = tmp_path / "neg.csv"
    bad.write_text("1, -1\n1, 1\n")
    assert _run("blur", sharp, "-o", tmp_path / "o.png", "--kernel", bad) == 2


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("blur", "--help") == 0
    text = capsys.readouterr().out
    assert "Examples" in text and "--save-kernel" in text
