"""`deblurcli deconvolve` end to end on a tiny PNG: output, overwrite rule, option checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deblurcli.cli.app import main


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return int(info.value.code or 0), capsys.readouterr().out


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((24, 28, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    kernel = tmp_path / "k.txt"
    kernel.write_text("0 0.2 0\n0.2 0.2 0.2\n0 0.2 0\n")
    return tmp_path / "in.png", kernel


@pytest.mark.parametrize("method", ["wiener", "rl", "hyperlaplacian"])
def test_writes_output(inputs: tuple[Path, Path], tmp_path: Path, method: str,
                       capsys: pytest.CaptureFixture[str]) -> None:
    image, kernel = inputs
    out = tmp_path / f"{method}.png"
    extra = ["--iterations", 5] if method == "rl" else []
    code, stdout = _run(capsys, "deconvolve", image, "--kernel", kernel, "-o", out,
                        "--method", method, "--json", *extra)
    assert code == 0 and json.loads(stdout)["method"] == method
    with Image.open(out) as img:
        assert img.size == (28, 24) and img.mode == "RGB"


def test_refuses_to_overwrite(inputs: tuple[Path, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    image, kernel = inputs
    out = tmp_path / "out.png"
    out.write_bytes(b"keep")
    code, _ = _run(capsys, "deconvolve", image, "-k", kernel, "-o", out, "--method", "wiener")
    assert code == 2 and out.read_bytes() == b"keep"
    code, _ = _run(capsys, "deconvolve", image, "-k", kernel, "-o", out, "--method", "wiener",
                   "--overwrite")
    assert code == 0 and out.read_bytes() != b"keep"


def test_option_checks(inputs: tuple[Path, Path], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    image, kernel = inputs
    out = tmp_path / "o.png"
    assert _run(capsys, "deconvolve", image, "-k", kernel, "-o", out, "--method", "wiener",
                "--iterations", 3)[0] == 2
    assert _run(capsys, "deconvolve", image, "-k", kernel, "-o", out, "--weight", 0)[0] == 2
    assert _run(capsys, "deconvolve", image, "-k", tmp_path / "missing.txt", "-o", out)[0] == 2
    assert not out.exists()
